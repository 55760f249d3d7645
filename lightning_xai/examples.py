"""Tiny random models and inputs for the documentation's examples and quick experiments.

Built from configs in milliseconds, no download, the same every time (each model is drawn from its own seeded
stream; the global RNG is left as it was).

Example:
    >>> from lightning_xai import explain
    >>> from lightning_xai.explainers import GradSAM
    >>> maps = explain(tiny_bert(), tiny_text_batch(), [GradSAM()], modality=tiny_text_modality())
    >>> maps["grad_sam"].relevance.shape
    torch.Size([1, 5])
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
import transformers
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lightning_xai.modalities import TextModality
from lightning_xai.types import ModelInputs

#: The token ids of :func:`tiny_text_batch` and :func:`tiny_text_modality`: ``[PAD]=0``, ``[CLS]=2``, ``[SEP]=3``,
#: ``[MASK]=4``; words are 5..49.
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def tiny_bert(layers: int = 2, num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    """A random 2-head BERT classifier of hidden size 16 over a 50-token vocabulary, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = BertConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=8,
                            vocab_size=50, num_labels=num_labels)
        return BertForSequenceClassification(config).eval()


def tiny_text_batch() -> ModelInputs:
    """One row ``[CLS] w w [SEP] [PAD]``: four real tokens, two of them content, and one padding position."""
    return {"input_ids": torch.tensor([[CLS, 7, 9, SEP, PAD]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}


def tiny_text_modality() -> TextModality:
    """Token bookkeeping of :func:`tiny_text_batch`: special ids [PAD], [CLS], [SEP]; removal by [MASK]."""
    return TextModality(special_ids=[PAD, CLS, SEP], pad_id=PAD, replacement_id=MASK)


#: Every architecture :func:`tiny_classifier` builds -> the model family that describes it.
ARCHITECTURES: Mapping[str, str] = MappingProxyType(
    {
        **{name: name for name in ("bert", "roberta", "distilbert", "electra", "albert", "modernbert", "deberta_v2",
                                   "mpnet")},
        "xlm_roberta": "roberta",
        **{name: name for name in ("vit", "deit", "deit_with_teacher", "beit", "dinov2", "data2vec_vision", "swin")},
        "clip": "clip_vision",
        "clip_zero_shot": "clip_zero_shot",
        **dict.fromkeys(("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3"), "decoder"),
        "gpt2": "gpt2",
        "llama_lm": "causal_lm",  # a LlamaForCausalLM explained for its completion (CompletionScorer)
        "opt": "generic",  # a decoder of no family: the generic fallback
    }
)
#: The vision architectures (the others take token ids).
VISION = frozenset(
    {"vit", "deit", "deit_with_teacher", "beit", "dinov2", "data2vec_vision", "swin", "clip", "clip_zero_shot"}
)
_HF_NAMES = {
    "bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert", "electra": "Electra", "albert": "Albert",
    "modernbert": "ModernBert", "xlm_roberta": "XLMRoberta", "vit": "ViT", "deit": "DeiT", "beit": "Beit",
    "dinov2": "Dinov2", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral",
    "gemma": "Gemma", "gemma2": "Gemma2", "phi3": "Phi3", "gpt2": "GPT2", "deberta_v2": "DebertaV2",
    "mpnet": "MPNet", "opt": "OPT", "data2vec_vision": "Data2VecVision", "swin": "Swin", "clip": "CLIP",
}


def tiny_classifier(
    architecture: str,
    num_labels: int = 2,
    layers: int = 2,
    seed: int | None = 0,
    vocab_size: int = 50,
    image_size: int = 16,
    patch_size: int = 4,
) -> nn.Module:
    """A tiny random classifier of ``architecture`` (a key of :data:`ARCHITECTURES`), hidden size 16, in eval mode.

    The weights are drawn from a private stream seeded with ``seed`` (the global RNG is left as it was), or from the
    global RNG with ``seed=None``. Text models use token id 0 as padding (decoders pool at the last token that is
    not 0), 2 and 3 as the sequence's first and last special tokens; vision models take ``image_size`` pixel images
    cut into ``patch_size`` patches. ``"llama_lm"`` is a causal LM wrapped in a ``CompletionScorer``: its inputs need
    SFT ``labels`` (-100 on the prompt).

    Example:
        >>> type(tiny_classifier("llama")).__name__, type(tiny_classifier("vit")).__name__
        ('LlamaForSequenceClassification', 'ViTForImageClassification')
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    common = dict(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=24)
    vision = dict(common, image_size=image_size, patch_size=patch_size, num_labels=num_labels)
    text = dict(common, vocab_size=vocab_size, num_labels=num_labels)
    # a wider initialisation than HF's 0.02 for the later additions: at these sizes the default leaves gradients
    # around 1e-11 (the first five keep HF's, as their tests were written against them)
    wide = dict(initializer_range=0.2)
    options: dict = {
        "bert": text,
        "roberta": dict(text, pad_token_id=0),
        "distilbert": dict(dim=16, n_layers=layers, n_heads=2, hidden_dim=24, vocab_size=vocab_size,
                           num_labels=num_labels),
        "electra": dict(text, pad_token_id=0, embedding_size=8, **wide),
        "xlm_roberta": dict(text, pad_token_id=0, **wide),
        "albert": dict(text, pad_token_id=0, embedding_size=8, **wide),
        "modernbert": dict(text, pad_token_id=0, global_attn_every_n_layers=2, local_attention=4, **wide),
        "vit": vision,
        "deit": vision,
        "deit_with_teacher": vision,
        "beit": dict(vision, **wide),
        "dinov2": dict(vision, **wide),
        "gpt2": dict(n_embd=16, n_layer=layers, n_head=2, vocab_size=vocab_size, n_positions=64, pad_token_id=0,
                     bos_token_id=2, eos_token_id=3, num_labels=num_labels),
        "deberta_v2": dict(text, pad_token_id=0, max_relative_positions=8, position_buckets=4, pooler_hidden_size=16,
                           **wide),
        "mpnet": dict(text, pad_token_id=0, **wide),
        "data2vec_vision": dict(vision, **wide),
        "swin": dict(image_size=image_size, patch_size=patch_size, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                     window_size=2, num_labels=num_labels, **wide),
        "clip": dict(vision_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                                        num_attention_heads=2, image_size=image_size, patch_size=patch_size),
                     text_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=vocab_size),
                     num_labels=num_labels),
        "opt": dict(hidden_size=16, num_hidden_layers=layers, ffn_dim=24, num_attention_heads=2, vocab_size=vocab_size,
                    word_embed_proj_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=3, num_labels=num_labels,
                    max_position_embeddings=64, **wide),
    }
    decoder = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=layers, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=4, vocab_size=vocab_size, pad_token_id=0, bos_token_id=2,
                   eos_token_id=3, num_labels=num_labels, max_position_embeddings=64)
    if architecture == "clip_zero_shot":
        return _tiny_clip_zero_shot(options["clip"], num_labels, vocab_size, seed)
    if architecture == "llama_lm":
        return _tiny_causal_lm(dict(decoder, initializer_range=0.2), seed)
    config_name = "DeiT" if architecture == "deit_with_teacher" else _HF_NAMES[architecture]
    head = "ForImageClassification" if architecture in VISION else "ForSequenceClassification"
    if architecture == "deit_with_teacher":
        head = "ForImageClassificationWithTeacher"
    config = getattr(transformers, f"{config_name}Config")(**options.get(architecture, decoder))
    if seed is None:
        return getattr(transformers, config_name + head)(config).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(transformers, config_name + head)(config).eval()


def _tiny_causal_lm(options: dict, seed: int | None) -> nn.Module:
    """A tiny random ``LlamaForCausalLM`` as a :class:`~lightning_xai.families.CompletionScorer` (it needs labels)."""
    from lightning_xai.families.causal_lm import CompletionScorer

    config = transformers.LlamaConfig(**{k: v for k, v in options.items() if k != "num_labels"})
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return CompletionScorer(transformers.LlamaForCausalLM(config)).eval()


def _tiny_clip_zero_shot(options: dict, num_labels: int, vocab_size: int, seed: int | None) -> nn.Module:
    """A tiny random ``CLIPModel`` with ``num_labels`` random prompts of 5 tokens, as a zero-shot classifier."""
    from lightning_xai.families.clip import CLIPZeroShotClassifier

    text = dict(options["text_config"], bos_token_id=2, eos_token_id=3, pad_token_id=0)
    config = transformers.CLIPConfig(vision_config=options["vision_config"], text_config=text)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        clip = transformers.CLIPModel(config).eval()
        ids = torch.randint(4, vocab_size, (num_labels, 5))
    ids[:, 0], ids[:, -1] = 2, 3  # CLIP pools the text at its end-of-text token (the last one here)
    prompts = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return CLIPZeroShotClassifier(clip, prompts).eval()
