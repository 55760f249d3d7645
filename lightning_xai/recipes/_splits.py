"""The train/val/test dataloader trio shared by the recipes' data modules."""

from __future__ import annotations

from torch.utils.data import DataLoader


class SplitLoaders:
    """Mixin: ``train_dataloader`` shuffles, ``val``/``test`` keep a fixed order; subclasses define ``_loader``.

    ``_loader(split, training)`` builds the loader of ``split``; ``training`` is True only for the training split
    (shuffle, and any training-only augmentation).
    """

    def _loader(self, split: str, training: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", False)
