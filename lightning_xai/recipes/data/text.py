"""Tokenized text classification data: the dataset, the padding collator, the length-grouped sampler, the base module.

:class:`TextClassificationDataModule` is what every text data module of the recipes builds on: a tokenizer
(bundled MiniLM by default), texts tokenized once in ``setup``, dynamically padded dict batches (``input_ids``,
``attention_mask``, ``token_type_ids``, ``labels``), a seeded, length-grouped training order and ``label_names`` /
``num_labels`` / ``tokenizer`` attributes (what the explanation monitor and the classifiers read). Subclasses only
say where the texts come from (:meth:`~TextClassificationDataModule.load_splits`).

Labels may be strings (mapped through ``label_names``, or their sorted set in the training split) or integer ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset, Sampler

from lightning_xai.recipes.bundled import minilm_path
from lightning_xai.recipes.data.splits import SplitLoaders

__all__ = [
    "BOOL_KEYS",
    "ENCODED_KEYS",
    "EncodedDataset",
    "LengthGroupedSampler",
    "PadCollator",
    "RawSplits",
    "TextClassificationDataModule",
    "int_label",
]

#: Tokenizer outputs kept per example (those the tokenizer returns).
ENCODED_KEYS = ("input_ids", "attention_mask", "token_type_ids")
#: Per-token fields collated as ``bool`` (padded with ``False``) instead of ``long``.
BOOL_KEYS = frozenset({"rationale_mask"})
#: What :meth:`TextClassificationDataModule.load_splits` returns: ``split -> (texts, raw labels)``.
RawSplits = dict[str, tuple[list[str], list[Any]]]


class EncodedDataset(Dataset):
    """Pre-tokenized examples: a list of ``{"input_ids": [...], ..., "labels": int}`` dicts.

    Example:
        >>> data = EncodedDataset.from_encoding({"input_ids": [[1, 5, 2], [1, 2]]}, labels=[0, 1])
        >>> len(data), data[1]
        (2, {'input_ids': [1, 2], 'labels': 1})
    """

    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    @classmethod
    def from_encoding(
        cls, encoding: Any, labels: Sequence[int], extra: Sequence[dict[str, Any]] | None = None
    ) -> EncodedDataset:
        """One example per label from a tokenizer's batch output, without padding.

        Args:
            encoding: The tokenizer's output for the texts, in order; its :data:`ENCODED_KEYS` are kept.
            labels: Label id of every text.
            extra: Optional per-example fields (e.g. ``rationale_mask``), placed before ``labels``.
        """
        keys = [k for k in ENCODED_KEYS if k in encoding]
        return cls(
            [
                {**{k: encoding[k][i] for k in keys}, **(extra[i] if extra is not None else {}), "labels": label}
                for i, label in enumerate(labels)
            ]
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


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


def int_label(value: Any) -> int | None:
    """``value`` as an integer label id when it is one (an int, an integral float or a digit string), else None.

    Example:
        >>> [int_label(v) for v in (3, 2.0, " -1 ", "pos", True, 0.5)]
        [3, 2, -1, None, None, None]
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


class TextClassificationDataModule(SplitLoaders, LightningDataModule):
    """Shared tokenization / batching of text classification splits. Subclasses implement :meth:`load_splits`.

    Args:
        model_name_or_path: Tokenizer source; ``None`` uses the bundled all-MiniLM-L6-v2 (keep it equal to the
            model's).
        label_names: Class names in id order. ``None``: integer labels name themselves ``"0"``, ``"1"``, ...;
            string labels take the sorted set of the training labels.
        max_length: Tokens kept per text.
        batch_size: Batch size of every loader.
        seed: Seed of the training shuffle (and of any split drawn from the training file).
        num_workers: DataLoader workers.
        group_by_length: Length-grouped training batches (see :class:`LengthGroupedSampler`).

    Attributes:
        tokenizer: The Hugging Face tokenizer.
        label_names: Class names in id order (known after ``setup``, or at once when given).
        texts: ``split -> texts`` and ``labels``: ``split -> label ids`` after ``setup``.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        label_names: list[str] | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        from transformers import AutoTokenizer  # deferred: heavy import

        # Loaded eagerly so `trainer.datamodule.tokenizer` exists before setup() runs.
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path or minilm_path())
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer of {model_name_or_path!r} has no pad token")
        self.collate_fn = PadCollator(self.tokenizer.pad_token_id, getattr(self.tokenizer, "padding_side", "right"))
        self.label_names: list[str] = list(label_names) if label_names is not None else []
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.texts: dict[str, list[str]] = {}
        self.labels: dict[str, list[int]] = {}
        self._datasets: dict[str, EncodedDataset] = {}

    @property
    def num_labels(self) -> int:
        """Number of classes (after ``setup`` unless ``label_names`` was given)."""
        return len(self.label_names)

    def load_splits(self) -> RawSplits:
        """Return ``split -> (texts, raw labels)`` for ``"train"``, ``"val"`` and optionally ``"test"``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load, label-map and tokenize every split (once; later calls are no-ops)."""
        if self._datasets:
            return
        raw = self.load_splits()
        self._resolve_label_names(raw)
        for split, (texts, values) in raw.items():
            ids = [self._label_id(v, split) for v in values]
            self.texts[split], self.labels[split] = list(texts), ids
            self._datasets[split] = self.encode(list(texts), ids)

    def _resolve_label_names(self, raw: RawSplits) -> None:
        if self.label_names:
            return
        values = [v for _, vs in raw.values() for v in vs]
        ints = [int_label(v) for v in values]
        if values and all(i is not None for i in ints):
            self.label_names = [str(i) for i in range(max(ints) + 1)]  # type: ignore[type-var]
        else:
            self.label_names = sorted({str(v) for v in raw["train"][1]})

    def _label_id(self, value: Any, split: str) -> int:
        as_int = int_label(value)
        if isinstance(value, str) and value in self.label_names:
            return self.label_names.index(value)
        if as_int is not None and 0 <= as_int < len(self.label_names):
            return as_int
        raise ValueError(f"{split} label {value!r} is not one of the label names {self.label_names}")

    def encode(self, texts: list[str], labels: list[int]) -> EncodedDataset:
        """Tokenize ``texts`` (no padding) into a dataset of example dicts."""
        if not texts:
            return EncodedDataset([])
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        return EncodedDataset.from_encoding(enc, labels)

    def _collate(self, training: bool) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        return self.collate_fn

    def _train_sampler(self, dataset: Dataset, generator: torch.Generator) -> Sampler[int] | None:
        if not self.group_by_length:
            return None
        lengths = [len(ex["input_ids"]) for ex in dataset.examples]  # type: ignore[attr-defined]
        return LengthGroupedSampler(lengths, self.batch_size, generator=generator)
