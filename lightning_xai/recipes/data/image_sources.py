"""Where the images come from: bundled digits and faces, image folders, and HF ``datasets`` by name.

Every module here is an :class:`~lightning_xai.recipes.data.images.ImageDataModule` that only reads its splits
(see that class for the batches, the preprocessing and the seeded training order).

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai.recipes.data.images import ImageDataModule, LazyImages, TensorImages, pil_to_tensor
from lightning_xai.recipes.data.splits import hf_splits, load_hf_dataset, stratified_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "DigitsDataModule",
    "FacesDataModule",
    "HFImageDataModule",
    "ImageFolderDataModule",
]

#: File suffixes :class:`ImageFolderDataModule` reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DigitsDataModule(ImageDataModule):
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
        super().__init__()  # saves the arguments above as hyperparameters and reads the shared ones
        self.label_names = [str(d) for d in range(10)]

    def load_splits(self) -> dict[str, Dataset]:
        """Load, split and preprocess the digits."""
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("DigitsDataModule needs scikit-learn: pip install scikit-learn") from err
        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
        return self._split_in_memory(images, digits.target.tolist())


class FacesDataModule(ImageDataModule):
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
        super().__init__()  # saves the arguments above as hyperparameters and reads the shared ones
        self.label_names = ["face", "non-face"]

    def load_splits(self) -> dict[str, Dataset]:
        """Load, split and preprocess the faces."""
        try:
            from skimage.data import lfw_subset
        except ImportError as err:
            raise ImportError("FacesDataModule needs scikit-image: pip install scikit-image") from err
        faces = lfw_subset()  # float in [0, 1]; the first 100 are faces, the next 100 are not
        images = torch.from_numpy(faces.astype(np.float32))[:, None]
        labels = [0] * 100 + [1] * (len(faces) - 100)
        return self._split_in_memory(images, labels)


def _folder_items(root: Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The image files under ``root/<class>/``, their label ids and the class names (sorted folders by default)."""
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


class ImageFolderDataModule(ImageDataModule):
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
        super().__init__()  # saves the arguments above as hyperparameters and reads the shared ones
        _, _, self.label_names = _folder_items(Path(root))

    def _read(self, paths: Sequence[Path]) -> Tensor:
        from PIL import Image

        out = []
        for path in paths:
            with Image.open(path) as image:
                out.append(self.transform(pil_to_tensor(image)[None])[0])
        return torch.stack(out)

    def _images(self, paths: Sequence[Path], labels: Sequence[int]) -> TensorImages:
        pixels = self._read(paths) if paths else torch.empty(0, 3, self.image_size, self.image_size)
        return TensorImages(pixels, torch.as_tensor(list(labels), dtype=torch.long))

    def load_splits(self) -> dict[str, Dataset]:
        """Read, split and preprocess the folders."""
        hp = self.hparams
        paths, labels, _ = _folder_items(Path(hp.root), self.label_names)
        fractions = [0.0 if hp.val_root else self.val_fraction, 0.0 if hp.test_root else self.test_fraction]
        val, test, train = stratified_split(labels, fractions, self.seed)
        splits: dict[str, Dataset] = {
            split: self._images([paths[i] for i in idx], [labels[i] for i in idx])
            for split, idx in (("train", train), ("val", val), ("test", test))
        }
        for split, folder in (("val", hp.val_root), ("test", hp.test_root)):
            if folder:
                folder_paths, folder_labels, _ = _folder_items(Path(folder), self.label_names)
                splits[split] = self._images(folder_paths, folder_labels)
        return splits


class HFImageDataModule(ImageDataModule):
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
        super().__init__()  # saves the arguments above as hyperparameters and reads the shared ones

    def load_splits(self) -> dict[str, Dataset]:
        """Load the data set and wrap its splits (images are decoded on access)."""
        hp = self.hparams
        data = load_hf_dataset(hp.dataset_name, hp.dataset_config, hp.data_files)
        feature = data[hp.train_split].features.get(hp.label_column)
        names = getattr(feature, "names", None)
        if names is None:
            names = [str(v) for v in sorted(set(data[hp.train_split][hp.label_column]))]
        self.label_names = list(names)
        return {
            split: LazyImages(len(rows), _RowReader(rows, hp.image_column, hp.label_column), self.transform)
            for split, rows in hf_splits(
                data, hp.train_split, hp.val_split, hp.test_split, hp.max_train_samples, hp.max_eval_samples
            ).items()
        }


class _RowReader:
    """Picklable ``index -> (image [C,H,W] in [0,1], label)`` over a ``datasets.Dataset``."""

    def __init__(self, rows: Any, image_column: str, label_column: str) -> None:
        self.rows, self.image_column, self.label_column = rows, image_column, label_column

    def __call__(self, index: int) -> tuple[Tensor, int]:
        row = self.rows[index]
        return pil_to_tensor(row[self.image_column]), int(row[self.label_column])
