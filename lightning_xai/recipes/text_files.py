"""Text classification data modules over local files (CSV/TSV/JSON/JSONL/Parquet) and HF ``datasets`` by name.

Both share :class:`TextClassificationDataModule`: a tokenizer (bundled MiniLM by default), texts tokenized once
in ``setup``, dynamically padded dict batches (``input_ids``, ``attention_mask``, ``token_type_ids``,
``labels``), a seeded, length-grouped training order and ``label_names`` / ``num_labels`` / ``tokenizer``
attributes (what the explanation monitor and the classifiers read).

Labels may be strings (mapped through ``label_names``, or their sorted set in the training split) or integer ids.

Example::

    >>> from lightning_xai.recipes import TextFileDataModule
    >>> dm = TextFileDataModule(train_path="train.csv", val_path="val.csv", text_column="review",
    ...                         label_column="stars")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lightning_xai.recipes._hf import load_hf_dataset
from lightning_xai.recipes._splits import SplitLoaders
from lightning_xai.recipes.bundled import minilm_path
from lightning_xai.recipes.image_data import stratified_split
from lightning_xai.recipes.text_data import LengthGroupedSampler, PadCollator, _Encoded

__all__ = ["HFTextDataModule", "TextClassificationDataModule", "TextFileDataModule", "read_records"]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    r"""Read a table file into a list of row dicts, by suffix.

    ``.csv`` / ``.tsv`` (header row), ``.json`` (a list of objects, or JSON lines), ``.jsonl`` / ``.ndjson``, and
    ``.parquet`` (needs ``pyarrow``).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
        >>> _ = open(path, "w").write('{"text": "fine", "label": 1}\n{"text": "meh", "label": 0}\n')
        >>> read_records(path)
        [{'text': 'fine', 'label': 1}, {'text': 'meh', 'label': 0}]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # JSON lines saved as .json
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if isinstance(data, dict):  # {"data": [...]} or column-oriented {"text": [...], "label": [...]}
            if len(data) == 1 and isinstance(next(iter(data.values())), list):
                inner = next(iter(data.values()))
                if all(isinstance(r, dict) for r in inner):
                    return inner
            columns = {k: v for k, v in data.items() if isinstance(v, list)}
            length = len(next(iter(columns.values()), []))
            return [{k: v[i] for k, v in columns.items()} for i in range(length)]
        return list(data)
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(f"reading {path.name} needs pyarrow: pip install pyarrow") from err
        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported data file {path.name}: use .csv, .tsv, .json, .jsonl or .parquet")


def _as_int(value: Any) -> int | None:
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
        self._datasets: dict[str, _Encoded] = {}

    @property
    def num_labels(self) -> int:
        """Number of classes (after ``setup`` unless ``label_names`` was given)."""
        return len(self.label_names)

    def load_splits(self) -> dict[str, tuple[list[str], list[Any]]]:
        """Return ``split -> (texts, raw labels)`` for ``"train"``, ``"val"`` and optionally ``"test"``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load, label-map and tokenize every split (once)."""
        if self._datasets:
            return
        raw = self.load_splits()
        self._resolve_label_names(raw)
        for split, (texts, values) in raw.items():
            ids = [self._label_id(v, split) for v in values]
            self.texts[split], self.labels[split] = list(texts), ids
            self._datasets[split] = self.encode(list(texts), ids)

    def _resolve_label_names(self, raw: dict[str, tuple[list[str], list[Any]]]) -> None:
        if self.label_names:
            return
        values = [v for _, vs in raw.values() for v in vs]
        ints = [_as_int(v) for v in values]
        if values and all(i is not None for i in ints):
            self.label_names = [str(i) for i in range(max(ints) + 1)]  # type: ignore[type-var]
        else:
            self.label_names = sorted({str(v) for v in raw["train"][1]})

    def _label_id(self, value: Any, split: str) -> int:
        as_int = _as_int(value)
        if isinstance(value, str) and value in self.label_names:
            return self.label_names.index(value)
        if as_int is not None and 0 <= as_int < len(self.label_names):
            return as_int
        raise ValueError(f"{split} label {value!r} is not one of the label names {self.label_names}")

    def encode(self, texts: list[str], labels: list[int]) -> _Encoded:
        """Tokenize ``texts`` (no padding) into a dataset of example dicts."""
        if not texts:
            return _Encoded([])
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return _Encoded([{**{k: enc[k][i] for k in keys}, "labels": label} for i, label in enumerate(labels)])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            raise RuntimeError(f"no {split!r} split: call setup() first (or this data module has none)")
        dataset = self._datasets[split]
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        sampler = None
        if shuffle and self.group_by_length:
            lengths = [len(ex["input_ids"]) for ex in dataset.examples]
            sampler = LengthGroupedSampler(lengths, self.batch_size, generator=generator)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=generator if sampler is None else None,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )



