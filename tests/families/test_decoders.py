"""Decoder families (generic HF decoders and GPT-2): what is decoder-specific, checked against references."""

import pytest
import torch
from helpers import DECODERS, left_padded, make_decoder_tokenizer, make_inputs, make_model, modality_for
from reference.attention import raw_attention_reference, rollout_reference, unpadded_row
from reference.gae import gae_reference

from lightning_xai import explain
from lightning_xai.explainers import GAE, GradSAM, LeGrad, RawAttention, Rollout
from lightning_xai.explainers.lrp import cp_lrp
from lightning_xai.families import resolve_family
from lightning_xai.modalities import TextModality

ROPE_DECODERS = [name for name in DECODERS if name != "gpt2"]  # relative positions: left padding is a no-op


@pytest.mark.parametrize("architecture", DECODERS)
def test_attention_row_methods_read_the_last_real_token(architecture):
    """Raw attention, rollout and GAE read the row the head pools (the last non-pad token), as the references do."""
    model = make_model(architecture, num_labels=3)
    inputs = make_inputs(architecture, batch=3)
    maps = explain(model, inputs, [RawAttention(), Rollout(), GAE()], modality=modality_for(architecture))
    for row in range(3):
        single = unpadded_row(inputs, row)
        last = single["input_ids"].shape[1] - 1
        torch.testing.assert_close(maps["raw_attention"].relevance[row, : last + 1],
                                   raw_attention_reference(model, single, last))
        torch.testing.assert_close(maps["rollout"].relevance[row, : last + 1], rollout_reference(model, single, last))
        target = int(maps["gae"].target[row])
        torch.testing.assert_close(maps["gae"].relevance[row, : last + 1], gae_reference(model, single, target, last),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture", DECODERS)
def test_raw_attention_on_a_decoder_is_not_one_hot(architecture):
    """Row 0 of a causal model attends only to itself: reading it (the old [CLS] assumption) gave one-hot maps."""
    model = make_model(architecture, num_labels=3)
    inputs = make_inputs(architecture, batch=3)
    relevance = explain(model, inputs, [RawAttention()], modality=modality_for(architecture))["raw_attention"].relevance
    nonzero = (relevance > 0).sum(dim=1)
    assert torch.all(nonzero == inputs["attention_mask"].sum(dim=1))  # every real token gets attention


@pytest.mark.parametrize("architecture", ROPE_DECODERS)
def test_left_and_right_padding_give_the_same_maps(architecture):
    model = make_model(architecture, num_labels=3)
    right = make_inputs(architecture, batch=4)
    left = left_padded(right)
    family = resolve_family(model)
    assert family.prediction_rows(left, left["attention_mask"].bool()).tolist() == [8, 8, 8, 8]
    methods = [GradSAM(), RawAttention(), Rollout(), GAE(), LeGrad()]
    on_right = explain(model, right, methods, modality=modality_for(architecture))
    on_left = explain(model, left, methods, modality=modality_for(architecture))
    mask = right["attention_mask"].bool()
    for name in on_right:
        a = on_right[name].relevance[mask]
        b = on_left[name].relevance[left["attention_mask"].bool()]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "qwen3", "mistral", "gemma", "phi3", "gpt2"])
def test_cp_lrp_is_conservative_without_biases(architecture):
    """Biases zeroed: the relevance at the embeddings sums to the explained logit (RMSNorm/LN, gated MLP, GQA)."""
    model = make_model(architecture, num_labels=3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "bias", None), torch.nn.Parameter):
                module.bias.zero_()
    inputs = make_inputs(architecture, batch=3)
    with torch.no_grad():
        logits = model(**inputs).logits
    relevance = cp_lrp(model, inputs, 1)
    torch.testing.assert_close(relevance.sum(dim=1), logits[:, 1], rtol=1e-5, atol=1e-6)


