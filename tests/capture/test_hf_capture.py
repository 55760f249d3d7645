import pytest
import torch
from helpers import FAMILIES, assert_same_snapshot, make_inputs, make_model, model_snapshot

from lightning_xai.capture import HFAttentionCapture, resolve_capture
from lightning_xai.errors import UnsupportedModelError


@pytest.mark.parametrize("family", FAMILIES)
def test_records_the_attention_eager_returns(family):
    model = make_model(family)
    inputs = make_inputs(family)
    capture = resolve_capture(model)
    assert isinstance(capture, HFAttentionCapture)
    with capture.record() as record:
        logits = model(**inputs).logits
    assert len(record.attentions) == 2
    assert all(a.requires_grad for a in record.attentions)  # live graph tensors
    # same values as HF's own eager path with output_attentions
    model.set_attn_implementation("eager")
    reference = model(**inputs, output_attentions=True)
    model.set_attn_implementation("sdpa")
    for ours, theirs in zip(record.attentions, reference.attentions, strict=True):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(logits, reference.logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_lies_on_the_path_to_the_logits(family):
    model = make_model(family)
    with resolve_capture(model).record() as record:
        logits = model(**make_inputs(family)).logits
    grads = torch.autograd.grad(logits[:, 0].sum(), record.attentions)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_restores_backend_mode_and_hooks_even_after_an_exception(family):
    model = make_model(family).train()
    model.classifier.eval()  # a deliberately frozen sub-module must stay in eval
    before = model_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with resolve_capture(model).record():
            model(**make_inputs(family))
            assert not model.training
            raise RuntimeError("boom")
    assert_same_snapshot(before, model_snapshot(model))
    assert model.config._attn_implementation == "sdpa"


def test_the_sdpa_forward_after_a_pass_is_unchanged():
    model = make_model("bert")
    inputs = make_inputs("bert")
    expected = model(**inputs).logits
    with resolve_capture(model).record():
        model(**inputs)
    torch.testing.assert_close(model(**inputs).logits, expected, rtol=0, atol=0)


def test_unsupported_model_error_lists_families_and_what_to_do():
    with pytest.raises(UnsupportedModelError) as info:
        resolve_capture(torch.nn.LSTM(4, 4))
    message = str(info.value)
    assert "torch.nn.modules.rnn.LSTM" in message
    for family in ("bert: BertForSequenceClassification", "roberta", "distilbert", "vit", "deit"):  # every family
        assert family in message
    assert "model_getter" in message


def test_records_inside_inference_mode_with_gradients_enabled():
    model = make_model("bert")
    with torch.inference_mode():
        inputs = make_inputs("bert")
        with torch.inference_mode(False), torch.enable_grad():
            cloned = {k: v.clone() for k, v in inputs.items()}
            with resolve_capture(model).record() as record:
                logits = model(**cloned).logits
            (grad,) = torch.autograd.grad(logits[:, 1].sum(), record.attentions[-1:])
    assert grad.shape == record.attentions[-1].shape


@pytest.mark.parametrize("family", FAMILIES)
def test_records_every_layer_output_with_hooks_removed_on_exit(family):
    model = make_model(family, layers=3)
    inputs = make_inputs(family)
    before = model_snapshot(model)
    with resolve_capture(model).record() as record:
        model(**inputs)
    assert_same_snapshot(before, model_snapshot(model))
    assert len(record.hidden_states) == 3 and all(h.requires_grad for h in record.hidden_states)
    reference = model(**inputs, output_hidden_states=True).hidden_states  # (embeddings, layer 1..3)
    for ours, theirs in zip(record.hidden_states, reference[1:], strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("architecture", ["deberta_v2", "mpnet"])
def test_module_hooks_record_what_output_attentions_returns_and_leave_the_model_as_it_was(architecture):
    """DeBERTa/MPNet: the recorded probabilities are the model's own (incl. relative-position terms); same logits."""
    import copy

    from lightning_xai.families import resolve_family

    model = make_model(architecture, num_labels=3)
    inputs = make_inputs(architecture, batch=3)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with torch.no_grad():
        plain = model(**inputs).logits
        reference = copy.deepcopy(model)  # output_attentions on a copy: it may leave transformers' hooks behind
        expected = reference(**inputs, output_attentions=True).attentions
        with resolve_family(model).capture().record() as record:
            logits = model(**inputs).logits
    assert len(record.attentions) == len(expected) == 2 and len(record.hidden_states) == 2
    for got, want in zip(record.attentions, expected, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
