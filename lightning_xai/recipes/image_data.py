"""Image classification data modules: bundled digits and faces, image folders, and HF ``datasets`` by name.

Every module yields dict batches ``{"pixel_values": float[B, 3, H, W], "labels": long[B]}`` (what
:class:`~lightning_xai.ExplanationMonitor` reads without a custom adapter), resizes images to ``image_size`` with
antialiased bilinear interpolation (no torchvision needed), normalises them with ``(x - mean) / std`` and exposes
``label_names`` and ``num_labels``. Splits are stratified and deterministic for a given ``seed`` (a local
generator: the global RNG state does not matter).

* :class:`DigitsDataModule`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).
* :class:`FacesDataModule`: scikit-image's bundled LFW subset (200 25x25 images: 100 faces, 100 non-faces).
* :class:`ImageFolderDataModule`: ``root/<class name>/*.png|jpg|...`` read with PIL.
* :class:`HFImageDataModule`: a Hugging Face ``datasets`` image data set by name (e.g. ``cifar10``; needs
  ``pip install datasets`` and a network).

Example:
    >>> from lightning_xai.recipes import DigitsDataModule
    >>> dm = DigitsDataModule(image_size=16, batch_size=4)
    >>> dm.setup("fit")
    >>> batch = next(iter(dm.val_dataloader()))
    >>> tuple(batch["pixel_values"].shape), batch["labels"].dtype, dm.num_labels
    ((4, 3, 16, 16), torch.int64, 10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai.recipes._hf import load_hf_dataset
from lightning_xai.recipes._splits import SplitLoaders

__all__ = [
    "IMAGE_EXTENSIONS",
    "DigitsDataModule",
    "FacesDataModule",
    "HFImageDataModule",
    "ImageFolderDataModule",
    "RandomShift",
    "preprocess_images",
    "stratified_split",
]

#: File suffixes :class:`ImageFolderDataModule` reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split row indices into stratified subsets (each keeps the class proportions), reproducibly.

    Each class's rows are permuted with ``numpy.random.default_rng(seed)``; subset ``k`` takes
    ``round(fractions[k] * n_class)`` rows of every class, in order; the last subset gets every remaining row
    (pass fractions for all but the last). Every subset is shuffled so that classes mix.

    Args:
        labels: Class id of every row.
        fractions: Fraction of each class for each leading subset (e.g. ``[0.2]`` -> val 20%, train the rest).
        seed: Seed of the local generator.

    Returns:
        ``len(fractions) + 1`` lists of indices.

    Example:
        >>> val, train = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], [0.25], seed=0)
        >>> sorted(val), len(train)
        ([2, 7], 6)
    """
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"fractions must be >= 0 and sum to < 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    subsets: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels_arr):
        rows = rng.permutation(np.flatnonzero(labels_arr == c)).tolist()
        start = 0
        for k, fraction in enumerate(fractions):
            n = int(round(fraction * len(rows)))
            subsets[k].extend(rows[start : start + n])
            start += n
        subsets[-1].extend(rows[start:])
    return [[s[i] for i in rng.permutation(len(s))] for s in subsets]


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


class _TensorImages(Dataset):
    """Preprocessed images held in memory."""

    def __init__(self, pixels: Tensor, labels: Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


class _LazyImages(Dataset):
    """Images decoded and preprocessed on access (large data sets such as CIFAR-10 at 224 pixels)."""

    def __init__(self, count: int, load: Callable[[int], tuple[Tensor, int]], transform: Callable[[Tensor], Tensor]):
        self.count, self.load, self.transform = count, load, transform

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, label = self.load(index)
        return {"pixel_values": self.transform(image[None])[0], "labels": torch.tensor(label, dtype=torch.long)}


def pil_to_tensor(image: Any) -> Tensor:
    """A PIL image (any mode) as a float ``[C, H, W]`` tensor in ``[0, 1]`` (RGB, or L for grayscale)."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class _ImageDataModule(SplitLoaders, LightningDataModule):
    """Shared split / preprocessing / loader logic. Subclasses implement :meth:`_load_splits`."""

    def __init__(
        self,
        image_size: int,
        batch_size: int,
        val_fraction: float,
        test_fraction: float,
        seed: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        max_shift: int,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1:
            raise ValueError(f"image_size and batch_size must be >= 1, got {image_size}, {batch_size}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.mean = list(mean)
        self.std = list(std)
        self.max_shift = max_shift
        self.label_names: list[str] = []
        self._datasets: dict[str, Dataset] = {}

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def transform(self, images: Tensor) -> Tensor:
        """Resize + normalise ``[N, C, h, w]`` images in ``[0, 1]``."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    def _split_in_memory(self, images: Tensor, labels: Sequence[int]) -> None:
        """Stratified val / test / train split of in-memory ``[0, 1]`` images, preprocessed once."""
        pixels = self.transform(images)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        val, test, train = stratified_split(labels_t.tolist(), [self.val_fraction, self.test_fraction], self.seed)
        for split, idx in (("train", train), ("val", val), ("test", test)):
            index = torch.as_tensor(idx, dtype=torch.long)
            self._datasets[split] = _TensorImages(pixels[index], labels_t[index])

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self._datasets:
            raise RuntimeError(f"no {split!r} split: call setup() first (or this data module has none)")
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            shuffle=train,
            generator=generator,
            collate_fn=RandomShift(self.max_shift if train else 0),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )



