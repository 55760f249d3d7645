"""Issue 7: DDP on CPU (gloo, 2 processes, ddp_fork). Values equal a single-process run on the same samples."""

import json

import pytest
import torch
from helpers import collate_text, lightning_package, make_text_module_class, make_tokenizer, text_dataset
from torch.utils.data import DataLoader

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM
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
    lines = (tmp_path / "xai" / "explanations.jsonl").read_text().splitlines()
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
