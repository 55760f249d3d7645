"""Model families: one file per family plus one :func:`register_family` line here.

Example:
    >>> list(list_families())  # doctest: +NORMALIZE_WHITESPACE
    ['bert', 'roberta', 'distilbert', 'electra', 'albert', 'modernbert', 'deberta_v2', 'mpnet', 'vit',
     'deit_with_teacher', 'deit', 'beit', 'dinov2', 'data2vec_vision', 'swin', 'clip_vision', 'clip_zero_shot',
     'decoder', 'gpt2', 'causal_lm', 'generic']
"""

from __future__ import annotations

from torch import nn

from lightning_xai._registry import Registry
from lightning_xai.errors import UnsupportedModelError
from lightning_xai.families.albert import AlbertFamily
from lightning_xai.families.base import CAPABILITIES, ENCODER_LRP_RULES, LRPRule, ModelFamily
from lightning_xai.families.beit import BeitFamily
from lightning_xai.families.bert import BertFamily
from lightning_xai.families.causal_lm import (
    CausalLMFamily,
    CompletionScorer,
    explainable_model,
    head_refusal,
    is_causal_lm,
)
from lightning_xai.families.clip import ClipVisionFamily, CLIPZeroShotClassifier, ClipZeroShotFamily
from lightning_xai.families.data2vec_vision import Data2VecVisionFamily
from lightning_xai.families.deberta import DebertaV2Family
from lightning_xai.families.decoder import DecoderFamily
from lightning_xai.families.deit import DeiTFamily, DeiTWithTeacherFamily
from lightning_xai.families.dinov2 import Dinov2Family
from lightning_xai.families.distilbert import DistilBertFamily
from lightning_xai.families.electra import ElectraFamily
from lightning_xai.families.encoders import TextEncoderFamily, VisionEncoderFamily
from lightning_xai.families.generic import GenericFamily
from lightning_xai.families.gpt2 import GPT2Family
from lightning_xai.families.modernbert import ModernBertFamily
from lightning_xai.families.mpnet import MPNetFamily
from lightning_xai.families.peft_models import unwrap_peft
from lightning_xai.families.roberta import RobertaFamily
from lightning_xai.families.swin import SwinFamily
from lightning_xai.families.vit import ViTFamily