class DigitsDataModule(_ImageDataModule):
    """scikit-learn's bundled handwritten digits (1,797 8x8 grayscale images, classes ``"0"`` .. ``"9"``).

    Pixel values 0..16 are scaled to ``[0, 1]``, upsampled to ``image_size`` and repeated to 3 channels.

    Args:
        image_size: Side of the upsampled images.
        batch_size: Batch size of every loader.
        val_fraction: Stratified fraction of every class held out for validation.
        test_fraction: Stratified fraction held out for testing.
        seed: Seed of the split and of the training shuffle.
        num_workers: DataLoader workers.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        max_shift: Random translation (pixels, at ``image_size``) of training images; 0 disables it.
    """

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        max_shift: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, val_fraction, test_fraction, seed, num_workers, mean, std, max_shift)
        self.save_hyperparameters()
        self.label_names = [str(d) for d in range(10)]

    def setup(self, stage: str | None = None) -> None:
        """Load, split and preprocess the digits (once)."""
        if self._datasets:
            return
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("DigitsDataModule needs scikit-learn: pip install scikit-learn") from err
        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
        self._split_in_memory(images, digits.target.tolist())


class FacesDataModule(_ImageDataModule):
    """scikit-image's bundled LFW subset: 200 grayscale 25x25 images, ``"face"`` (100) vs ``"non-face"`` (100).

    Args: as :class:`DigitsDataModule`.
    """

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        max_shift: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, val_fraction, test_fraction, seed, num_workers, mean, std, max_shift)
        self.save_hyperparameters()
        self.label_names = ["face", "non-face"]

    def setup(self, stage: str | None = None) -> None:
        """Load, split and preprocess the faces (once)."""
        if self._datasets:
            return
        try:
            from skimage.data import lfw_subset
        except ImportError as err:
            raise ImportError("FacesDataModule needs scikit-image: pip install scikit-image") from err
        faces = lfw_subset()  # float in [0, 1]; the first 100 are faces, the next 100 are not
        images = torch.from_numpy(faces.astype(np.float32))[:, None]
        labels = [0] * 100 + [1] * (len(faces) - 100)
        self._split_in_memory(images, labels)


