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
