"""What the text and image classifiers share: label names, the train/val/test steps and the optimizer."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from lightning_xai.recipes._optim import adamw_with_schedule

__all__ = ["ClassifierModule"]


class ClassifierModule(LightningModule):
    """Base of the recipes' classifiers: a ``transformers`` model at ``self.model`` trained with cross-entropy.

    A subclass builds ``self.model``, saves hyperparameters that include ``num_labels``, ``learning_rate``,
    ``weight_decay``, ``warmup_ratio`` and ``schedule``, and implements :meth:`_shared_step` (loss and logging of
    one batch). The training, validation and test steps, the adoption of the data module's label names and the
    optimizer are this class's.

    Attributes:
        label_names: Class names in id order (``None`` until given or adopted from the data module).
    """

    model: Any
    label_names: list[str] | None

    def _set_label_names(self, names: list[str]) -> None:
        self.label_names = list(names)
        # Keep the HF config in sync so a saved model carries readable labels.
        self.model.config.id2label = dict(enumerate(self.label_names))
        self.model.config.label2id = {name: i for i, name in enumerate(self.label_names)}

    def setup(self, stage: str) -> None:
        """Adopt the data module's ``label_names`` when none were given."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "label_names", None)
        if self.label_names is None and names is not None and len(names) == self.hparams.num_labels:
            self._set_label_names(list(names))

    def _shared_step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        """The loss of one batch, logged as ``<prefix>/loss`` and ``<prefix>/acc``."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch; logs ``train/loss`` and ``train/acc`` per step."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs epoch-level ``val/loss`` and ``val/acc``."""
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs epoch-level ``test/loss`` and ``test/acc``."""
        self._shared_step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on biases, norms, CLS token, position embeddings) with linear warmup, then ``schedule``."""
        hp = self.hparams
        return adamw_with_schedule(
            self.model,
            hp.learning_rate,
            hp.weight_decay,
            hp.warmup_ratio,
            self.trainer.estimated_stepping_batches,
            hp.schedule,
        )