def _folder_items(root: Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    names = list(classes) if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{root} has no class sub-folders (expected root/<class name>/<image files>)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class name>/")
    return paths, labels, names


class ImageFolderDataModule(_ImageDataModule):
    """Images in ``root/<class name>/<file>`` folders (class names sorted alphabetically give the label ids).

    Images are read with PIL (any mode, converted to RGB), resized to ``image_size`` and kept in memory. Without
    ``val_root`` the validation (and test) rows are a stratified split of ``root``.

    Args:
        root: Training folder (or the only folder, split by ``val_fraction``/``test_fraction``).
        val_root: Optional validation folder with the same class sub-folders.
        test_root: Optional test folder.
        image_size: Side of the resized images.
        batch_size: Batch size of every loader.
        val_fraction: Used only without ``val_root``.
        test_fraction: Used only without ``test_root``.
        seed: Seed of the split and of the training shuffle.
        num_workers: DataLoader workers.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        max_shift: Random translation of training images (pixels).
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        test_root: str | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        max_shift: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, val_fraction, test_fraction, seed, num_workers, mean, std, max_shift)
        self.save_hyperparameters()
        _, _, self.label_names = _folder_items(Path(root))

    def _read(self, paths: Sequence[Path]) -> Tensor:
        from PIL import Image

        out = []
        for path in paths:
            with Image.open(path) as image:
                out.append(self.transform(pil_to_tensor(image)[None])[0])
        return torch.stack(out)

    def setup(self, stage: str | None = None) -> None:
        """Read, split and preprocess the folders (once)."""
        if self._datasets:
            return
        hp = self.hparams
        paths, labels, _ = _folder_items(Path(hp.root), self.label_names)
        fractions = [0.0 if hp.val_root else self.val_fraction, 0.0 if hp.test_root else self.test_fraction]
        val, test, train = stratified_split(labels, fractions, self.seed)
        splits = {"train": train, "val": val, "test": test}
        for split, idx in splits.items():
            self._datasets[split] = _TensorImages(
                self._read([paths[i] for i in idx]) if idx else torch.empty(0, 3, self.image_size, self.image_size),
                torch.as_tensor([labels[i] for i in idx], dtype=torch.long),
            )
        for split, folder in (("val", hp.val_root), ("test", hp.test_root)):
            if folder:
                f_paths, f_labels, _ = _folder_items(Path(folder), self.label_names)
                self._datasets[split] = _TensorImages(self._read(f_paths), torch.as_tensor(f_labels, dtype=torch.long))


class HFImageDataModule(_ImageDataModule):
    """A Hugging Face ``datasets`` image classification data set by name (e.g. ``cifar10``): needs a network.

    Images are decoded and preprocessed on access (a 224-pixel CIFAR-10 would not fit in memory). Label names come
    from the label column's ``ClassLabel`` feature when it has one.

    Args:
        dataset_name: Name passed to ``datasets.load_dataset`` (a hub name, or a builder such as ``imagefolder``).
        dataset_config: Configuration name, if the data set has several.
        data_files: ``data_files`` for local builders.
        image_column: Column holding the images (PIL images).
        label_column: Column holding integer labels.
        train_split: Split used for training.
        val_split: Split used for validation.
        test_split: Split used for testing (``None``: none).
        max_train_samples: Keep only the first N training rows (``None``: all).
        max_eval_samples: Keep only the first N validation/test rows.
        image_size: Side of the resized images (224 for ImageNet-pretrained ViTs).
        batch_size: Batch size of every loader.
        seed: Seed of the training shuffle.
        num_workers: DataLoader workers (decoding happens in them).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        max_shift: Random translation of training images (pixels).
    """

    def __init__(
        self,
        dataset_name: str = "cifar10",
        dataset_config: str | None = None,
        data_files: Any = None,
        image_column: str = "img",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str = "test",
        test_split: str | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        max_shift: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, 0.0, 0.0, seed, num_workers, mean, std, max_shift)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        """Load the data set (once) and wrap its splits."""
        if self._datasets:
            return
        hp = self.hparams
        data = load_hf_dataset(hp.dataset_name, hp.dataset_config, hp.data_files)
        feature = data[hp.train_split].features.get(hp.label_column)
        names = getattr(feature, "names", None)
        if names is None:
            names = [str(v) for v in sorted(set(data[hp.train_split][hp.label_column]))]
        self.label_names = list(names)
        for split, name, limit in (
            ("train", hp.train_split, hp.max_train_samples),
            ("val", hp.val_split, hp.max_eval_samples),
            ("test", hp.test_split, hp.max_eval_samples),
        ):
            if name is None:
                continue
            rows = data[name]
            if limit is not None:
                rows = rows.select(range(min(limit, len(rows))))
            self._datasets[split] = _LazyImages(
                len(rows), _RowReader(rows, hp.image_column, hp.label_column), self.transform
            )


class _RowReader:
    """Picklable ``index -> (image [C,H,W] in [0,1], label)`` over a ``datasets.Dataset``."""

    def __init__(self, rows: Any, image_column: str, label_column: str) -> None:
        self.rows, self.image_column, self.label_column = rows, image_column, label_column

    def __call__(self, index: int) -> tuple[Tensor, int]:
        row = self.rows[index]
        return pil_to_tensor(row[self.image_column]), int(row[self.label_column])
