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
from lightning_xai.report import agreement_matrix, build_report, spearman

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
    assert page.count("<svg") == 4 and 'aria-label="deletion_auc"' in page
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


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path, tokenizer):
    from matplotlib.image import imread

    run_dir, _ = _run(tmp_path, make_text_module_class(pl)(tokenizer), *text_loaders())
    out = tmp_path / "report.html"
    main(["report", str(run_dir), "-o", str(out)])
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1400", "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr  # no page errors
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1100)
    assert pixels.std() > 0.05  # not blank
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
    assert red.sum() > 200  # the token heatmaps and the agreement matrix are drawn
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert "Heatmap evolution of the probe samples" in dom.stdout and "<svg" in dom.stdout
