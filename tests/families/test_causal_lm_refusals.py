"""Causal LMs that cannot be explained, and batches that cannot be: refused before any explanation, saying what to do.

A generative decoder whose output embedding is not a linear ``lm_head`` (none, wrapped, custom) is refused when its
family is resolved (the monitor's ``setup``, ``explain``); a causal-LM validation batch without token labels
disables the monitor at the first validation batch, before any explanation, and training goes on.
"""

import warnings

import pytest
import torch
from helpers import quiet_trainer
from test_causal_lm import TinySFT, loaders, modality, pl, retrieval_rows, sft_batch, tiny_lm

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.errors import BatchFormatError, UnsupportedModelError
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.families import CompletionScorer, explainable_model, resolve_family
from lightning_xai.families.causal_lm import head_refusal
from lightning_xai.metrics import DeletionAUC


class WrappedHead(torch.nn.Module):
    """A head that is not an ``nn.Linear`` (as a custom or quantised head would be)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, hidden):
        return self.linear(hidden)


def without_linear_head(kind: str):
    lm = tiny_lm()
    lm.lm_head = WrappedHead(lm.lm_head) if kind == "wrapped" else None
    return lm


@pytest.mark.parametrize("kind", ["wrapped", "none"])
def test_a_causal_lm_without_a_linear_lm_head_is_refused_before_any_forward(kind):
    lm = without_linear_head(kind)
    found = "a WrappedHead, not a torch.nn.Linear" if kind == "wrapped" else "None (no lm_head)"
    calls = []
    lm.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(UnsupportedModelError) as error:
        resolve_family(explainable_model(lm))
    message = str(error.value)
    assert "LlamaForCausalLM is a generative decoder" in message and found in message
    assert "What to do" in message and "lm_head" in message
    with pytest.raises(UnsupportedModelError, match="What to do"):
        explain(lm, sft_batch(), [GradSAM()], modality=modality())
    with pytest.raises(TypeError, match="What to do"):
        CompletionScorer(lm)
    assert not calls  # refused before any forward
    assert head_refusal(tiny_lm()) is None and head_refusal(tiny_lm().model) is None  # linear head; no generation


def test_the_monitor_refuses_a_causal_lm_without_a_linear_lm_head_at_setup(tmp_path):
    class Custom(TinySFT):
        def __init__(self):
            super().__init__()
            self.model.lm_head = WrappedHead(self.model.lm_head)
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            return super().training_step(batch, batch_idx)

    module = Custom()
    monitor = ExplanationMonitor(explainers=[GradSAM()], num_samples=3, write_files=False)  # on_error="warn"
    trainer = quiet_trainer(pl, tmp_path, monitor, max_epochs=1)
    with pytest.raises(UnsupportedModelError, match="WrappedHead.*What to do"):
        trainer.fit(module, *loaders())
    assert module.steps == 0  # refused at setup, before the first training step


class UnlabelledValidation(TinySFT):
    """Validation batches carry no labels (the validation step computes no loss)."""

    def validation_step(self, batch, batch_idx):
        self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def unlabelled_fit(tmp_path, monitor=None):
    def collate(rows):
        return {key: torch.stack([row[key] for row in rows]) for key in ("input_ids", "attention_mask")}

    torch.manual_seed(0)
    module = UnlabelledValidation()
    train, _ = loaders()
    val = torch.utils.data.DataLoader(retrieval_rows(6, 1), batch_size=3, collate_fn=collate)
    trainer = quiet_trainer(pl, tmp_path, monitor)
    trainer.fit(module, train, val)
    return module, torch.rand(1)


class Spy(Random):
    name = "spy"
    calls = 0

    def explain(self, forward):
        Spy.calls += 1
        return super().explain(forward)


def test_a_causal_lm_batch_without_labels_disables_the_monitor_before_any_explanation(tmp_path):
    Spy.calls = 0
    monitor = ExplanationMonitor(explainers=[GradSAM(), Spy()], metrics=[DeletionAUC(steps=2)], num_samples=6,
                                 write_files=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitored, draw = unlabelled_fit(tmp_path / "a", monitor)
    messages = [str(w.message) for w in caught if "ExplanationMonitor is disabled" in str(w.message)]
    assert len(messages) == 1, messages  # warned once
    assert "found no labels" in messages[0] and "What to do" in messages[0] and "batch_adapter" in messages[0]
    assert Spy.calls == 0 and monitor.history == {}  # nothing explained, nothing logged
    plain, plain_draw = unlabelled_fit(tmp_path / "b")  # training went on, unchanged
    for key, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[key]), key
    assert torch.equal(draw, plain_draw)
    strict = ExplanationMonitor(explainers=[Spy()], num_samples=6, write_files=False, on_error="raise")
    with pytest.raises(BatchFormatError, match="What to do"):
        unlabelled_fit(tmp_path / "c", strict)
    assert Spy.calls == 0
