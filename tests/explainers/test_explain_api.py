"""lightning_xai.explain's conveniences: methods by name, modality built by the family, clear refusals."""

import pytest
import torch
from helpers import make_image_inputs, make_model, make_text_inputs, make_tokenizer, text_modality

from lightning_xai import explain
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers import GradSAM


def test_names_and_inferred_text_modality_equal_explicit_objects():
    model = make_model("bert")
    inputs = make_text_inputs(batch=3)
    explicit = explain(model, inputs, [GradSAM()], modality=text_modality())["grad_sam"]
    named = explain(model, inputs, "grad_sam", tokenizer=make_tokenizer())["grad_sam"]
    torch.testing.assert_close(named.relevance, explicit.relevance, rtol=0, atol=0)
    assert torch.equal(named.valid_mask, explicit.valid_mask)


def test_vision_modality_needs_no_tokenizer():
    maps = explain(make_model("vit"), make_image_inputs(batch=2), ["grad_sam", "random"], modality="vision")
    assert set(maps) == {"grad_sam", "random"}


def test_text_model_without_tokenizer_says_what_to_pass():
    with pytest.raises(LightningXAIError, match="tokenizer="):
        explain(make_model("bert"), make_text_inputs(batch=2), ["grad_sam"])


def test_wrong_modality_name_is_refused():
    with pytest.raises(ValueError, match="modality='text'"):
        explain(make_model("bert"), make_text_inputs(batch=2), ["grad_sam"], modality="vision")


def test_missing_class_index_is_refused_before_any_forward():
    with pytest.raises(ValueError, match="target=2 is not a class"):
        explain(make_model("bert", num_labels=2), make_text_inputs(batch=2), ["grad_sam"], target=2,
                modality=text_modality())


def _refuse_recording(monkeypatch):
    """Make any recorded (eager, T x T maps) shared pass fail loudly."""
    from lightning_xai.capture.hf import HFAttentionCapture

    def record(self):
        raise AssertionError("the eager maps were recorded although no method of the call reads them")

    monkeypatch.setattr(HFAttentionCapture, "record", record)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_methods_that_read_no_maps_never_record_them_and_equal_the_recorded_pass(kind, monkeypatch):
    """Issue 13: gradient x input, LRP and IG run their shared pass on sdpa (memory ~ T); values equal the eager one."""
    from lightning_xai.explainers import AttnLRP, GradientXInput, IntegratedGradients, RawAttention

    model = make_model(kind)
    inputs = make_text_inputs(batch=3)
    methods = [GradientXInput(), AttnLRP(), IntegratedGradients(steps=4)]
    recorded = explain(model, inputs, [*methods, RawAttention()], modality=text_modality())  # maps recorded
    _refuse_recording(monkeypatch)
    streamed = explain(model, inputs, methods, modality=text_modality())
    for method in ("gradient_x_input", "attn_lrp", "integrated_gradients"):
        scale = recorded[method].relevance.abs().amax().item()
        torch.testing.assert_close(streamed[method].relevance, recorded[method].relevance, rtol=0,
                                   atol=1e-5 * scale)
        assert torch.equal(streamed[method].target, recorded[method].target)


def test_an_undeclared_gradient_gets_a_clear_error():
    """A custom explainer that differentiates the shared pass must say so in `needs` (else the pass has no graph)."""
    from lightning_xai.explainers.base import Explainer

    class Undeclared(Explainer):
        name = "undeclared"
        needs = frozenset({"attentions"})

        def explain(self, forward):
            return torch.autograd.grad(forward.target_score, forward.attentions[0])[0].sum(dim=(1, 2))

    class Declared(Undeclared):
        name = "declared"
        needs = frozenset({"attention_gradients"})

    model, inputs = make_model("bert"), make_text_inputs(batch=2)
    with pytest.raises(LightningXAIError, match="declares one of 'attention_gradients'"):
        explain(model, inputs, [Undeclared()], modality=text_modality())
    assert explain(model, inputs, [Declared()], modality=text_modality())["declared"].relevance.shape[0] == 2


def test_a_pass_on_sdpa_chosen_to_save_memory_falls_back_to_the_recorded_pass(monkeypatch):
    """Where the model's attention needs what only the recorded pass keeps (soft-capping, sinks, a position bias),
    methods that did not ask for sdpa get the recorded pass; a method that asked for it gets the error."""
    from lightning_xai.capture import hf
    from lightning_xai.errors import UnstreamableAttentionError
    from lightning_xai.explainers import GradientXInput

    model, inputs = make_model("llama"), make_text_inputs(batch=2)
    expected = explain(model, inputs, [GradientXInput()], modality=text_modality())["gradient_x_input"]

    def unstreamable(module, *args, **kwargs):
        raise UnstreamableAttentionError(f"The attention of {type(module).__name__} uses softcap")

    monkeypatch.setattr(hf, "_streaming_attention", unstreamable)
    monkeypatch.setitem(hf.AttentionInterface._global_mapping, hf.STREAMING_IMPLEMENTATION, unstreamable)
    fallback = explain(model, inputs, [GradientXInput()], modality=text_modality())["gradient_x_input"]
    scale = expected.relevance.abs().amax().item()
    torch.testing.assert_close(fallback.relevance, expected.relevance, rtol=0, atol=1e-5 * scale)
    with pytest.raises(UnstreamableAttentionError, match="softcap"):
        explain(model, inputs, [GradSAM(attention="sdpa")], modality=text_modality())


def test_ragged_parts_without_a_mask_are_collated_with_one_so_padding_is_never_attended():
    """Probe parts of different widths without attention_mask: the padded row's map equals the row alone."""
    from helpers import make_model, modality_for

    from lightning_xai.explainers import GradientXInput

    model, text = make_model("bert"), modality_for("bert")
    long, short = {"input_ids": torch.tensor([[2, 7, 9, 11, 3]])}, {"input_ids": torch.tensor([[2, 8, 3]])}
    batch = text.collate([long, short])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    together = explain(model, batch, [GradientXInput()], modality=text)["gradient_x_input"].relevance
    alone = explain(model, short, [GradientXInput()], modality=text)["gradient_x_input"].relevance
    assert torch.allclose(together[1, :3], alone[0], atol=1e-5) and not together[1, 3:].any()
