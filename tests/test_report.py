import os
import shutil
import subprocess

import numpy as np
import pytest
from helpers import image_loaders, lightning_package, make_text_module_class, make_vision_module_class, text_loaders

from lightning_xai import ExplanationMonitor
from lightning_xai.cli import main
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import DeletionAUC
from lightning_xai.records import EpochReport
from lightning_xai.report import agreement_matrix, axis_range, build_report, spearman, tick_label
from lightning_xai.sinks import FilesSink

pl = lightning_package("lightning.pytorch")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _run(tmp_path, module, train, val, epochs=2):
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=[DeletionAUC(steps=3)], num_samples=6,
                                 num_heatmaps=2)
    trainer = pl.Trainer(max_epochs=epochs, logger=pl.loggers.CSVLogger(str(tmp_path), name="run", version=0),
                         callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(module, train, val)
    return tmp_path / "run" / "version_0", monitor


def test_report_cli_writes_a_self_contained_page(tmp_path, tokenizer, capsys):
    run_dir, monitor = _run(tmp_path, make_text_module_class(pl)(tokenizer), *text_loaders())
    out = tmp_path / "report.html"
    main(["report", str(run_dir), "-o", str(out)])
    assert "report written to" in capsys.readouterr().out
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<script" not in page
    # one chart per logged metric: deletion AUC, its gain over random, stability, agreement
    assert page.count('role="img"') == 4 and 'aria-label="deletion_auc"' in page
    assert "lower is better" in page and "higher is better" in page
    for epoch in monitor.history:
        assert f"epoch {epoch} —" in page
    assert "probe sample 0" in page and "probe sample 1" in page


def test_report_of_an_image_run_embeds_the_overlays(tmp_path):
    run_dir, _ = _run(tmp_path, make_vision_module_class(pl)("vit"), *image_loaders(), epochs=1)
    page = build_report(run_dir)
    assert page.count("data:image/png;base64,") == 4  # 2 samples x 2 methods, one epoch


def test_missing_run_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="write_files=True"):
        main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")])


def test_spearman_and_agreement():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 1, 2]), np.array([1.0, 1, 2])) == pytest.approx(1.0)
    record = {"samples": [{"maps": {"a": [1, 2, 3], "b": [3, 2, 1]}}, {"maps": {"a": [1, 2, 3], "b": [1, 2, 3]}}]}
    methods, matrix = agreement_matrix(record)
    assert methods == ["a", "b"] and matrix[0, 1] == pytest.approx(0.0) and matrix[0, 0] == pytest.approx(1.0)


def test_axis_keeps_a_small_change_small_on_nice_ticks():
    # a probability area moving 0.145 -> 0.147 is not stretched over the whole chart
    low, high, ticks = axis_range([0.145, 0.147], natural=(0.0, 1.0))
    assert high - low >= 0.05 and low >= 0.0 and (0.147 - 0.145) / (high - low) < 0.05
    step = ticks[1] - ticks[0]
    assert all(abs(t / step - round(t / step)) < 1e-9 for t in ticks)  # multiples of the step
    assert [tick_label(t, step) for t in ticks] == ["0.10", "0.12", "0.14", "0.16", "0.18"]
    # a metric without a known range: at least +-5 % of its magnitude
    low, high, _ = axis_range([1e-5, 1.02e-5])
    assert high - low >= 0.1e-5
    # a bounded metric near its bound stays inside its range
    low, high, _ = axis_range([0.99, 1.0], natural=(0.0, 1.0))
    assert high == 1.0 and low < 0.95
    # counts: whole numbers from zero
    assert axis_range([3.0], natural=(0.0, float("inf")), integer=True)[2] == [0.0, 1.0, 2.0, 3.0, 4.0]


def _records(tmp_path, methods, metric, epochs=3):
    """A synthetic run's record: ``metric`` of every method (``random`` too), its gains, agreement."""
    sink = FilesSink(tmp_path, run_id="synthetic")
    for epoch in range(epochs):
        scalars = {}
        for k, method in enumerate([*methods, "random"]):
            scalars[f"xai/{method}/{metric}"] = 0.145 + 0.001 * epoch + 0.01 * k
            if method != "random":
                scalars[f"xai/{method}/{metric}_gain_vs_random"] = 0.1 * k - 0.02 * epoch
                scalars[f"xai/agreement/{method}_vs_random"] = 0.05 * epoch
        higher = {key: key.endswith("_gain_vs_random") or "agreement" in key for key in scalars}
        sink.log_epoch(EpochReport(epoch=epoch, step=epoch, scalars=scalars, higher_is_better=higher, samples=[]))
    return tmp_path