_FAMILIES: Registry[type[ModelFamily]] = Registry("model family", "model families")


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Register a family class under ``cls.name`` (usable as a class decorator); earlier ones are tried first."""
    return _FAMILIES.register(cls)


def list_families() -> dict[str, type[ModelFamily]]:
    """Registered families by name, in resolution order."""
    return _FAMILIES.items()


def resolve_family(model: nn.Module) -> ModelFamily:
    """The family of ``model``, bound to it; raises :class:`UnsupportedModelError` listing the families.

    Example:
        >>> import torch
        >>> resolve_family(torch.nn.Linear(2, 2))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lightning_xai.errors.UnsupportedModelError: ...
    """
    model = unwrap_peft(model)  # a PEFT wrapper (LoRA, ...): its base model, adapters active
    if is_causal_lm(model):
        raise UnsupportedModelError(
            f"A {type(model).__name__} is a causal language model: it is explained for the completion of an SFT batch "
            "through lightning_xai.families.CompletionScorer(model) (ExplanationMonitor and lightning_xai.explain "
            "wrap it themselves; the batch must keep its labels, -100 on the prompt)."
        )
    refusal = head_refusal(model) or _known_refusal(model)  # a generative decoder without a linear lm_head
    if refusal is not None:
        raise UnsupportedModelError(refusal)
    for cls in _FAMILIES.items().values():
        if cls.matches(model):
            family = cls(model)
            if not family.capture_class.supports(model):
                raise UnsupportedModelError(
                    f"{type(model).__name__} belongs to the {cls.name!r} family, but its attention cannot be "
                    f"recorded ({family.capture_class.family} capture): use a model built with transformers>=5 "
                    "whose attention goes through the AttentionInterface (`model.set_attn_implementation` must work)."
                )
            return family
    families = "\n  - ".join(f"{cls.name}: {cls.examples}" for cls in _FAMILIES.items().values())
    raise UnsupportedModelError(
        f"lightning_xai has no model family for a {type(model).__module__}.{type(model).__qualname__}.\n"
        f"Supported model families:\n  - {families}\n"
        "What to do: pass `model_getter=` to ExplanationMonitor so it returns the inner HF transformers model "
        "(for example `lambda module: module.backbone`), or describe your model in a new family file "
        "(lightning_xai/families/, one file + one register_family line; see docs/architecture.md)."
    )


#: transformers model classes known NOT to be explainable here -> (why, what to do); checked before the families.
KNOWN_UNSUPPORTED: dict[str, tuple[str, str]] = {
    "CLIPModel": (
        "its output is an image-text similarity matrix (logits_per_image [images, texts]), not one logit per class",
        "wrap it with its class prompts: lightning_xai.families.CLIPZeroShotClassifier(model, tokenizer(prompts, "
        "padding=True, return_tensors='pt'), labels=...) and explain that (e.g. ExplanationMonitor(model_getter="
        "lambda module: CLIPZeroShotClassifier(module.clip, prompts)))",
    ),
    "LongformerPreTrainedModel": (
        "its sliding-window and global attention is computed inside its own modules, outside the AttentionInterface, "
        "and its attention maps are banded [B, N, H, window] rather than [B, H, N, N] over the token axis",
        "fine-tune an encoder of a supported family (e.g. RoBERTa, ModernBERT for long inputs), or explain with "
        "captum's input-gradient methods outside the monitor",
    ),
    "LEDPreTrainedModel": (
        "its encoder uses Longformer's banded sliding-window attention, outside the AttentionInterface",
        "use a model of a supported family, or captum's input-gradient methods outside the monitor",
    ),
    "BigBirdPreTrainedModel": (
        "its block-sparse attention is computed inside its own modules, outside the AttentionInterface, and has no "
        "full [N, N] attention map to record",
        "use a model of a supported family (ModernBERT handles long inputs), or captum's input-gradient methods",
    ),
    "BigBirdPegasusPreTrainedModel": (
        "its block-sparse attention is computed inside its own modules, outside the AttentionInterface",
        "use a model of a supported family, or captum's input-gradient methods outside the monitor",
    ),
}


def _known_refusal(model: nn.Module) -> str | None:
    """The reason a known-unsupported transformers model cannot be explained, with what to do; None otherwise."""
    import transformers

    for class_name, (why, what) in KNOWN_UNSUPPORTED.items():
        cls = getattr(transformers, class_name, None)
        if isinstance(cls, type) and isinstance(model, cls):
            return (
                f"lightning_xai cannot explain a {type(model).__name__}: {why}. What to do: {what}."
            )
    return None


register_family(BertFamily)
register_family(RobertaFamily)
register_family(DistilBertFamily)
register_family(ElectraFamily)
register_family(AlbertFamily)
register_family(ModernBertFamily)
register_family(DebertaV2Family)
register_family(MPNetFamily)
register_family(ViTFamily)
register_family(DeiTWithTeacherFamily)
register_family(DeiTFamily)
register_family(BeitFamily)
register_family(Dinov2Family)
register_family(Data2VecVisionFamily)
register_family(SwinFamily)
register_family(ClipVisionFamily)
register_family(ClipZeroShotFamily)
register_family(DecoderFamily)
register_family(GPT2Family)
register_family(CausalLMFamily)
register_family(GenericFamily)  # last: the fallback for any other model on the AttentionInterface

__all__ = [
    "CausalLMFamily",
    "CompletionScorer",
    "explainable_model",
    "is_causal_lm",
    "SwinFamily",
    "Data2VecVisionFamily",
    "ClipVisionFamily",
    "ClipZeroShotFamily",
    "CLIPZeroShotClassifier",
    "KNOWN_UNSUPPORTED",
    "MPNetFamily",
    "GenericFamily",
    "DebertaV2Family",
    "ModernBertFamily",
    "ElectraFamily",
    "Dinov2Family",
    "BeitFamily",
    "AlbertFamily",
    "CAPABILITIES",
    "ENCODER_LRP_RULES",
    "BertFamily",
    "DeiTFamily",
    "DecoderFamily",
    "DeiTWithTeacherFamily",
    "DistilBertFamily",
    "GPT2Family",
    "LRPRule",
    "ModelFamily",
    "RobertaFamily",
    "TextEncoderFamily",
    "ViTFamily",
    "VisionEncoderFamily",
    "list_families",
    "register_family",
    "resolve_family",
]
