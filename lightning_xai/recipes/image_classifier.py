"""A Hugging Face ViT/DeiT image classifier as a LightningModule: pretrained by name/path, or from scratch.

:class:`ImageClassifier` keeps the plain ``transformers`` model at ``self.model`` (what the explanation monitor
explains), trains it with AdamW and a warmup + cosine/linear schedule, and logs loss and accuracy.

Example:
    >>> import torch
    >>> from lightning_xai.recipes import ImageClassifier
    >>> module = ImageClassifier(num_labels=10, image_size=16, patch_size=4, hidden_size=32, num_layers=2,
    ...                          num_heads=2)
    >>> module(pixel_values=torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_xai.recipes._classifier import ClassifierModule
from lightning_xai.recipes._optim import SCHEDULES, log_classification_step

__all__ = ["ImageClassifier"]

_ARCHITECTURES = ("vit", "deit")
_SCRATCH_ARGS = (
    "architecture",
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_ratio",
    "dropout",
)


class ImageClassifier(ClassifierModule):
    """Train a ViT/DeiT image classifier on ``{"pixel_values": [B,3,H,W], "labels": [B]}`` batches.

    With ``model_name_or_path`` the model is loaded with ``AutoModelForImageClassification.from_pretrained``
    (hub name or local folder; a mismatched classification head is re-initialised for ``num_labels``). Without it,
    a fresh model is built from ``architecture`` and the size arguments (a from-scratch run).

    Args:
        model_name_or_path: A local Hugging Face folder or a hub name (needs a network), e.g.
            ``google/vit-base-patch16-224-in21k``; ``None`` builds a model from the arguments below.
        num_labels: Number of classes.
        architecture: ``"vit"`` or ``"deit"`` (from-scratch runs only).
        image_size: Input side in pixels (from scratch).
        patch_size: Patch side in pixels (from scratch).
        num_channels: Input channels (from scratch).
        hidden_size: Width (from scratch).
        num_layers: Transformer layers (from scratch).
        num_heads: Attention heads (from scratch).
        mlp_ratio: MLP width as a multiple of ``hidden_size`` (from scratch).
        dropout: Hidden and attention dropout (from scratch).
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not on biases, norms, CLS token and position embeddings).
        warmup_ratio: Fraction of the optimizer steps spent in linear warmup.
        schedule: Decay after the warmup: ``"cosine"`` (default), ``"linear"`` or ``"constant"``.
        label_smoothing: Cross-entropy label smoothing.
        attn_implementation: Attention kernel for training (``"sdpa"`` or ``"eager"``); explainers that need
            attention probabilities switch to eager for their own pass.
        label_names: Class names in id order (written into ``model.config.id2label``); ``None`` adopts the data
            module's ``label_names`` at setup.

    Attributes:
        model: The wrapped ``transformers.PreTrainedModel``.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        num_labels: int = 10,
        architecture: str = "vit",
        image_size: int = 32,
        patch_size: int = 4,
        num_channels: int = 3,
        hidden_size: int = 192,
        num_layers: int = 4,
        num_heads: int = 3,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_ratio: float = 0.1,
        schedule: str = "cosine",
        label_smoothing: float = 0.0,
        attn_implementation: str = "sdpa",
        label_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label_names given for num_labels={num_labels}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if architecture not in _ARCHITECTURES:
            raise ValueError(f"architecture must be one of {_ARCHITECTURES}, got {architecture!r}")
        if model_name_or_path is None and (image_size % patch_size or hidden_size % num_heads):
            raise ValueError(
                f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}) and hidden_size "
                f"({hidden_size}) a multiple of num_heads ({num_heads})"
            )
        # A pretrained model brings its own sizes: the from-scratch ones are not hyperparameters of the run (and must
        # not clash with the data module's `image_size` when Lightning merges both into the logger's hparams).
        self.save_hyperparameters(ignore=list(_SCRATCH_ARGS) if model_name_or_path is not None else None)
        from transformers import AutoModelForImageClassification  # deferred: heavy import

        if model_name_or_path is not None:
            self.model = AutoModelForImageClassification.from_pretrained(
                model_name_or_path,
                num_labels=num_labels,
                ignore_mismatched_sizes=True,  # a pretrained head of another size is replaced
                attn_implementation=attn_implementation,
            )
        else:
            self.model = AutoModelForImageClassification.from_config(
                self._scratch_config(), attn_implementation=attn_implementation
            )
        # from_pretrained returns eval mode and Lightning no longer calls .train() at fit start.
        self.model.train()
        self.label_names: list[str] | None = None
        if label_names is not None:
            self._set_label_names(label_names)

    def _scratch_config(self) -> Any:
        from transformers import DeiTConfig, ViTConfig

        hp = self.hparams
        config_class = ViTConfig if hp.architecture == "vit" else DeiTConfig
        return config_class(
            image_size=hp.image_size,
            patch_size=hp.patch_size,
            num_channels=hp.num_channels,
            hidden_size=hp.hidden_size,
            num_hidden_layers=hp.num_layers,
            num_attention_heads=hp.num_heads,
            intermediate_size=int(hp.mlp_ratio * hp.hidden_size),
            hidden_dropout_prob=hp.dropout,
            attention_probs_dropout_prob=hp.dropout,
            num_labels=hp.num_labels,
            # DeiT maps to two classification classes (with and without a distillation token): pick the plain one.
            architectures=["ViTForImageClassification" if hp.architecture == "vit" else "DeiTForImageClassification"],
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return the classification logits ``[B, num_labels]``."""
        return self.model(pixel_values=pixel_values).logits

    def _shared_step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        labels = batch["labels"]
        logits = self(batch["pixel_values"])
        smoothing = self.hparams.label_smoothing if prefix == "train" else 0.0
        loss = nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
        log_classification_step(self, prefix, logits, labels, loss)
        return loss
