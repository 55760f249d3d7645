"""Issue 7: DDP on CPU (gloo, 2 processes, ddp_fork). Values equal a single-process run on the same samples."""

import json

import pytest
import torch
from helpers import collate_text, lightning_package, make_text_module_class, make_tokenizer, run_record, text_dataset
from torch.utils.data import DataLoader

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM, RawAttention
from lightning_xai.metrics import DeletionAUC

pl = lightning_package("lightning.pytorch")
ROWS = text_dataset(12, seed=5)
SHARDS = {0: ROWS[:8], 1: ROWS[8:10]}  # uneven on purpose: rank 1 has fewer probe samples


def _module(shards):
    Base = make_text_module_class(pl)

    class Sharded(Base):
        def val_dataloader(self):
            rows = shards[self.global_rank] if self.trainer.world_size > 1 else [r for s in shards.values() for r in s]
            return DataLoader(rows, batch_size=4, collate_fn=collate_text)

        def train_dataloader(self):  # the same batches on every rank
            return DataLoader(ROWS[:4], batch_size=2, collate_fn=collate_text)

        def training_step(self, batch, batch_idx):
            # a data-independent loss (weight decay): every rank computes the same gradient, so a DDP run trains
            # exactly like a single process and the maps change between epochs the same way in both
            return sum((p.float() ** 2).sum() for p in self.parameters()) * 0.5

    return Sharded(make_tokenizer())


def _validate(tmp_path, devices, shards):
    monitor = ExplanationMonitor(explainers=[GradSAM()], metrics=[DeletionAUC(steps=3)], num_samples=64,
                                 num_heatmaps=2)
    strategy = "ddp_fork" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                         default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, callbacks=[monitor])
    trainer.validate(_module(shards), verbose=False)
    # rank zero's record (the DDP launcher does not hand callback-logged values back to the parent process)
    lines = run_record(tmp_path).read_text().splitlines()
    assert len(lines) == 1  # written once, by rank zero only
    return json.loads(lines[0])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("shards", [SHARDS, {0: ROWS[:6], 1: ROWS[6:7]}], ids=["uneven", "one-sample-rank"])
def test_ddp_values_equal_single_process_and_heatmaps_are_written_once(tmp_path, shards):
    distributed = _validate(tmp_path / "ddp", 2, shards)
    single = _validate(tmp_path / "single", 1, shards)
    key = "xai/grad_sam/deletion_auc"
    assert distributed["scalars"][key] == pytest.approx(single["scalars"][key], abs=1e-6)
    assert [s["index"] for s in distributed["samples"]] == [0, 1]  # heatmaps of rank zero's shard, once


def _fit_two_epochs(tmp_path, devices, shards):
    monitor = ExplanationMonitor(explainers=[GradSAM(), RawAttention()], metrics=[DeletionAUC(steps=3)],
                                 num_samples=64, num_heatmaps=1)
    strategy = "ddp_fork" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, max_epochs=2,
                         default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, use_distributed_sampler=False, callbacks=[monitor],
                         num_sanity_val_steps=0)
    trainer.fit(_module(shards))
    lines = run_record(tmp_path).read_text().splitlines()
    assert len(lines) == 2  # one record per epoch, written by rank zero only
    return [json.loads(line)["scalars"] for line in lines]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_stability_and_agreement_equal_single_process(tmp_path):
    distributed = _fit_two_epochs(tmp_path / "ddp", 2, SHARDS)
    single = _fit_two_epochs(tmp_path / "single", 1, SHARDS)
    keys = ["xai/agreement/grad_sam_vs_raw_attention", "xai/grad_sam/stability", "xai/raw_attention/stability",
            "xai/grad_sam/deletion_auc", "xai/raw_attention/deletion_auc"]
    assert "xai/grad_sam/stability" not in single[0]  # no previous epoch yet
    for key in keys:
        assert distributed[1][key] == pytest.approx(single[1][key], abs=1e-5), key
    assert single[1]["xai/grad_sam/stability"] < 0.999  # the maps really moved: not a trivially equal 1.0
    assert distributed[0]["xai/agreement/grad_sam_vs_raw_attention"] == pytest.approx(
        single[0]["xai/agreement/grad_sam_vs_raw_attention"], abs=1e-5)
