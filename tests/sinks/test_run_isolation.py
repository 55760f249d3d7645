"""Runs never mix their files: each run its own folder and record; report refuses a record of several runs."""

import json

import pytest
from helpers import lightning_package, make_text_module_class, text_loaders

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.keys import JSONL_NAME
from lightning_xai.metrics import DeletionAUC
from lightning_xai.report import build_report
from lightning_xai.sinks import FilesSink

pl = lightning_package("lightning.pytorch")


def _fit(tmp_path, tokenizer, seed, **trainer_args):
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=[DeletionAUC(steps=2)], num_samples=4,
                                 num_heatmaps=1)
    pl.seed_everything(seed)
    train, val = text_loaders(n_val=4)
    options = dict(max_epochs=1, callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=str(tmp_path))
    options.update(trainer_args)
    pl.Trainer(**options).fit(make_text_module_class(pl)(tokenizer, lr=5e-2 * seed), train, val)
    return monitor


@pytest.mark.parametrize("logger", ["none", "wandb"])
def test_two_runs_in_one_save_dir_get_two_folders_and_two_reports(tmp_path, tokenizer, logger, monkeypatch):
    def loggers():
        if logger == "none":
            return dict(logger=False)
        pytest.importorskip("wandb")
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        return dict(logger=pl.loggers.WandbLogger(save_dir=str(tmp_path), offline=True))

    def fit(seed):
        monitor = _fit(tmp_path, tokenizer, seed, **loggers())
        if logger == "wandb":
            import wandb

            wandb.finish()  # the next logger starts its own run
        return monitor

    first, second = fit(1), fit(2)
    records = sorted(tmp_path.rglob(JSONL_NAME))
    assert len(records) == 2 and records[0].parent != records[1].parent
    assert first.run_id != second.run_id
    for monitor in (first, second):
        (record,) = [r for r in records if monitor.run_id in str(r.parent)]
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        assert [line["run"] for line in lines] == [monitor.run_id]
        value = monitor.history[0]["xai/grad_sam/deletion_auc"]
        assert lines[0]["scalars"]["xai/grad_sam/deletion_auc"] == pytest.approx(value)
        assert f"{value:.4g}" in build_report(record.parent)  # the point's tooltip


def test_fast_dev_run_writes_nothing_into_the_working_tree(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(tmp_path, tokenizer, 1, fast_dev_run=1)
    assert not list(tmp_path.rglob(JSONL_NAME))


def test_a_folder_with_another_runs_record_is_not_appended_to_and_report_refuses_mixed_records(tmp_path):
    from lightning_xai.records import EpochReport

    report = EpochReport(epoch=0, step=0, scalars={"xai/m/x": 1.0}, higher_is_better={"xai/m/x": True}, samples=[])
    FilesSink(tmp_path, run_id="first").log_epoch(report)
    with pytest.warns(UserWarning, match="another run"):
        FilesSink(tmp_path, run_id="second").log_epoch(report)
    assert (tmp_path / "run_second" / JSONL_NAME).exists()
    assert [json.loads(line)["run"] for line in (tmp_path / JSONL_NAME).read_text().splitlines()] == ["first"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / JSONL_NAME).write_text((tmp_path / JSONL_NAME).read_text()
                                    + (tmp_path / "run_second" / JSONL_NAME).read_text())
    with pytest.raises(ValueError, match="records of 2 runs"):
        build_report(mixed)