class TextFileDataModule(TextClassificationDataModule):
    """Text classification from local files: CSV, TSV, JSON, JSON lines or Parquet (``pyarrow`` needed).

    Args:
        train_path: Training file.
        val_path: Validation file; ``None`` holds out a stratified ``val_fraction`` of the training file.
        test_path: Optional test file.
        text_column: Column holding the text.
        label_column: Column holding the label (a name or an integer id).
        val_fraction: Used only without ``val_path``.
        model_name_or_path: Tokenizer (``None``: bundled MiniLM).
        label_names: Class names in id order (see :class:`TextClassificationDataModule`).
        max_length: Tokens kept per text.
        batch_size: Batch size.
        seed: Seed of the training shuffle and of the held-out split.
        num_workers: DataLoader workers.
        group_by_length: Length-grouped training batches.
    """

    def __init__(
        self,
        train_path: str,
        val_path: str | None = None,
        test_path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        val_fraction: float = 0.1,
        model_name_or_path: str | None = None,
        label_names: list[str] | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__(model_name_or_path, label_names, max_length, batch_size, seed, num_workers, group_by_length)
        self.save_hyperparameters()

    def _read(self, path: str) -> tuple[list[str], list[Any]]:
        hp = self.hparams
        rows = read_records(path)
        if rows and (hp.text_column not in rows[0] or hp.label_column not in rows[0]):
            raise KeyError(
                f"{path} has columns {sorted(rows[0])}; text_column={hp.text_column!r} and "
                f"label_column={hp.label_column!r} must be among them"
            )
        rows = [r for r in rows if r[hp.text_column] is not None and str(r[hp.text_column]).strip()]
        return [" ".join(str(r[hp.text_column]).split()) for r in rows], [r[hp.label_column] for r in rows]

    def load_splits(self) -> dict[str, tuple[list[str], list[Any]]]:
        """Read the files; split the training file when there is no validation file."""
        hp = self.hparams
        splits = {"train": self._read(hp.train_path)}
        if hp.val_path:
            splits["val"] = self._read(hp.val_path)
        else:
            texts, labels = splits["train"]
            val, train = stratified_split([str(v) for v in labels], [hp.val_fraction], hp.seed)
            splits = {
                "train": ([texts[i] for i in train], [labels[i] for i in train]),
                "val": ([texts[i] for i in val], [labels[i] for i in val]),
            }
        if hp.test_path:
            splits["test"] = self._read(hp.test_path)
        return splits


class HFTextDataModule(TextClassificationDataModule):
    """A Hugging Face ``datasets`` text classification data set by name (e.g. ``glue``/``sst2``): needs a network.

    Needs ``pip install datasets``. Local files go through the same path with a builder name and ``data_files``
    (``dataset_name="csv", data_files={"train": "train.csv", "validation": "val.csv"}``). Label names come from
    the label column's ``ClassLabel`` feature when it has one. Rows with a negative label (GLUE's unlabelled test
    splits) are dropped.

    Args:
        dataset_name: Name passed to ``datasets.load_dataset``.
        dataset_config: Configuration name (``"sst2"`` for ``glue``).
        data_files: ``data_files`` for local builders (``csv``, ``json``, ``parquet``).
        text_column: Column holding the text (``"sentence"`` for SST-2).
        label_column: Column holding the label.
        train_split: Split used for training.
        val_split: Split used for validation.
        test_split: Split used for testing (``None``: none).
        max_train_samples: Keep only the first N training rows.
        max_eval_samples: Keep only the first N validation/test rows.
        model_name_or_path: Tokenizer (``None``: bundled MiniLM).
        label_names: Class names in id order (default: from the data set's features).
        max_length: Tokens kept per text.
        batch_size: Batch size.
        seed: Seed of the training shuffle.
        num_workers: DataLoader workers.
        group_by_length: Length-grouped training batches.
    """

    def __init__(
        self,
        dataset_name: str = "glue",
        dataset_config: str | None = "sst2",
        data_files: Any = None,
        text_column: str = "sentence",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        model_name_or_path: str | None = None,
        label_names: list[str] | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__(model_name_or_path, label_names, max_length, batch_size, seed, num_workers, group_by_length)
        self.save_hyperparameters()

    def load_splits(self) -> dict[str, tuple[list[str], list[Any]]]:
        """Load the data set and take its train/validation(/test) splits."""
        hp = self.hparams
        data = load_hf_dataset(hp.dataset_name, hp.dataset_config, hp.data_files)
        if not self.label_names:
            names = getattr(data[hp.train_split].features.get(hp.label_column), "names", None)
            if names:
                self.label_names = list(names)
        splits: dict[str, tuple[list[str], list[Any]]] = {}
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
            pairs = [
                (" ".join(str(t).split()), y)
                for t, y in zip(rows[hp.text_column], rows[hp.label_column], strict=True)
                if t is not None and not (_as_int(y) is not None and _as_int(y) < 0)  # type: ignore[operator]
            ]
            splits[split] = ([t for t, _ in pairs], [y for _, y in pairs])
        return splits
