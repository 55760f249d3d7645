"""A minimal Hugging Face sequence classifier as a LightningModule.

:class:`TextClassifier` wraps ``AutoModelForSequenceClassification`` at ``self.model`` (a plain
``transformers.PreTrainedModel``, which is what the explanation monitor looks for), trains it with AdamW and a
linear warmup/decay schedule, and logs loss and accuracy.

Example::

    >>> from lightning_xai.recipes import TextClassifier
    >>> module = TextClassifier()  # bundled all-MiniLM-L6-v2, 3 labels  # doctest: +SKIP
    >>> module(input_ids=ids, attention_mask=mask).shape  # doctest: +SKIP
    torch.Size([2, 3])
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from lightning_xai.recipes._classifier import ClassifierModule
from lightning_xai.recipes._optim import SCHEDULES, log_classification_step
from lightning_xai.recipes.bundled import minilm_path

__all__ = ["TextClassifier"]


class TextClassifier(ClassifierModule):
    """Fine-tune a Hugging Face encoder for sequence classification.

    Batches are dicts of model inputs plus ``labels`` (as produced by
    :class:`~lightning_xai.recipes.SentimentDataModule`); other keys the model's ``forward`` does not name (e.g.
    ``rationale_mask``) are not passed to the model.

    Args:
        model_name_or_path: A local Hugging Face folder or a hub name (needs a network); ``None`` uses the bundled
            all-MiniLM-L6-v2 weights. The classification head is freshly initialised.
        num_labels: Number of classes.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: Fraction of the total optimizer steps spent in linear warmup before linear decay to zero.
        attn_implementation: Attention kernel of the model (``"sdpa"`` or ``"eager"``; an explainer that needs
            attention probabilities switches to eager itself for its own pass).
        label_names: Class names in id order; ``None`` adopts the data module's ``label_names`` (if any) at setup.
        schedule: Learning-rate decay after the warmup: ``"linear"`` (default), ``"cosine"`` or ``"constant"``.

    Attributes:
        model: The wrapped ``transformers.PreTrainedModel``.
        tokenizer: The model's tokenizer.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        num_labels: int = 3,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        attn_implementation: str = "sdpa",
        label_names: list[str] | None = None,
        schedule: str = "linear",
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label_names given for num_labels={num_labels}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.save_hyperparameters()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer  # deferred: heavy import

        path = model_name_or_path or minilm_path()
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, attn_implementation=attn_implementation
        )
        # from_pretrained returns the model in eval mode and Lightning (>= 2.5) no longer calls .train() at fit
        # start: without this, fine-tuning would silently run with dropout off.
        self.model.train()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.label_names: list[str] | None = None
        if label_names is not None:
            self._set_label_names(label_names)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Return the classification logits ``[B, num_labels]`` for model inputs (``input_ids``, ...)."""
        return self.model(**inputs).logits

    def _shared_step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        accepted = _named_parameters(self.model)
        inputs = {k: v for k, v in batch.items() if k != "labels" and k in accepted}
        labels = batch["labels"]
        logits = self(**inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        log_classification_step(self, prefix, logits, labels, loss)
        return loss


def _named_parameters(model: nn.Module) -> frozenset[str]:
    """Explicitly named parameters of ``model.forward`` (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return frozenset({"input_ids", "attention_mask", "token_type_ids"})
    return frozenset(
        p.name for p in parameters if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    )
