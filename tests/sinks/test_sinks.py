import glob
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import lightning_package, make_text_module_class, text_loaders
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import DeletionAUC
from lightning_xai.sinks import EpochReport, FilesSink, ProbeSample, WandbSink
from lightning_xai.sinks.files import JSONL_NAME
from lightning_xai.viz import token_heatmap_html

pl = lightning_package("lightning.pytorch")
HOSTILE = ["<script>alert(1)</script>", '"onmouseover=alert(2)', "&amp;", "<img src=x onerror=alert(3)>"]


def _fit(tmp_path, tokenizer, logger, epochs=2, **monitor_args):
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=[DeletionAUC(steps=3)], num_samples=6,
                                 num_heatmaps=2, **monitor_args)
    trainer = pl.Trainer(max_epochs=epochs, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(module, train, val)
    return monitor, trainer


def test_tensorboard_custom_scalars_histograms_and_images(tmp_path, tokenizer):
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    monitor, _ = _fit(tmp_path, tokenizer, logger)
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"histograms": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"xai/grad_sam/relevance", "xai/random/relevance"} <= set(tags["histograms"])
    assert len(events.Histograms("xai/grad_sam/relevance")) == 2
    assert "xai/grad_sam/heatmap/sample_01" in tags["images"]
    # the event holds the PNG the files sink wrote (encoded once for both), with its true size
    import io

    from lightning_xai.keys import heatmap_path
    from lightning_xai.viz.png import read_png

    logged = events.Images("xai/grad_sam/heatmap/sample_01")[-1]
    path = heatmap_path(tmp_path / "run" / "version_0" / "xai", 1, "grad_sam", 1)
    assert logged.encoded_image_string == path.read_bytes()  # the same bytes: encoded once
    records = [json.loads(line) for line in (path.parents[2] / JSONL_NAME).read_text().splitlines()]
    assert logged.step == next(record["step"] for record in records if record["epoch"] == 1)
    written = read_png(path)
    assert (logged.height, logged.width) == written.shape[:2]
    np.testing.assert_array_equal(read_png(io.BytesIO(logged.encoded_image_string)), written)
    # the custom-scalars layout lives in its plugin's config event
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    config_tag = metadata.CONFIG_SUMMARY_TAG
    assert config_tag in tags["tensors"]
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors(config_tag)[-1].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for cat in layout.category for chart in cat.chart}
    assert charts["deletion_auc"] == ["^xai/grad_sam/deletion_auc$", "^xai/random/deletion_auc$"]  # regexes, anchored
    assert charts["deletion_auc_gain_vs_random"] == ["^xai/grad_sam/deletion_auc_gain_vs_random$"]
    assert set(charts) == {"deletion_auc", "deletion_auc_gain_vs_random", "agreement", "stability", "epoch"}
    assert charts["stability"] == ["^xai/grad_sam/stability$", "^xai/random/stability$"]


def test_files_sink_with_csv_logger_writes_jsonl_png_and_html(tmp_path, tokenizer):
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    monitor, trainer = _fit(tmp_path, tokenizer, logger)
    root = tmp_path / "csv" / "version_0" / "xai"
    lines = [json.loads(line) for line in (root / JSONL_NAME).read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]
    for line in lines:
        assert line["scalars"] == monitor.history[line["epoch"]]
        assert line["higher_is_better"] == {k: "deletion_auc" not in k or k.endswith("_gain_vs_random")
                                            for k in line["scalars"]}
        assert [s["index"] for s in line["samples"]] == [0, 1]
        for sample in line["samples"]:
            assert set(sample["maps"]) == {"grad_sam", "random"}
            assert all(len(m) == len(sample["tokens"]) for m in sample["maps"].values())
            assert None not in sample["tokens"]
    for epoch in ("epoch_000", "epoch_001"):
        for method in ("grad_sam", "random"):
            png = root / epoch / method / "sample_00.png"
            assert png.read_bytes()[1:4] == b"PNG"
            assert "<span" in (root / epoch / method / "sample_01.html").read_text()


