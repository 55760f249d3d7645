"""Gradient checkpointing with bf16: monitored fits train bit-identically and the model is restored (issue 13).

HF checkpoints a layer only when the layer is in train mode; every explanation pass runs in eval mode
(``capture.eval_mode``), so it takes the ordinary path and the checkpointing flag, the train modes and the
attention implementation are left exactly as the training step set them. These tests check it end to end on a
tiny causal LM (``CompletionScorer``) under ``bf16-mixed`` and ``bf16-true``, and on a tiny BERT classifier.
"""

import copy
import math

import pytest
import torch
from helpers import collate_text, lightning_package, make_text_module_class, quiet_trainer, text_dataset
from test_causal_lm import TinySFT, loaders, modality, sft_batch, tiny_lm

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.explainers import (
    GAE,
    AttnLRP,
    GradientXInput,
    GradSAM,
    IntegratedGradients,
    LeGrad,
    Random,
    RawAttention,
)
from lightning_xai.metrics import DeletionAUC, Plausibility

pl = lightning_package("lightning.pytorch")


def checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether some layer of ``model`` checkpoints (the flag HF's layers read in train mode)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def checkpointing_state(model: torch.nn.Module) -> tuple:
    """Everything an explanation pass could leave changed: checkpointing flags, train modes, attention backend."""
    return (
        tuple(getattr(m, "gradient_checkpointing", None) for m in model.modules()),
        tuple(m.training for m in model.modules()),
        model.config._attn_implementation,
    )


def test_explaining_a_checkpointed_lm_in_train_mode_equals_the_plain_lm_and_restores_it():
    """``explain`` on an LM in train mode with (reentrant) checkpointing on: the same maps, bit for bit, as the
    same weights without checkpointing in eval mode; no ``.grad`` left; flags, modes and backend restored."""
    plain = tiny_lm()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable()  # HF's default: reentrant torch.utils.checkpoint
    checkpointed.train()
    before = checkpointing_state(checkpointed)
    assert checkpointing_on(checkpointed)
    for methods in (
        [GradSAM(), AttnLRP(), LeGrad(), RawAttention(), GradientXInput(), IntegratedGradients(), GAE()],
        [GradSAM(attention="sdpa")],  # the streamed pass on the model's sdpa attention
    ):
        ours = explain(checkpointed, sft_batch(), methods, modality=modality())
        reference = explain(plain, sft_batch(), methods, modality=modality())
        for name, expected in reference.items():
            assert torch.equal(ours[name].relevance, expected.relevance), name
            assert torch.isfinite(expected.relevance).all(), name
        assert checkpointing_state(checkpointed) == before
    assert all(p.grad is None for p in checkpointed.parameters())


class CheckpointedSFT(TinySFT):
    """The tiny SFT module with gradient checkpointing on (HF's default, reentrant)."""

    def __init__(self):
        super().__init__()
        self.model.gradient_checkpointing_enable()
        self.checkpointed_steps = 0

    def training_step(self, batch, batch_idx):
        self.checkpointed_steps += int(self.model.training and checkpointing_on(self.model))
        return super().training_step(batch, batch_idx)


def checkpointed_fit(tmp_path, precision: str, monitor=None):
    torch.manual_seed(0)
    module = CheckpointedSFT()
    trainer = quiet_trainer(pl, tmp_path, monitor, precision=precision)
    trainer.fit(module, *loaders())
    return module, trainer.optimizers[0].state_dict(), torch.rand(1)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_a_checkpointed_bf16_causal_lm_fit_trains_bit_identically_with_the_monitor(tmp_path, precision):
    monitor = ExplanationMonitor(
        explainers=[GradSAM(attention="sdpa"), AttnLRP(), LeGrad(), RawAttention(), Random()],
        metrics=[DeletionAUC(steps=2), Plausibility(kind="auprc")],
        num_samples=6,
        num_heatmaps=1,
        on_error="raise",
        write_files=False,
    )
    monitored, optimizer, draw = checkpointed_fit(tmp_path / "a", precision, monitor)
    plain, plain_optimizer, plain_draw = checkpointed_fit(tmp_path / "b", precision)
    expected_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert all(p.dtype == expected_dtype for p in monitored.parameters())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[key]), key
    for index, state in plain_optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optimizer["state"][index][name]), (index, name)
    assert torch.equal(draw, plain_draw)  # the global RNG continues as without the monitor
    assert checkpointing_state(monitored.model) == checkpointing_state(plain.model)
    assert monitored.checkpointed_steps == plain.checkpointed_steps == 4  # every step checkpointed: 2 epochs x 2
    assert checkpointing_on(monitored.model) and monitored.model.config._attn_implementation == "sdpa"
    assert sorted(monitor.history) == [0, 1]
    for epoch in (0, 1):
        logged = monitor.history[epoch]
        for method in ("grad_sam", "attn_lrp", "legrad", "raw_attention", "random"):
            for metric in ("deletion_auc", "auprc_plausibility"):
                value = logged.get(f"xai/{method}/{metric}")
                assert value is not None and math.isfinite(value), (precision, epoch, method, metric)
        assert not any(key.endswith("skipped_samples") for key in logged)


def bert_fit(tmp_path, tokenizer, monitor=None):
    pl.seed_everything(123)
    module = make_text_module_class(pl)(tokenizer)
    module.model.gradient_checkpointing_enable()
    train = torch.utils.data.DataLoader(text_dataset(32, seed=1), batch_size=8, shuffle=True, collate_fn=collate_text)
    val = torch.utils.data.DataLoader(text_dataset(16, seed=2), batch_size=8, collate_fn=collate_text)
    trainer = quiet_trainer(pl, tmp_path, monitor, precision="bf16-mixed")
    trainer.fit(module, train, val)
    return module, trainer.optimizers[0].state_dict(), torch.rand(1)


def test_a_checkpointed_bert_classifier_fit_trains_bit_identically_with_the_monitor(tmp_path, tokenizer):
    """Dropout on inside the checkpointed layers (the recomputation replays the RNG): still bit-identical."""
    monitor = ExplanationMonitor(
        explainers=[GradSAM(), AttnLRP(), GradientXInput(), Random()],
        metrics=[DeletionAUC(steps=2)],
        num_samples=8,
        num_heatmaps=0,
        on_error="raise",
        write_files=False,
    )
    monitored, optimizer, draw = bert_fit(tmp_path / "a", tokenizer, monitor)
    plain, plain_optimizer, plain_draw = bert_fit(tmp_path / "b", tokenizer)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[key]), key
    for index, state in plain_optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optimizer["state"][index][name]), (index, name)
    assert torch.equal(draw, plain_draw)
    assert checkpointing_state(monitored.model) == checkpointing_state(plain.model)
    assert checkpointing_on(monitored.model)
    for method in ("grad_sam", "attn_lrp", "gradient_x_input", "random"):
        assert math.isfinite(monitor.history[1][f"xai/{method}/deletion_auc"]), method
