"""Swin: Grad-SAM computed inside the attention windows and mapped back onto the input patch grid."""

import pytest
import torch
from helpers import assert_same_snapshot, model_snapshot
from reference.swin_grad_sam import swin_grad_sam_reference
from transformers import SwinConfig, SwinForImageClassification

from lightning_xai import explain
from lightning_xai.errors import UnsupportedMethodError
from lightning_xai.families import resolve_family


def _swin() -> SwinForImageClassification:
    # a 10 x 10 patch grid, windows of 4: padded windows and a cyclic shift in both stages, the second on the 5 x 5
    # grid of merged tokens (transformers cannot shrink a window below its relative-position table: no third stage)
    config = SwinConfig(image_size=40, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 4],
                        window_size=4, num_labels=3, initializer_range=0.2)
    torch.manual_seed(0)
    return SwinForImageClassification(config).eval()


def test_windowed_grad_sam_equals_the_coordinate_reference():
    model = _swin()
    pixels = torch.randn(3, 3, 40, 40)
    before = model_snapshot(model)
    maps = explain(model, {"pixel_values": pixels}, ["grad_sam"], modality="vision", target=1)["grad_sam"]
    assert maps.relevance.shape == (3, 100)
    for row in range(3):
        expected = swin_grad_sam_reference(model, pixels[row : row + 1], target=1)
        torch.testing.assert_close(maps.relevance[row], expected, rtol=1e-4, atol=1e-9)
    assert (maps.relevance > 0).all()
    assert_same_snapshot(before, model_snapshot(model))


def test_batched_equals_one_image_at_a_time():
    model = _swin()
    pixels = torch.randn(4, 3, 40, 40)
    batched = explain(model, {"pixel_values": pixels}, ["grad_sam"], modality="vision")["grad_sam"].relevance
    for row in range(4):
        single = explain(model, {"pixel_values": pixels[row : row + 1]}, ["grad_sam"], modality="vision")
        torch.testing.assert_close(batched[row], single["grad_sam"].relevance[0], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["raw_attention", "rollout", "gae", "attention_shapley", "legrad"])
def test_methods_that_need_one_token_axis_are_refused(method):
    with pytest.raises(UnsupportedMethodError, match="swin"):
        explain(_swin(), {"pixel_values": torch.randn(1, 3, 40, 40)}, [method], modality="vision")
    assert resolve_family(_swin()).refusal("grad_sam", frozenset({"attention_gradients"})) is None