def test_wandb_offline_writes_images_html_and_a_table_per_epoch(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("wandb")
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    tables = []

    class SpyTable(wandb.Table):  # the in-memory table: the run's table file holds only cell type names
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            tables.append(self)

    monkeypatch.setattr(wandb, "Table", SpyTable)
    logger = pl.loggers.WandbLogger(offline=True, save_dir=str(tmp_path), project="xai-test")
    monitor, _ = _fit(tmp_path, tokenizer, logger)
    summary = logger.experiment.summary._as_dict()
    run_dir = logger.experiment.dir
    wandb.finish()

    media = os.path.join(run_dir, "media")
    images = glob.glob(os.path.join(media, "images", "xai", "grad_sam", "heatmap", "sample_00_*.png"))
    assert len(images) == 2  # one per epoch
    html = glob.glob(os.path.join(media, "html", "xai", "random", "tokens", "sample_01_*.html"))
    assert len(html) == 2
    files = sorted(glob.glob(os.path.join(media, "table", "xai", "probe_samples_*.table.json")))
    assert len(files) == 2 and len(tables) == 2
    columns = ["sample", "input", "label", "prediction", "probability", "explained", "grad_sam top words",
               "grad_sam heatmap", "random top words", "random heatmap"]
    on_disk = json.loads(open(files[0]).read())
    assert on_disk["columns"] == columns
    assert all(row[7] == "Html" and row[9] == "Html" for row in on_disk["data"])  # media cells, not text
    table = tables[-1]
    assert table.columns == columns and [row[0] for row in table.data] == [0, 1]
    assert all(row[2] in ("LABEL_0", "LABEL_1") for row in table.data)
    (record,) = tmp_path.rglob(JSONL_NAME)
    last = json.loads(record.read_text().splitlines()[-1])
    tokens_of = {sample["index"]: sample["tokens"] for sample in last["samples"]}
    assert any(t.startswith("##") for tokens in tokens_of.values() for t in tokens)  # there are pieces to merge
    for row in table.data:
        tokens = tokens_of[row[0]]
        assert "##" not in row[1] and "##" not in row[6]  # words, as the heatmaps show them
        assert row[1].replace(" ", "") == "".join(t.removeprefix("##") for t in tokens)
        assert isinstance(row[7], wandb.Html) and "<span" in row[7].html
        assert all(f">{word}</span>" in row[7].html for word in row[1].split())
    # the best epoch where best means something; the last value for baselines and diagnostics
    assert set(summary["xai/grad_sam/deletion_auc"]) == {"min"}
    assert set(summary["xai/grad_sam/deletion_auc_gain_vs_random"]) == {"max"}
    for key in ("xai/random/deletion_auc", "xai/agreement/grad_sam_vs_random", "xai/grad_sam/stability",
                "xai/random/stability"):
        assert set(summary[key]) == {"last"}, key
        assert summary[key]["last"] == pytest.approx(monitor.history[1][key])


def test_wandb_summaries_follow_what_each_key_means():
    from lightning_xai.keys import LogKeys

    defined = {}
    define = SimpleNamespace(define_metric=lambda key, summary: defined.update({key: summary}))
    logger = SimpleNamespace(experiment=define, log_metrics=lambda payload, step: None)
    keys = LogKeys()
    scalars = {keys.score("grad_sam", "deletion_auc"): False, keys.score("grad_sam", "insertion_auc"): True,
               keys.gain("grad_sam", "deletion_auc"): True, keys.score("random", "deletion_auc"): False,
               keys.score("random", "insertion_auc"): True, keys.agreement("grad_sam", "random"): True,
               keys.stability("grad_sam"): True, keys.skipped("grad_sam"): False,
               keys.degenerate("grad_sam"): False}
    report = EpochReport(epoch=0, step=0, scalars=dict.fromkeys(scalars, 0.5), higher_is_better=scalars, samples=[])
    pytest.importorskip("wandb")
    WandbSink(logger).log_epoch(report)
    assert defined == {
        "xai/grad_sam/deletion_auc": "min", "xai/grad_sam/insertion_auc": "max",
        "xai/grad_sam/deletion_auc_gain_vs_random": "max", "xai/random/deletion_auc": "last",
        "xai/random/insertion_auc": "last", "xai/agreement/grad_sam_vs_random": "last",
        "xai/grad_sam/stability": "last", "xai/grad_sam/skipped_samples": "last",
        "xai/grad_sam/degenerate_samples": "last",
    }


def test_wandb_table_of_an_image_run_has_an_overlay_per_method(monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning_xai.viz.render import render_heatmaps

    sample = ProbeSample(index=0, label="cat", prediction="cat", probability=0.9, explained="cat",
                         image=np.random.default_rng(0).normal(size=(3, 8, 8)),
                         maps={"a": np.eye(2), "random": np.ones((2, 2))})
    report = EpochReport(epoch=0, step=0, scalars={}, higher_is_better={}, samples=[sample],
                         heatmaps=render_heatmaps([sample], epoch=0))
    logged = {}
    logger = SimpleNamespace(experiment=SimpleNamespace(define_metric=lambda *a, **k: None),
                             log_metrics=lambda payload, step: logged.update(payload))
    WandbSink(logger).log_epoch(report)
    table = logged["xai/probe_samples"]
    assert table.columns == ["sample", "input", "label", "prediction", "probability", "explained", "a heatmap",
                             "random heatmap"]
    (row,) = table.data
    assert all(isinstance(cell, wandb.Image) for cell in (row[1], row[6], row[7]))


def _hostile_report(prefix="xai/"):
    sample = ProbeSample(index=0, label=HOSTILE[0], prediction=HOSTILE[1], probability=0.5, explained=HOSTILE[2],
                         tokens=list(HOSTILE), maps={"m": np.arange(4.0)}, signed={"m": False})
    from lightning_xai.keys import LogKeys
    from lightning_xai.viz.render import render_heatmaps

    return EpochReport(epoch=0, step=0, scalars={"xai/m/x": 1.0}, higher_is_better={"xai/m/x": True},
                       samples=[sample], heatmaps=render_heatmaps([sample], epoch=0), keys=LogKeys(prefix))


def _assert_inert(page: str):
    assert "<script" not in page and "<img" not in page
    assert '"onmouseover' not in page
    assert "&amp;amp;" in page  # the literal token "&amp;" stays text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_every_html_path_escapes_tokens_labels_and_captions(tmp_path, monkeypatch):
    # 1. the renderer itself
    _assert_inert(token_heatmap_html(HOSTILE, np.arange(4.0), title=HOSTILE[0], caption=HOSTILE[1], merge=False))
    # 2. the files sink (standalone pages)
    FilesSink(tmp_path).log_epoch(_hostile_report())
    page = (tmp_path / "epoch_000" / "m" / "sample_00.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    _assert_inert(page)
    # 3. the W&B sink (what it hands to wandb.Html)
    logged = {}
    fake_wandb_logger = SimpleNamespace(experiment=SimpleNamespace(define_metric=lambda *a, **k: None),
                                        log_metrics=lambda payload, step: logged.update(payload))
    pytest.importorskip("wandb")
    WandbSink(fake_wandb_logger).log_epoch(_hostile_report())
    _assert_inert(logged["xai/m/tokens/sample_00"].html)
    # 4. the static run report (labels, predictions, tokens and method names from the JSONL)
    from lightning_xai.report import build_report

    _assert_inert(build_report(tmp_path))


def test_nothing_is_written_from_non_zero_ranks(tmp_path, tokenizer):
    monitor = ExplanationMonitor(tokenizer=tokenizer, files_dir=str(tmp_path / "xai"))
    module = make_text_module_class(pl)(tokenizer)
    trainer = SimpleNamespace(is_global_zero=False, loggers=[pl.loggers.CSVLogger(str(tmp_path))], log_dir=None,
                              default_root_dir=str(tmp_path), datamodule=None)
    monitor.setup(trainer, module, "fit")
    assert monitor._sinks == []
    trainer.is_global_zero = True
    monitor.setup(trainer, module, "fit")
    assert [type(s).__name__ for s in monitor._sinks] == ["FilesSink"]


def test_method_grid_and_evolution_strips(tmp_path, tokenizer):
    from matplotlib.image import imread

    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    _fit(tmp_path, tokenizer, logger, epochs=3)
    root = tmp_path / "csv" / "version_0" / "xai"
    single = imread(root / "epoch_002" / "grad_sam" / "sample_00.png")
    grid = imread(root / "epoch_002" / "compare" / "sample_00.png")
    assert grid.shape[0] > 1.9 * single.shape[0]  # two methods stacked
    strip = imread(root / "evolution" / "grad_sam" / "sample_00.png")
    assert strip.shape[0] > 2.9 * single.shape[0] and strip.shape[1] == single.shape[1]  # three epochs stacked
    # every frame under its epoch's label
    from lightning_xai.viz.compose import label_band

    band = label_band("epoch 0", single.shape[1]).shape[0]
    frame = band + single.shape[0] + 8  # label, heatmap, gap
    for epoch in range(3):
        label = (strip[epoch * frame : epoch * frame + band, :, :3] * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(label, label_band(f"epoch {epoch}", single.shape[1]))
        heatmap = strip[epoch * frame + band : epoch * frame + band + single.shape[0], :, :3]
        expected = imread(root / f"epoch_00{epoch}" / "grad_sam" / "sample_00.png")[..., :3]
        np.testing.assert_array_equal(heatmap, expected)


def test_evolution_labels_come_from_the_epoch_folder_even_for_a_method_named_epoch(tmp_path):
    """The strip's labels read <root>/epoch_NNN, not the nearest epoch_-named folder (a method may be one)."""
    from lightning_xai.keys import evolution_path, heatmap_path
    from lightning_xai.sinks.files import FilesSink
    from lightning_xai.viz.compose import label_band
    from lightning_xai.viz.png import write_png

    sink = FilesSink(tmp_path)
    image = np.full((20, 40, 3), 200, dtype=np.uint8)
    for epoch in (3, 7):
        path = heatmap_path(tmp_path, epoch, "epoch_probe", 0)
        path.parent.mkdir(parents=True)
        write_png(path, image)
    sink._write_evolution("epoch_probe", 0)
    from matplotlib.image import imread

    strip = (imread(evolution_path(tmp_path, "epoch_probe", 0))[..., :3] * 255).round().astype(np.uint8)
    band = label_band("epoch 3", 40).shape[0]
    np.testing.assert_array_equal(strip[:band], label_band("epoch 3", 40))
    frame = band + 20 + 8
    np.testing.assert_array_equal(strip[frame : frame + band], label_band("epoch 7", 40))


def test_a_long_run_s_evolution_strip_shows_at_most_the_frame_limit_first_and_latest_included(tmp_path, monkeypatch):
    """Every validation rebuilds the strips: past the limit they show evenly spread epochs, so their cost is bounded."""
    from lightning_xai.keys import evolution_path, heatmap_path
    from lightning_xai.sinks import files
    from lightning_xai.viz.compose import evolution_strip
    from lightning_xai.viz.png import read_png, write_png

    monkeypatch.setattr(files, "EVOLUTION_MAX_FRAMES", 3)
    sink = files.FilesSink(tmp_path)
    frames = {epoch: np.full((20, 40, 3), 10 * epoch, dtype=np.uint8) for epoch in range(5)}
    shown = {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 2, 3], 4: [0, 2, 4]}  # nearest epochs, halves rounded up
    for epoch, image in frames.items():
        path = heatmap_path(tmp_path, epoch, "grad_sam", 0)
        path.parent.mkdir(parents=True)
        write_png(path, image)
        sink._write_evolution("grad_sam", 0)
        expected = evolution_strip([frames[e] for e in shown[epoch]], labels=[f"epoch {e}" for e in shown[epoch]])
        np.testing.assert_array_equal(read_png(evolution_path(tmp_path, "grad_sam", 0)), expected)
