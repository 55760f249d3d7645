"""A monitored fit's event file, served by a real TensorBoard, looked at in headless Chromium.

One tiny fit (2 epochs, GradSAM + Random + LeGrad, DeletionAUC, 2 heatmap samples) writes an event file;
``tensorboard`` serves it on a free local port; Chromium, driven over the DevTools protocol (its frontend draws in
shadow DOM, which ``--dump-dom`` does not show), opens the SCALARS, IMAGES and CUSTOM SCALARS tabs, screenshots
them and reads what they show: each custom-scalars chart lists exactly its series (the ``deletion_auc`` chart does
not also draw ``deletion_auc_gain_vs_random``), and the default IMAGES card shows a heatmap at its actual size,
pixel for pixel. TensorBoard's own HTTP API is checked too.

Screenshots land in the test's tmp dir, and also in ``$LXAI_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import lightning_package, make_text_module_class, text_loaders

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM, LeGrad, Random
from lightning_xai.keys import LogKeys
from lightning_xai.metrics import DeletionAUC
from lightning_xai.sinks.tensorboard import custom_scalars_layout
from lightning_xai.viz._canvas import CARD_WIDTH_PX

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "Chromium not installed (Debian package `chromium`; .ci/run installs it)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]
aiohttp = pytest.importorskip("aiohttp")
pl = lightning_package("lightning.pytorch")

RUN = "run/version_0"
METHODS = ("grad_sam", "random", "legrad")
SAMPLES = 2
VIEWPORT = (1400, 1000)
#: Every element matching a selector, in the document (or below an element) and in every shadow root below it.
DEEP_ALL = """
const deepAll = (selector, below) => {
  const found = new Set();
  const walk = (root) => {
    root.querySelectorAll(selector).forEach((el) => found.add(el));
    root.querySelectorAll('*').forEach((el) => { if (el.shadowRoot) walk(el.shadowRoot); });
  };
  walk(below ? below.shadowRoot || below : document);
  return [...found];
};
"""


# ------------------------------------------------------------------------------------------------ the run


@pytest.fixture(scope="module")
def logdir(tmp_path_factory, tokenizer_module):
    root = tmp_path_factory.mktemp("tb_browser")
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random(), LeGrad()], metrics=[DeletionAUC(steps=3)],
                                 num_samples=6, num_heatmaps=SAMPLES)
    trainer = pl.Trainer(max_epochs=2, logger=pl.loggers.TensorBoardLogger(str(root), name="run", version=0),
                         callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(root))
    trainer.fit(make_text_module_class(pl)(tokenizer_module), *text_loaders())
    return root


@pytest.fixture(scope="module")
def tokenizer_module():
    from helpers import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="module")
def event_file(logdir):
    """``(scalar tags, {image tag: last PNG})`` of the run, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir / RUN), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = {tag: events.Images(tag)[-1].encoded_image_string for tag in events.Tags()["images"]}
    return set(events.Tags()["scalars"]), images