def test_random_is_a_dashed_baseline_and_gains_have_a_zero_line(tmp_path):
    page = build_report(_records(tmp_path, ["grad_sam", "attn_lrp"], "deletion_auc"))
    charts = page.split('<figure class="chart">')[1:]
    scores = next(c for c in charts if 'aria-label="deletion_auc"' in c)
    gains = next(c for c in charts if 'aria-label="deletion_auc_gain_vs_random"' in c)
    assert "random (baseline)" in scores and scores.count('stroke-dasharray="7,4"') == 2  # the line and its swatch
    assert "random (gain 0)" in gains and "random (baseline)" not in gains
    assert "lower is better" in scores and "better than random" in gains
    # titles are HTML above the plot, wrapping after underscores
    assert '<div class="title">deletion_<wbr>auc_<wbr>gain_<wbr>vs_<wbr>random</div>' in gains
    # every method keeps its colour from chart to chart
    import re

    item = re.compile(r'<span class="item"><svg[^>]*><line [^>]*stroke="([^"]+)".*?</svg>([^<]+)</span>')

    def legend(chart):
        return {name: colour for colour, name in item.findall(chart)}

    assert legend(scores)["grad_sam"] == legend(gains)["grad_sam"] != legend(scores)["attn_lrp"]


def _chromium(tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1400", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})


#: Measures every text of every chart in the browser's own layout and lists what overlaps or leaves its chart.
LAYOUT_PROBE = """
window.addEventListener('load', () => {
  const box = b => ({l: b.left, t: b.top, r: b.right, b: b.bottom});
  const overlap = (a, b) => Math.min(a.r, b.r) - Math.max(a.l, b.l) > 1 && Math.min(a.b, b.b) - Math.max(a.t, b.t) > 1;
  const inside = (a, c) => a.l >= c.l - 1 && a.r <= c.r + 1 && a.t >= c.t - 1 && a.b <= c.b + 1;
  const charts = [...document.querySelectorAll('figure.chart')];
  const problems = [], titles = [];
  charts.forEach((chart, i) => {
    const frame = box(chart.getBoundingClientRect());
    const texts = [];
    chart.querySelectorAll('text').forEach(
      t => texts.push({what: 'svg ' + t.textContent, ...box(t.getBoundingClientRect())}));
    const walker = document.createTreeWalker(chart, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.parentElement.closest('svg') || !n.textContent.trim()) continue;
      const range = document.createRange(); range.selectNodeContents(n);
      for (const r of range.getClientRects()) texts.push({what: 'html ' + n.textContent, ...box(r)});
    }
    const range = document.createRange(); range.selectNodeContents(chart.querySelector('.title'));
    titles.push({text: chart.querySelector('.title').textContent,
                 lines: new Set([...range.getClientRects()].map(r => Math.round(r.top))).size});
    texts.forEach(a => { if (!inside(a, frame)) problems.push(`chart ${i}: ${a.what} leaves its chart`); });
    for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++)
      if (overlap(texts[a], texts[b])) problems.push(`chart ${i}: ${texts[a].what} overlaps ${texts[b].what}`);
    charts.slice(0, i).forEach((other, j) => {
      if (overlap(frame, box(other.getBoundingClientRect()))) problems.push(`charts ${j} and ${i} overlap`);
    });
  });
  const pre = document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = JSON.stringify({charts: charts.length, titles, problems});
  document.body.appendChild(pre);
});
"""


def _layout(tmp_path, page: str) -> dict:
    """What :data:`LAYOUT_PROBE` measured of ``page`` in headless Chromium (the report itself has no script)."""
    import html
    import json
    import re

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", f"<script>{LAYOUT_PROBE}</script></body>"), encoding="utf-8")
    done = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path, tokenizer):
    from matplotlib.image import imread

    run_dir, _ = _run(tmp_path, make_text_module_class(pl)(tokenizer), *text_loaders())
    out = tmp_path / "report.html"
    main(["report", str(run_dir), "-o", str(out)])
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", out.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr  # no page errors
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1100)
    assert pixels.std() > 0.05  # not blank
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
    assert red.sum() > 200  # the token heatmaps and the agreement matrix are drawn
    dom = _chromium(tmp_path, "--dump-dom", out.as_uri())
    assert "Heatmap evolution of the probe samples" in dom.stdout and "<svg" in dom.stdout
    # no chart text overlaps another (titles, notes, ticks, legends) or leaves its chart; charts never overlap
    layout = _layout(tmp_path, out.read_text())
    assert layout["charts"] == 4 and layout["problems"] == []


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_long_chart_titles_wrap_without_overlapping_in_chromium(tmp_path):
    long = "integrated_gradients_with_a_rather_long_registered_name"
    page = build_report(_records(tmp_path / "run", [long, "gradient_x_input"], "aopc_comprehensiveness_variant"))
    layout = _layout(tmp_path, page)
    assert layout["problems"] == []
    lines = {title["text"]: title["lines"] for title in layout["titles"]}
    assert lines[f"{long} vs random"] >= 2  # wrapped, inside its chart
    assert lines["aopc_comprehensiveness_variant"] == 1
