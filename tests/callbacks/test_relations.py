"""Issue 4 wiring: stability across epochs, agreement between methods, gain over Random, plausibility."""

import json

import numpy as np
import pytest
import torch
from helpers import collate_text, lightning_package, make_text_module_class, run_record, text_dataset, text_loaders
from torch.utils.data import DataLoader

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import DeletionAUC
from lightning_xai.metrics.gain import random_normalised_gain
from lightning_xai.metrics.plausibility import Plausibility
from lightning_xai.report import spearman

pl = lightning_package("lightning.pytorch")


def _fit(tmp_path, tokenizer, metrics, val=None, epochs=2):
    module = make_text_module_class(pl)(tokenizer)
    train, default_val = text_loaders()
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=metrics, num_samples=6, num_heatmaps=6,
                                 on_error="raise")
    pl.Trainer(max_epochs=epochs, logger=False, callbacks=[monitor], enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path)).fit(
        module, train, val or default_val)
    return monitor


def test_stability_agreement_and_gain_equal_their_definitions(tmp_path, tokenizer):
    monitor = _fit(tmp_path, tokenizer, [DeletionAUC(steps=3)])
    first, second = monitor.history[0], monitor.history[1]
    assert "xai/grad_sam/stability" not in first  # nothing to compare with yet
    gain = random_normalised_gain(second["xai/grad_sam/deletion_auc"], second["xai/random/deletion_auc"], False)
    assert second["xai/grad_sam/deletion_auc_gain_vs_random"] == pytest.approx(float(gain), abs=1e-6)
    assert "xai/random/deletion_auc_gain_vs_random" not in second
    records = [json.loads(line) for line in run_record(tmp_path).read_text().splitlines()]

    def mean_rho(a_maps, b_maps):
        values = [spearman(np.array(a), np.array(b)) for a, b in zip(a_maps, b_maps, strict=True)]
        return float(np.nanmean(values))

    now = [s["maps"] for s in records[1]["samples"]]
    before = [s["maps"] for s in records[0]["samples"]]
    expected_stability = mean_rho([m["grad_sam"] for m in now], [m["grad_sam"] for m in before])
    assert second["xai/grad_sam/stability"] == pytest.approx(expected_stability, abs=1e-5)
    expected_agreement = mean_rho([m["grad_sam"] for m in now], [m["random"] for m in now])
    assert second["xai/agreement/grad_sam_vs_random"] == pytest.approx(expected_agreement, abs=1e-5)
    assert records[1]["higher_is_better"]["xai/grad_sam/stability"] is True


def test_plausibility_uses_the_batch_rationale_masks(tmp_path, tokenizer):
    rows = text_dataset(16, seed=2)
    good = 5  # "good" is the label-bearing word in the tiny task
    for row in rows:
        row["rationale_mask"] = row["input_ids"] == good

    def collate(batch):
        out = collate_text(batch)
        width = out["input_ids"].shape[1]
        out["rationale_mask"] = torch.stack([torch.nn.functional.pad(r["rationale_mask"], (0, width - len(
            r["rationale_mask"])), value=False) for r in batch])
        return out

    val = DataLoader(rows, batch_size=4, collate_fn=collate)
    monitor = _fit(tmp_path, tokenizer, [Plausibility(kind="token_f1", k=1)], val=val, epochs=1)
    key = next(k for k in monitor.history[0] if k.startswith("xai/grad_sam/") and "gain" not in k
               and "skipped" not in k)
    assert 0.0 <= monitor.history[0][key] <= 1.0
