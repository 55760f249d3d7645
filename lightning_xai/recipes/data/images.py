"""Image classification data: preprocessing, augmentation as a collate function, datasets and the base module.

Every image module yields dict batches ``{"pixel_values": float[B, 3, H, W], "labels": long[B]}`` (what
:class:`~lightning_xai.ExplanationMonitor` reads without a custom adapter), resizes images to ``image_size`` with
antialiased bilinear interpolation (no torchvision needed), normalises them with ``(x - mean) / std`` and exposes
``label_names`` and ``num_labels``. Splits are stratified and deterministic for a given ``seed`` (a local
generator: the global RNG state does not matter).

Example:
    >>> import torch
    >>> preprocess_images(torch.ones(2, 1, 8, 8), 16, mean=[0.5] * 3, std=[0.5] * 3).shape
    torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai.recipes.data.splits import SplitLoaders, stratified_split

__all__ = ["ImageDataModule", "LazyImages", "RandomShift", "TensorImages", "pil_to_tensor", "preprocess_images"]


def preprocess_images(
    images: Tensor, image_size: int, mean: Sequence[float], std: Sequence[float], channels: int = 3
) -> Tensor:
    """Resize ``[N, C, h, w]`` images in ``[0, 1]`` to ``image_size`` and normalise them to ``[N, channels, S, S]``.

    Grayscale (``C == 1``) is repeated to ``channels``; an alpha channel is dropped.

    Example:
        >>> preprocess_images(torch.ones(2, 1, 8, 8), 16, mean=[0.5] * 3, std=[0.5] * 3).shape
        torch.Size([2, 3, 16, 16])
    """
    images = images.float()
    if images.dim() != 4:
        raise ValueError(f"expected [N, C, H, W] images, got shape {tuple(images.shape)}")
    if images.shape[1] == 1 and channels != 1:
        images = images.expand(-1, channels, -1, -1)
    elif images.shape[1] == 4 and channels == 3:
        images = images[:, :3]
    if images.shape[1] != channels:
        raise ValueError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    if tuple(images.shape[-2:]) != (image_size, image_size):
        antialias = image_size < max(images.shape[-2:])
        images = torch.nn.functional.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=antialias
        )
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


class RandomShift:
    """Collate dict examples and shift each training image by up to ``max_shift`` pixels (edge-replicated).

    A plain picklable object; draws from the global torch RNG (seeded by ``seed_everything``).
    ``max_shift=0`` is a plain collate.

    Example:
        >>> examples = [{"pixel_values": torch.zeros(3, 4, 4), "labels": torch.tensor(1)}] * 2
        >>> batch = RandomShift(max_shift=1)(examples)
        >>> tuple(batch["pixel_values"].shape), batch["labels"].tolist()
        ((2, 3, 4, 4), [1, 1])
    """

    def __init__(self, max_shift: int = 0) -> None:
        self.max_shift = max_shift

    def __call__(self, examples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Stack the examples, then shift every image independently."""
        pixels = torch.stack([ex["pixel_values"] for ex in examples])
        labels = torch.stack([ex["labels"] for ex in examples])
        s = self.max_shift
        if s > 0:
            padded = torch.nn.functional.pad(pixels, (s, s, s, s), mode="replicate")
            h, w = pixels.shape[-2:]
            offsets = torch.randint(0, 2 * s + 1, (len(examples), 2))
            pixels = torch.stack(
                [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
            )
        return {"pixel_values": pixels, "labels": labels}


class TensorImages(Dataset):
    """Preprocessed images held in memory: ``pixels`` ``[N, 3, S, S]`` and ``labels`` ``[N]``."""

    def __init__(self, pixels: Tensor, labels: Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


class LazyImages(Dataset):
    """Images decoded and preprocessed on access (large data sets such as CIFAR-10 at 224 pixels).

    Args:
        count: Number of images.
        load: ``index -> (image [C, H, W] in [0, 1], label)``; picklable when DataLoader workers are used.
        transform: Preprocessing of an ``[N, C, H, W]`` batch (see :func:`preprocess_images`).
    """

    def __init__(
        self, count: int, load: Callable[[int], tuple[Tensor, int]], transform: Callable[[Tensor], Tensor]
    ) -> None:
        self.count, self.load, self.transform = count, load, transform

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, label = self.load(index)
        return {"pixel_values": self.transform(image[None])[0], "labels": torch.tensor(label, dtype=torch.long)}


def pil_to_tensor(image: Any) -> Tensor:
    """A PIL image (any mode) as a float ``[C, H, W]`` tensor in ``[0, 1]`` (RGB, or L for grayscale).

    Example:
        >>> from PIL import Image
        >>> pil_to_tensor(Image.new("RGBA", (5, 2), (255, 0, 0, 9))).shape
        torch.Size([3, 2, 5])
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class ImageDataModule(SplitLoaders, LightningDataModule):
    """Shared hyperparameters, preprocessing, splits and loaders of the image data modules.

    A subclass declares its arguments in its own ``__init__`` signature (LightningCLI reads them from there) and
    calls ``super().__init__()`` first: this saves them as hyperparameters and takes the shared ones from there:
    ``image_size``, ``batch_size``, ``seed``, ``num_workers``, ``mean``, ``std``, ``max_shift`` and, when the
    subclass has them, ``val_fraction`` and ``test_fraction`` (0 otherwise). Subclasses implement
    :meth:`load_splits`; the training loader shuffles with a generator seeded by ``seed`` and shifts images by up to
    ``max_shift`` pixels (:class:`RandomShift`).

    Attributes:
        label_names: Class names in id order.
        num_labels: Number of classes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()  # the subclass's arguments: Lightning reads them from its __init__ frame
        hp = self.hparams
        if hp.image_size < 1 or hp.batch_size < 1:
            raise ValueError(f"image_size and batch_size must be >= 1, got {hp.image_size}, {hp.batch_size}")
        if len(hp.mean) != 3 or len(hp.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        self.image_size: int = hp.image_size
        self.batch_size: int = hp.batch_size
        self.val_fraction: float = hp.get("val_fraction", 0.0)
        self.test_fraction: float = hp.get("test_fraction", 0.0)
        self.seed: int = hp.seed
        self.num_workers: int = hp.num_workers
        self.mean = list(hp.mean)
        self.std = list(hp.std)
        self.max_shift: int = hp.max_shift
        self.label_names: list[str] = []
        self._datasets: dict[str, Dataset] = {}

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def transform(self, images: Tensor) -> Tensor:
        """Resize + normalise ``[N, C, h, w]`` images in ``[0, 1]``."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    def load_splits(self) -> dict[str, Dataset]:
        """Return ``split -> dataset`` for ``"train"``, ``"val"`` and optionally ``"test"``; set ``label_names``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load, split and preprocess the images (once; later calls are no-ops)."""
        if not self._datasets:
            self._datasets = self.load_splits()

    def _split_in_memory(self, images: Tensor, labels: Sequence[int]) -> dict[str, Dataset]:
        """Stratified val / test / train split of in-memory ``[0, 1]`` images, preprocessed once."""
        pixels = self.transform(images)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        val, test, train = stratified_split(labels_t.tolist(), [self.val_fraction, self.test_fraction], self.seed)
        splits: dict[str, Dataset] = {}
        for split, idx in (("train", train), ("val", val), ("test", test)):
            index = torch.as_tensor(idx, dtype=torch.long)
            splits[split] = TensorImages(pixels[index], labels_t[index])
        return splits

    def _collate(self, training: bool) -> RandomShift:
        return RandomShift(self.max_shift if training else 0)
