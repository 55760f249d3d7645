"""Zero-shot CLIP: a CLIPModel and prompts as an image classifier whose logits are CLIP's image-text similarities."""

import pytest
import torch
import transformers
from helpers import assert_same_snapshot, make_image_inputs, make_model, model_snapshot

from lightning_xai import explain
from lightning_xai.errors import UnsupportedModelError
from lightning_xai.families import CLIPZeroShotClassifier, resolve_family


def _clip_and_prompts():
    classifier = make_model("clip_zero_shot", num_labels=3)
    clip = classifier._clip
    # prompts of different lengths: padded, pooled at each prompt's own end-of-text token
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 11, 12, 13, 14, 3], [2, 5, 3, 0, 0, 0]])
    return clip, {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_logits_are_clips_image_text_similarities():
    clip, prompts = _clip_and_prompts()
    clip_labels = dict(clip.config.id2label)
    classifier = CLIPZeroShotClassifier(clip, prompts, labels=["cat", "dog", "car"])
    pixels = make_image_inputs(batch=4)["pixel_values"]
    with torch.no_grad():
        expected = clip(pixel_values=pixels, **prompts).logits_per_image
        torch.testing.assert_close(classifier(pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-6)
    assert classifier.config.num_labels == 3 and classifier.config.id2label[1] == "dog"
    assert clip.config.id2label == clip_labels  # the CLIP model's own config is untouched
    assert resolve_family(classifier).name == "clip_zero_shot"


def test_prompt_embeddings_follow_the_text_tower_during_fine_tuning():
    clip, prompts = _clip_and_prompts()
    classifier = CLIPZeroShotClassifier(clip, prompts)
    first = classifier.text_embeddings()
    assert classifier.text_embeddings() is first  # cached while the weights stay
    with torch.no_grad():
        clip.text_projection.weight.mul_(-1.0)  # an in-place update, as an optimizer step makes
    updated = classifier.text_embeddings()
    torch.testing.assert_close(updated, -first)


def test_explaining_touches_the_vision_side_only():
    clip, prompts = _clip_and_prompts()
    classifier = CLIPZeroShotClassifier(clip, prompts)
    clip.train()  # as during fine-tuning: the text tower's mode must survive
    before = model_snapshot(clip)
    text_backend = clip.config.text_config._attn_implementation
    family = resolve_family(classifier)
    inputs = make_image_inputs(batch=2)
    with family.capture().record() as record:
        classifier(**inputs)
    assert len(record.attentions) == clip.config.vision_config.num_hidden_layers  # no text-tower attention
    maps = explain(classifier, inputs, ["grad_sam", "legrad", "cp_lrp", "attn_lrp"], modality="vision")
    assert all(torch.isfinite(m.relevance).all() and (m.relevance != 0).any() for m in maps.values())
    assert_same_snapshot(before, model_snapshot(clip))
    assert clip.config.text_config._attn_implementation == text_backend


def test_bad_arguments_say_what_to_pass():
    clip, prompts = _clip_and_prompts()
    with pytest.raises(TypeError, match="CLIPModel"):
        CLIPZeroShotClassifier(clip.vision_model, prompts)
    with pytest.raises(ValueError, match="input_ids"):
        CLIPZeroShotClassifier(clip, {"attention_mask": prompts["attention_mask"]})
    with pytest.raises(ValueError, match="one label per prompt"):
        CLIPZeroShotClassifier(clip, prompts, labels=["cat"])


def test_a_bare_clip_model_is_refused_with_the_wrapper_to_use():
    clip, _ = _clip_and_prompts()
    with pytest.raises(UnsupportedModelError, match="CLIPZeroShotClassifier"):
        resolve_family(clip)


def test_longformer_is_refused_with_its_reason():
    config = transformers.LongformerConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=24, vocab_size=50, attention_window=4,
                                           max_position_embeddings=64, pad_token_id=0)
    with pytest.raises(UnsupportedModelError, match="sliding-window") as error:
        resolve_family(transformers.LongformerForSequenceClassification(config))
    assert "What to do" in str(error.value)