def test_a_decoder_tokenizer_without_a_mask_token_removes_through_the_attention_mask():
    tokenizer = make_decoder_tokenizer()
    assert tokenizer.mask_token_id is None
    modality = resolve_family(make_model("llama")).build_modality(tokenizer)
    assert isinstance(modality, TextModality) and modality.removal == "attention"
    removed = modality.remove(make_inputs("llama", batch=1), torch.tensor([[False, True] + [False] * 7]))
    assert removed["attention_mask"][0, :3].tolist() == [1, 0, 1]
    with pytest.raises(Exception, match="no mask token: use removal='attention'"):
        modality.variant("replace")


@pytest.mark.parametrize("rule", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_lrp_on_decoders_matches_the_explicit_float64_reference(architecture, rule):
    """Layer by layer in float64 (RMSNorm/LN, RoPE, GQA, gated MLP, Conv1D, causal softmax): ours == the reference."""
    from reference.lrp_decoder import decoder_lrp_reference

    from lightning_xai.explainers.lrp import lrp

    model = make_model(architecture, num_labels=3)
    inputs = make_inputs(architecture, batch=3)
    got = lrp(model, inputs, 1, rule=rule, epsilon=1e-6)
    for row in range(3):
        single = unpadded_row(inputs, row)
        expected, _ = decoder_lrp_reference(model, single["input_ids"], 1, rule, eps=1e-6)
        scale = float(expected.abs().max())
        torch.testing.assert_close(got[row, : expected.shape[0]], expected, rtol=1e-3, atol=1e-3 * scale)
        assert torch.all(got[row, expected.shape[0]:] == 0)


def test_the_monitor_removes_decoder_tokens_out_of_the_box_and_refuses_replace_with_what_to_do(tmp_path):
    from types import SimpleNamespace

    from helpers import lightning_package, make_text_module_class

    from lightning_xai import ExplanationMonitor
    from lightning_xai.errors import LightningXAIError

    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(make_decoder_tokenizer(), family="llama")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], log_dir=None, default_root_dir=str(tmp_path),
                              datamodule=None, strategy=None)
    monitor = ExplanationMonitor(write_files=False)
    monitor.setup(trainer, module, "fit")
    assert monitor._modality.removal == "attention"
    with pytest.raises(LightningXAIError, match="has no mask token.*Pass removal='attention'"):
        ExplanationMonitor(removal="replace", write_files=False).setup(trainer, module, "fit")
    chosen = ExplanationMonitor(removal="delete", write_files=False)
    chosen.setup(trainer, module, "fit")
    assert chosen._modality.removal == "delete"


def test_attention_mask_removal_on_a_decoder_warns_at_setup_what_it_cannot_remove(tmp_path):
    """The read-out token's own row still reads its embedding: said once at setup, per family, not left silent."""
    from types import SimpleNamespace

    from helpers import lightning_package, make_text_module_class

    from lightning_xai import ExplanationMonitor
    from lightning_xai.metrics import AOPCComprehensiveness, DeletionAUC, Plausibility

    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(make_decoder_tokenizer(), family="llama")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], log_dir=None, default_root_dir=str(tmp_path),
                              datamodule=None, strategy=None)
    metrics = [DeletionAUC(), AOPCComprehensiveness(), Plausibility()]
    with pytest.warns(UserWarning, match=r"deletion_auc, aopc_comprehensiveness on a 'decoder' model: removal "
                                         r"through the attention mask cannot take out the last real token"):
        ExplanationMonitor(metrics=metrics, write_files=False).setup(trainer, module, "fit")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a removal that replaces ids, or no removal metric: nothing to say
        ExplanationMonitor(metrics=[DeletionAUC()], removal="delete", write_files=False).setup(trainer, module, "fit")
        ExplanationMonitor(metrics=[Plausibility()], write_files=False).setup(trainer, module, "fit")
    from test_causal_lm import tiny_lm

    from lightning_xai.families import explainable_model

    decoder = resolve_family(make_model("llama"))
    assert decoder.removal_caveat("unk") is None and "last real token" in decoder.removal_caveat("attention")
    causal_lm = resolve_family(explainable_model(tiny_lm()))
    assert causal_lm.name == "causal_lm" and "last prompt token" in causal_lm.removal_caveat("attention")