# ------------------------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def tensorboard(logdir, tmp_path_factory):
    """The URL of a TensorBoard serving ``logdir`` once it has loaded the run; killed by its PID afterwards."""
    log = tmp_path_factory.mktemp("tensorboard") / "tensorboard.log"
    port = _free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--reload_interval", "0", "--load_fast", "false"]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, ValueError):
                images = _get_json(f"{url}/data/plugin/images/tags").get(RUN, {})
                if _get_json(f"{url}/data/plugin/custom_scalars/layout") and len(images) >= SAMPLES:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve the run within 45 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.kill()  # our own child, by its PID
        server.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """The DevTools websocket URL of a headless Chromium; the browser (its own process group) is killed after."""
    profile = tmp_path_factory.mktemp("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"]
    browser = subprocess.Popen([CHROMIUM, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HOME": str(profile)}, start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"  # "<port>\n/devtools/browser/<id>" once it listens
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if browser.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port (exit code {browser.poll()})")
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, signal.SIGKILL)  # the group we started: renderer and GPU helpers too
        browser.wait(timeout=10)


class _Page:
    """One browser tab over the Chrome DevTools Protocol (flat session on the browser's websocket)."""

    def __init__(self, ws, session: str, shots: Path):
        self._ws, self._session, self._shots, self._next = ws, session, shots, 0

    async def send(self, method: str, session: str | None = "page", **params):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        await self._ws.send_json(message)
        while True:  # events (and nothing else) arrive in between
            reply = await asyncio.wait_for(self._ws.receive_json(), timeout=30)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, expression: str):
        """The JSON value of a JS expression (``deepAll`` is defined)."""
        result = await self.send("Runtime.evaluate", expression=f"(() => {{ {DEEP_ALL} return {expression}; }})()",
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 25.0):
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        await self.screenshot(f"timeout_{re.sub(r'[^a-z]+', '_', what.lower())}")
        raise AssertionError(f"TensorBoard never showed {what} within {timeout} s (last value: {value!r})")

    async def screenshot(self, name: str) -> Path:
        data = base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])
        path = self._shots / f"{name}.png"
        path.write_bytes(data)
        if os.environ.get("LXAI_SCREENSHOTS"):
            keep = Path(os.environ["LXAI_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        return path


@contextlib.asynccontextmanager
async def _open(browser_url: str, url: str, shots: Path, height: int = VIEWPORT[1]):
    """A fresh tab at ``url`` (a clean DOM per dashboard), ``VIEWPORT[0]`` x ``height`` CSS px at scale 1."""
    async with aiohttp.ClientSession() as http, http.ws_connect(browser_url, max_msg_size=0) as ws:
        browser = _Page(ws, "", shots)
        target = (await browser.send("Target.createTarget", session=None, url="about:blank"))["targetId"]
        session = (await browser.send("Target.attachToTarget", session=None, targetId=target, flatten=True))
        page = _Page(ws, session["sessionId"], shots)
        try:
            await page.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=height,
                            deviceScaleFactor=1, mobile=False)
            await page.send("Page.navigate", url=url)
            yield page
        finally:
            await browser.send("Target.closeTarget", session=None, targetId=target)


def _visit(chromium: str, url: str, shots: Path, scenario, height: int = VIEWPORT[1]):
    async def run():
        async with _open(chromium, url, shots, height) as page:
            return await scenario(page)

    return asyncio.run(run())


@pytest.fixture
def shots(tmp_path):
    return tmp_path


# ------------------------------------------------------------------------------------------------ the tests


def _expected_charts(scalar_tags: set[str]) -> dict[str, set[str]]:
    """Chart title -> the logged tags it must draw, from the event file's tags and the key grammar alone."""
    keys, charts = LogKeys("xai/"), {"epoch": {"epoch"}}
    for tag in scalar_tags:
        place = keys.dashboard(tag)
        if place is not None:
            charts.setdefault(place[1], set()).add(tag)
    return charts


def test_tensorboard_api_serves_the_anchored_layout_and_each_chart_selects_exactly_its_tags(tensorboard, event_file):
    scalar_tags, _ = event_file
    xai_tags = sorted(tag for tag in scalar_tags if tag.startswith("xai/"))
    served = _get_json(f"{tensorboard}/data/plugin/custom_scalars/layout")
    layout = {category["title"]: {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
              for category in served["category"]}
    assert layout == {category: {chart: spec[1] for chart, spec in charts.items()}
                      for category, charts in custom_scalars_layout(xai_tags, "xai/").items()}
    assert list(layout) == ["explanation quality", "gain vs random", "agreement and stability", "health"]
    expected = _expected_charts(scalar_tags)
    for category, charts in layout.items():
        for title, regexes in charts.items():
            # what the frontend's multi-line card asks the backend for, which matches it against every tag
            tag_filter = regexes[0] if len(regexes) == 1 else "|".join(f"({r})" for r in regexes)
            query = urllib.parse.urlencode({"run": RUN, "tag": tag_filter})
            answer = _get_json(f"{tensorboard}/data/plugin/custom_scalars/scalars?{query}")
            assert answer["regex_valid"], (category, title)
            assert set(answer["tag_to_events"]) == expected[title], (category, title)
    assert expected["deletion_auc"] == {f"xai/{m}/deletion_auc" for m in METHODS}


def test_custom_scalars_tab_charts_exactly_their_series(tensorboard, chromium, event_file, shots):
    scalar_tags, _ = event_file
    expected = _expected_charts(scalar_tags)

    async def scenario(page):
        cards = "deepAll('tf-custom-scalar-multi-line-chart-card')"
        entries = "[...c.shadowRoot.querySelectorAll('.match-list-entry')]"
        # ready: every chart is on the page, lists as many matches as it has tag regexes, and has drawn its lines
        await page.wait_for(f"{cards}.length === {len(expected)} && {cards}.every(c => c.tagRegexes && "
                            f"{entries}.length === c.tagRegexes.length && deepAll('.line', c).length > 0)",
                            "every custom-scalars chart with its data")
        await page.evaluate(f"{cards}.forEach(c => c.shadowRoot.querySelector('.toggle-matches-button').click())")
        await asyncio.sleep(0.5)  # the match lists unfold
        await page.screenshot("custom_scalars")
        return await page.evaluate(
            f"{cards}.map(c => ({{title: c.shadowRoot.textContent.includes(c.title) ? c.title : null, "
            f"series: {entries}.map(e => e.textContent.replace(/\\s+/g, ' ').trim()), "
            f"matches: c.shadowRoot.querySelector('.matches-text').textContent.trim()}}))"
        ), await page.evaluate("deepAll('tf-category-paginated-view').map(v => v.category && v.category.name)")

    cards, categories = _visit(chromium, f"{tensorboard}/#custom_scalars", shots, scenario, height=1950)
    shown = {}
    for card in cards:
        assert card["title"] is not None, card  # the chart's title is drawn in it
        # each DOM entry reads "<symbol> <tag> (<run>)"
        series = {re.sub(rf"^\S+ (.*) \({re.escape(RUN)}\)$", r"\1", entry) for entry in card["series"]}
        assert len(series) == len(card["series"]) and card["matches"] == f"Matches ({len(series)})"
        shown[card["title"]] = series
    assert shown == expected
    assert shown["deletion_auc"] == {f"xai/{m}/deletion_auc" for m in METHODS}  # not its gain over random
    assert shown["deletion_auc_gain_vs_random"] == {"xai/grad_sam/deletion_auc_gain_vs_random",
                                                    "xai/legrad/deletion_auc_gain_vs_random"}
    assert {"explanation quality", "gain vs random", "agreement and stability", "health"} <= set(categories)


def test_images_tab_shows_every_heatmap_at_actual_size(tensorboard, chromium, event_file, shots):
    from matplotlib.image import imread

    _, pngs = event_file
    expected_tags = {LogKeys("xai/").heatmap(m, s) for m in (*METHODS, None) for s in range(SAMPLES)}
    assert set(pngs) == expected_tags

    async def scenario(page):
        loaded = ("deepAll('tf-image-loader').map(l => [l, l.shadowRoot.querySelector('#main-image-container img')])"
                  ".filter(([l, i]) => i && i.complete && i.naturalWidth > 0)")
        await page.wait_for(f"{loaded}.length === {len(expected_tags)}", "every heatmap loaded")
        await asyncio.sleep(0.5)
        shot = await page.screenshot("images")
        shown = await page.evaluate(
            f"{loaded}.map(([l, i]) => {{ const r = i.getBoundingClientRect(); return {{tag: l.tag, "
            "natural: [i.naturalWidth, i.naturalHeight], shown: [r.width, r.height], at: [r.left, r.top], "
            "actualSize: !!l.actualSize}; })"
        )
        return shot, shown

    shot, shown = _visit(chromium, f"{tensorboard}/#images", shots, scenario)
    assert {image["tag"] for image in shown} == expected_tags
    pixels = (imread(shot)[..., :3] * 255).round().astype(np.int16)
    compared = 0
    for image in shown:
        logged = (imread(io.BytesIO(pngs[image["tag"]]))[..., :3] * 255).round().astype(np.int16)
        assert image["natural"] == [logged.shape[1], logged.shape[0]], image
        assert not image["actualSize"]  # the default card, "Show actual image size" unticked ...
        assert image["natural"][0] == CARD_WIDTH_PX and image["shown"] == image["natural"], image  # ... at 1:1
        left, top = (round(v) for v in image["at"])
        height = min(logged.shape[0], pixels.shape[0] - top)
        if top >= 0 and height > 40:  # on screen: the card shows the PNG pixel for pixel, crisp text included
            region = pixels[top : top + height, left : left + logged.shape[1]]
            assert np.abs(region - logged[:height]).max() <= 2, image["tag"]
            compared += 1
    assert compared >= 2


def test_scalars_tab_lists_every_scalar_and_the_epoch(tensorboard, chromium, event_file, shots):
    scalar_tags, _ = event_file
    assert "epoch" in scalar_tags  # Lightning logs it at every step it logs metrics: the dashboard charts it

    async def scenario(page):
        await page.wait_for("deepAll('tf-scalar-card').length > 2", "the scalar charts")
        await asyncio.sleep(1.0)
        await page.screenshot("scalars")
        # the first group is the filter's matches (the usual groups follow it, "xai" folded)
        matches = await page.evaluate("deepAll('tf-category-paginated-view').map(v => v.category)"
                                      ".filter(c => c && c.metadata.type === 0).map(c => c.items.map(i => i.tag))")
        drawn = await page.evaluate("deepAll('tf-scalar-card').filter(c => c.getClientRects().length).map(c => c.tag)")
        return matches, drawn

    # the "xai" group starts folded; the tag filter (state kept in the URL's hash) opens what it matches
    tag_filter = urllib.parse.quote("deletion_auc|^epoch$", safe="")
    (matches,), drawn = _visit(chromium, f"{tensorboard}/#scalars&tagFilter={tag_filter}", shots, scenario)
    assert set(matches) == {tag for tag in scalar_tags if "deletion_auc" in tag} | {"epoch"} <= set(drawn)
    assert {f"xai/{m}/deletion_auc" for m in METHODS} | {"xai/grad_sam/deletion_auc_gain_vs_random"} <= set(matches)
