"""Publishing on a worker thread (``publish_in_background``) writes exactly what the training thread would."""

import json
import threading
from types import SimpleNamespace

import pytest
import torch
from helpers import lightning_package, make_text_module_class, text_loaders
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ExplanationMonitor
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import DeletionAUC
from lightning_xai.sinks import FilesSink, WandbSink
from lightning_xai.sinks.files import JSONL_NAME

pl = lightning_package("lightning.pytorch")


def _fit(tmp_path, tokenizer, background, sink_threads, **monitor_args):
    pl.seed_everything(0)
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=[DeletionAUC(steps=3)], num_samples=6,
                                 num_heatmaps=2, publish_in_background=background, **monitor_args)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = pl.Trainer(max_epochs=2, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(module, train, val)
    return module, tmp_path / "run" / "version_0"


@pytest.fixture
def sink_threads(monkeypatch):
    """The thread every files-sink write ran on."""
    names = []
    log_epoch = FilesSink.log_epoch

    def recorded(self, report):
        names.append(threading.current_thread().name)
        return log_epoch(self, report)

    monkeypatch.setattr(FilesSink, "log_epoch", recorded)
    return names


def test_background_publishing_writes_the_same_files_and_events_off_the_training_thread(tmp_path, tokenizer,
                                                                                         sink_threads):
    module_sync, run_sync = _fit(tmp_path / "sync", tokenizer, False, sink_threads)
    on_main = list(sink_threads)
    sink_threads.clear()
    module_bg, run_bg = _fit(tmp_path / "bg", tokenizer, True, sink_threads)
    assert on_main == ["MainThread"] * 2
    assert len(sink_threads) == 2 and all(name.startswith("lightning_xai_publish") for name in sink_threads)

    def records(run):
        lines = [json.loads(line) for line in (run / "xai" / JSONL_NAME).read_text().splitlines()]
        return [{key: value for key, value in line.items() if key != "run"} for line in lines]

    assert records(run_bg) == records(run_sync)  # every scalar, map and step, in epoch order
    pngs = sorted(p.relative_to(run_sync / "xai") for p in (run_sync / "xai").rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(run_bg / "xai") for p in (run_bg / "xai").rglob("*.png"))
    assert all((run_sync / "xai" / p).read_bytes() == (run_bg / "xai" / p).read_bytes() for p in pngs)

    def images(run):
        events = EventAccumulator(str(run), size_guidance={"images": 0})
        events.Reload()
        return {tag: [(i.step, i.encoded_image_string) for i in events.Images(tag)] for tag in events.Tags()["images"]}

    assert images(run_bg) == images(run_sync) and images(run_sync)
    for a, b in zip(module_sync.parameters(), module_bg.parameters(), strict=True):  # training untouched
        assert torch.equal(a, b)


def test_a_failing_sink_in_the_background_raises_at_teardown_under_on_error_raise(tmp_path, tokenizer, monkeypatch):
    def broken(self, report):
        raise OSError("disk full")

    monkeypatch.setattr(FilesSink, "log_epoch", broken)
    with pytest.raises(LightningXAIError, match="FilesSink failed: OSError: disk full"):
        _fit(tmp_path, tokenizer, True, None, on_error="raise")


def test_auto_publishes_in_the_background_on_an_accelerator_without_wandb_only():
    monitor = ExplanationMonitor()
    assert not monitor._in_background(SimpleNamespace(device=torch.device("cpu")))
    assert monitor._in_background(SimpleNamespace(device=torch.device("cuda", 0)))
    monitor._sinks = [WandbSink(SimpleNamespace())]  # W&B keeps the training thread's order
    assert not monitor._in_background(SimpleNamespace(device=torch.device("cuda", 0)))
    assert ExplanationMonitor(publish_in_background=True)._in_background(SimpleNamespace(device=torch.device("cpu")))
    with pytest.raises(ValueError, match="publish_in_background"):
        ExplanationMonitor(publish_in_background="yes")
