"""Streamed Grad-SAM (``GradSAM(attention="sdpa")``): the pass on sdpa, each layer's maps rebuilt in row blocks.

Compared with the eager Grad-SAM (the recorded maps, itself checked against the explicit reference in
``test_grad_sam.py``) on every registered family, at several lengths, with padding and small blocks.
"""

import math

import pytest
import torch
from helpers import (
    REGISTERED_FAMILIES,
    assert_same_snapshot,
    left_padded,
    lightning_package,
    make_decoder_tokenizer,
    make_inputs,
    make_model,
    make_text_inputs,
    make_text_module_class,
    modality_for,
    model_snapshot,
    text_loaders,
    with_completion,
)
from transformers import AttentionInterface

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.capture.base import AttentionCall
from lightning_xai.capture.hf import STREAMING_IMPLEMENTATION, HFAttentionCapture
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.explainers import GradientXInput, GradSAM, Random, grad_sam, streamed_grad_sam
from lightning_xai.metrics import DeletionAUC
from lightning_xai.modalities import select

#: Families that cannot run a pass on sdpa keeping q, k, v (attention inside their own modules, windows, soft cap).
REFUSED = {"deberta_v2", "mpnet", "data2vec_vision", "swin", "gemma2"}


def assert_close_to(streamed: torch.Tensor, eager: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Within ``tolerance`` of the eager map's largest value (the maps' scale differs by orders between models)."""
    assert streamed.shape == eager.shape
    scale = float(eager.abs().max())
    assert scale > 0
    assert float((streamed - eager).abs().max()) <= tolerance * scale


def both(model, inputs, family, axis="query", chunk_size=None):
    modality = modality_for(family)
    eager = explain(model, inputs, [GradSAM(axis=axis)], modality=modality)["grad_sam"]
    streamed = explain(model, inputs, [GradSAM(axis=axis, attention="sdpa", chunk_size=chunk_size)],
                       modality=modality)["grad_sam"]
    return streamed, eager


def long_inputs(family: str, length: int, batch: int = 3) -> dict[str, torch.Tensor]:
    inputs = make_text_inputs(batch, seq=length, seed=length)  # rows of length T, T - 1, T - 2: padding
    return with_completion(inputs, length=3) if family == "llama_lm" else inputs


@pytest.mark.parametrize("axis", ["query", "key"])
@pytest.mark.parametrize("family", REGISTERED_FAMILIES)
def test_streamed_equals_eager_on_every_family_or_is_refused_at_setup(family, axis):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    if family in REFUSED:
        with pytest.raises(UnsupportedMethodError, match="sdpa attention keeping each call's q, k, v"):
            explain(model, inputs, [GradSAM(attention="sdpa")], modality=modality_for(family))
        return
    streamed, eager = both(model, inputs, family, axis, chunk_size=3)
    assert_close_to(streamed.relevance, eager.relevance)


@pytest.mark.parametrize("length", [8, 33, 64])
@pytest.mark.parametrize("family", ["llama", "llama_lm", "bert"])
def test_streamed_equals_eager_at_several_lengths(family, length):
    model = make_model(family, num_labels=3)
    inputs = long_inputs(family, length)
    for chunk_size in (None, 5):  # one block, and blocks that do not divide T
        for axis in ("query", "key"):
            streamed, eager = both(model, inputs, family, axis, chunk_size)
            assert_close_to(streamed.relevance, eager.relevance)
            assert torch.all(streamed.relevance[inputs["attention_mask"] == 0] == 0)  # padding gets exactly 0


@pytest.mark.parametrize("family", ["llama", "llama_lm"])
def test_left_padding_as_eager(family):
    model = make_model(family, num_labels=3)
    inputs = left_padded(long_inputs(family, 17, batch=4))
    streamed, eager = both(model, inputs, family, chunk_size=4)
    assert_close_to(streamed.relevance, eager.relevance)
    assert torch.all(streamed.relevance[inputs["attention_mask"] == 0] == 0)


@pytest.mark.parametrize("family", ["llama", "llama_lm", "bert"])
def test_batched_equals_per_sample(family):
    model = make_model(family, num_labels=3)
    inputs = long_inputs(family, 12, batch=4)
    explainer = [GradSAM(attention="sdpa", chunk_size=5)]
    batched = explain(model, inputs, explainer, modality=modality_for(family))["grad_sam"].relevance
    for row in range(4):
        single = select(inputs, slice(row, row + 1))
        length = int(single["attention_mask"].sum())
        single = {key: value[:, :length] for key, value in single.items()}
        alone = explain(model, single, explainer, modality=modality_for(family))["grad_sam"].relevance
        assert_close_to(batched[row, :length], alone[0])
        assert torch.all(batched[row, length:] == 0)


def test_the_pass_keeps_no_maps_and_one_backward_serves_gradient_x_input(monkeypatch):
    model = make_model("llama", num_labels=3)
    inputs = long_inputs("llama", 20)
    seen = {}

    class Spy(GradSAM):
        name = "spy"

        def explain(self, forward):
            seen["attentions"], seen["calls"] = len(forward.attentions), len(forward.attention_calls)
            return super().explain(forward)

    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    eager_gxi = explain(model, inputs, [GradientXInput()], modality=modality_for("llama"))["gradient_x_input"]
    monkeypatch.setattr(torch.autograd, "grad", counting)
    maps = explain(model, inputs, [Spy(attention="sdpa"), GradientXInput()], modality=modality_for("llama"))
    assert seen == {"attentions": 0, "calls": 2}  # two layers' q, k, v and outputs; no [B, H, T, T] map
    assert len(calls) == 1
    # gradient x input of the same pass ran on sdpa: equal to its eager value up to float rounding
    assert_close_to(maps["gradient_x_input"].relevance, eager_gxi.relevance)


def test_with_a_method_that_needs_the_maps_the_pass_records_them_and_both_agree_exactly():
    class Streamed(GradSAM):
        name = "grad_sam_sdpa"

    model = make_model("llama", num_labels=3)
    maps = explain(model, long_inputs("llama", 10), [GradSAM(), Streamed(attention="sdpa")],
                   modality=modality_for("llama"))
    assert torch.equal(maps["grad_sam"].relevance, maps["grad_sam_sdpa"].relevance)


def test_default_grad_sam_is_untouched_by_the_option():
    assert GradSAM().requirements() == frozenset({"attention_gradients"})
    assert repr(GradSAM()) == "GradSAM(axis='query')"
    assert GradSAM(attention="sdpa").requirements() == frozenset({"attention_outputs"})


@pytest.mark.parametrize("family", ["llama", "llama_lm", "bert"])
def test_model_rng_and_gradients_untouched_and_restored_after_an_exception(family):
    model = make_model(family, num_labels=3).train()
    inputs = long_inputs(family, 9)
    before = model_snapshot(model)
    rng = torch.get_rng_state()
    explain(model, inputs, [GradSAM(attention="sdpa")], modality=modality_for(family))
    assert_same_snapshot(before, model_snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())

    class Boom(GradSAM):
        name = "boom"

        def explain(self, forward):
            forward.attention_output_gradients()
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        explain(model, inputs, [Boom(attention="sdpa")], modality=modality_for(family))
    assert_same_snapshot(before, model_snapshot(model))
    assert model.config._attn_implementation == "sdpa"


def test_a_soft_capped_attention_is_refused_at_setup_and_at_run_time_with_the_model_restored():
    gemma2 = make_model("gemma2", num_labels=3)  # soft-capped attention logits; transformers: no sdpa either
    with pytest.raises(UnsupportedMethodError, match="soft-caps the logits"):
        explain(gemma2, long_inputs("gemma2", 8), [GradSAM(attention="sdpa")], modality=modality_for("gemma2"))
    model = make_model("llama", num_labels=3)
    before = model_snapshot(model)
    attention = model.model.layers[0].self_attn
    q, k, v = torch.randn(1, 4, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    function = AttentionInterface()[STREAMING_IMPLEMENTATION]
    with pytest.raises(LightningXAIError, match="softcap"), HFAttentionCapture(model).stream():
        function(attention, q, k, v, None, scaling=0.5, softcap=30.0)  # what a soft-capping model would pass
    assert_same_snapshot(before, model_snapshot(model))


def test_an_attention_that_is_not_a_masked_softmax_is_refused():
    q, k, v = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3)
    output = ((q @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2)
    valid = torch.ones(1, 4, dtype=torch.bool)
    gradient = torch.randn_like(output)
    fine = AttentionCall(q, k, v, mask=None, causal=False, scaling=1.0, output=output)
    assert streamed_grad_sam([fine], [gradient], valid).shape == (1, 4)
    sinks = AttentionCall(q, k, v, mask=None, causal=False, scaling=1.0, output=0.9 * output)  # e.g. attention sinks
    with pytest.raises(LightningXAIError, match="not softmax"):
        streamed_grad_sam([sinks], [gradient], valid)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="'eager' or 'sdpa'"):
        GradSAM(attention="flash")
    with pytest.raises(ValueError, match="chunk_size"):
        GradSAM(chunk_size=8)  # only with attention="sdpa"
    with pytest.raises(ValueError, match="chunk_size"):
        GradSAM(attention="sdpa", chunk_size=0)


def test_the_monitor_runs_streamed_grad_sam_and_training_is_unchanged(tmp_path):
    pl = lightning_package("lightning.pytorch")
    module_class = make_text_module_class(pl)

    def fit(monitor=None):
        torch.manual_seed(0)
        module = module_class(make_decoder_tokenizer(), family="llama")
        trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[monitor] if monitor else [],
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             default_root_dir=str(tmp_path), num_sanity_val_steps=0)
        trainer.fit(module, *text_loaders())
        return module, torch.rand(1)

    def monitor(attention):
        return ExplanationMonitor(explainers=[GradSAM(attention=attention), Random()], metrics=[DeletionAUC(steps=4)],
                                  num_samples=6, num_heatmaps=0, on_error="raise", write_files=False)

    streamed, eager = monitor("sdpa"), monitor("eager")
    monitored, draw = fit(streamed)
    plain, plain_draw = fit()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[key]), key
    assert torch.equal(draw, plain_draw)
    fit(eager)
    value = streamed.history[0].get("xai/grad_sam/deletion_auc")
    assert value is not None and math.isfinite(value)
    assert value == pytest.approx(eager.history[0]["xai/grad_sam/deletion_auc"], abs=1e-6)  # the same rankings


@pytest.mark.parametrize("family", ["llama", "llama_lm", "bert"])
def test_under_bf16_autocast_the_blocks_run_in_float32_and_stay_close_to_the_float32_map(family):
    model = make_model(family, num_labels=3)
    inputs = long_inputs(family, 40)
    full = explain(model, inputs, [GradSAM()], modality=modality_for(family))["grad_sam"].relevance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = explain(model, inputs, [GradSAM(attention="sdpa")], modality=modality_for(family))["grad_sam"]
    assert_close_to(mixed.relevance, full, tolerance=2e-2)  # measured once: at most 1.1e-2 (eager under bf16: 5.1e-3)


@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("rows", [1, 5])
def test_functional_with_masks_broadcast_over_rows_or_not_equals_the_maps(kind, rows):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 3), torch.randn(2, 2, 5, 3), torch.randn(2, 2, 5, 3)  # 4 query heads, 2 kv heads
    keep = torch.rand(2, 1, rows, 5) > 0.3
    keep[..., 0] = True  # every row attends somewhere
    mask = keep if kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    expanded_k, expanded_v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    logits = (q @ expanded_k.transpose(-1, -2) * 0.7).masked_fill(~keep, torch.finfo(torch.float32).min)
    attention = logits.softmax(-1)
    output = (attention @ expanded_v).transpose(1, 2)
    gradient = torch.randn_like(output)
    maps_gradient = gradient.transpose(1, 2) @ expanded_v.transpose(-1, -2)
    valid = torch.tensor([[True] * 5, [True] * 4 + [False]])
    call = AttentionCall(q, k, v, mask=mask, causal=False, scaling=0.7, output=output)
    for axis in ("query", "key"):
        expected = grad_sam([attention], [maps_gradient], valid, axis)
        torch.testing.assert_close(streamed_grad_sam([call], [gradient], valid, axis, chunk_size=2), expected)
