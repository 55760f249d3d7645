"""Splitting data into train/val/test: the loader trio mixin, reproducible splits and Hugging Face splits by name.

* :class:`SplitLoaders`: ``train_dataloader`` / ``val_dataloader`` / ``test_dataloader`` over ``_datasets``, built
  by one ``_loader(split, training)``.
* :func:`stratified_split` (class proportions kept) and :func:`balanced_split` (equal rows per class): seeded
  with a local generator, so the global RNG state does not matter.
* :func:`load_hf_dataset` and :func:`hf_splits`: a Hugging Face ``datasets`` data set by name and its
  train/val/test splits (the optional ``datasets`` package is imported only there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["SplitLoaders", "balanced_split", "hf_splits", "load_hf_dataset", "stratified_split"]


class SplitLoaders:
    """Mixin: ``train_dataloader`` shuffles, ``val``/``test`` keep a fixed order.

    ``_loader(split, training)`` builds the loader of ``split`` from ``self._datasets[split]``; ``training`` is
    True only for the training split (shuffled with a generator seeded by ``self.seed``, plus whatever
    :meth:`_train_sampler` and :meth:`_collate` add for training). Subclasses set ``_datasets``, ``batch_size``,
    ``seed`` and ``num_workers`` and define :meth:`_collate`.
    """

    _datasets: dict[str, Dataset]
    batch_size: int
    seed: int
    num_workers: int

    def _collate(self, training: bool) -> Callable[[list[Any]], Any]:
        """The ``collate_fn`` of the training (``training=True``) or the evaluation loaders."""
        raise NotImplementedError

    def _train_sampler(self, dataset: Dataset, generator: torch.Generator) -> Sampler[int] | None:
        """A sampler that replaces the plain shuffle of the training loader; ``None`` (default): plain shuffle."""
        return None

    def _loader(self, split: str, training: bool) -> DataLoader:
        if split not in self._datasets:
            raise RuntimeError(f"no {split!r} split: call setup() first (or this data module has none)")
        dataset = self._datasets[split]
        generator = torch.Generator().manual_seed(self.seed) if training else None
        sampler = self._train_sampler(dataset, generator) if generator is not None else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            generator=generator if sampler is None else None,
            collate_fn=self._collate(training),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", False)


def stratified_split(labels: Sequence[Any], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split row indices into stratified subsets (each keeps the class proportions), reproducibly.

    Each class's rows are permuted with ``numpy.random.default_rng(seed)``; subset ``k`` takes
    ``round(fractions[k] * n_class)`` rows of every class, in order; the last subset gets every remaining row
    (pass fractions for all but the last). Every subset is shuffled so that classes mix.

    Args:
        labels: Class of every row (ids, or any values ``numpy`` can compare, e.g. label strings).
        fractions: Fraction of each class for each leading subset (e.g. ``[0.2]`` -> val 20%, train the rest).
        seed: Seed of the local generator.

    Returns:
        ``len(fractions) + 1`` lists of indices.

    Raises:
        ValueError: If a fraction is negative or they sum to 1 or more.

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


def balanced_split(labels: Sequence[int], sizes: Sequence[int], num_classes: int, seed: int) -> list[list[int]]:
    """Draw disjoint, class-balanced index subsets, reproducibly and independently of the global RNG.

    Each class's indices are permuted once with ``numpy.random.default_rng(seed)``; the subsets are then taken
    one after the other from that permutation, so earlier subsets do not depend on the sizes of later ones (the
    validation rows stay the same when only ``train_size`` changes). A subset of size ``n`` gets ``n // K`` rows of
    each of the ``K`` classes, the remainder going to the lowest class ids; its order is shuffled so classes mix.

    Args:
        labels: Class id of every row.
        sizes: Number of rows of each subset.
        num_classes: Number of classes ``K``.
        seed: Seed of the local generator.

    Returns:
        One list of row indices per entry of ``sizes``.

    Raises:
        ValueError: If a class has too few rows for the requested sizes.

    Example:
        >>> balanced_split([0, 1, 0, 1, 0, 1, 0, 1], sizes=[2, 4], num_classes=2, seed=0)
        [[7, 4], [2, 5, 0, 3]]
    """
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    per_class = [rng.permutation(np.flatnonzero(labels_arr == c)) for c in range(num_classes)]
    taken = [0] * num_classes
    subsets: list[list[int]] = []
    for size in sizes:
        picked: list[int] = []
        for c in range(num_classes):
            n = size // num_classes + (1 if c < size % num_classes else 0)
            if taken[c] + n > len(per_class[c]):
                raise ValueError(
                    f"class {c} has {len(per_class[c])} rows, fewer than the {taken[c] + n} needed "
                    f"for subset sizes {list(sizes)}"
                )
            picked.extend(per_class[c][taken[c] : taken[c] + n].tolist())
            taken[c] += n
        subsets.append([picked[i] for i in rng.permutation(len(picked))])
    return subsets


def load_hf_dataset(name: str, config: str | None = None, data_files: Any = None, **kwargs: Any) -> Any:
    """``datasets.load_dataset(name, config, data_files=...)`` with a clear error when ``datasets`` is missing.

    Raises:
        ImportError: If the ``datasets`` package is not installed (it says how to install it).
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"Loading the Hugging Face data set {name!r} needs the 'datasets' package: pip install datasets "
            "(and a network for hub data sets). Offline, use the file/folder data modules instead "
            "(TextFileDataModule, ImageFolderDataModule)."
        ) from err
    if data_files is not None:
        kwargs["data_files"] = data_files
    return datasets.load_dataset(name, config, **kwargs)


def hf_splits(
    data: Any,
    train_split: str,
    val_split: str | None,
    test_split: str | None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> dict[str, Any]:
    """The ``"train"`` / ``"val"`` / ``"test"`` splits of a loaded ``datasets.DatasetDict``, by split name.

    Args:
        data: What :func:`load_hf_dataset` returned (anything indexable by split name).
        train_split: Name of the training split.
        val_split: Name of the validation split (``None``: none).
        test_split: Name of the test split (``None``: none).
        max_train_samples: Keep only the first N training rows (``None``: all).
        max_eval_samples: Keep only the first N validation and test rows (``None``: all).

    Returns:
        ``{"train": rows, "val": rows, "test": rows}`` without the splits whose name is ``None``, in that order.

    Example:
        >>> class Rows(list):
        ...     def select(self, indices):
        ...         return Rows(self[i] for i in indices)
        >>> data = {"train": Rows("abcd"), "validation": Rows("xyz")}
        >>> hf_splits(data, "train", "validation", None, max_eval_samples=2)
        {'train': ['a', 'b', 'c', 'd'], 'val': ['x', 'y']}
    """
    splits: dict[str, Any] = {}
    for split, name, limit in (
        ("train", train_split, max_train_samples),
        ("val", val_split, max_eval_samples),
        ("test", test_split, max_eval_samples),
    ):
        if name is None:
            continue
        rows = data[name]
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        splits[split] = rows
    return splits
