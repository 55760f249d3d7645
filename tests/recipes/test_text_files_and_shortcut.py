"""Text data modules over local files and HF datasets, and the planted-shortcut task with its rationale masks."""

import importlib.util
import json
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from lightning_xai.recipes import (
    HFTextDataModule,
    ShortcutDataModule,
    TextClassifier,
    TextFileDataModule,
    generate_shortcut_examples,
    read_records,
)
from lightning_xai.recipes.shortcut import NEGATIVE_WORDS, POSITIVE_WORDS


def test_csv_files_with_string_labels(text_csvs, tiny_bert_dir):
    train, val = text_csvs
    dm = TextFileDataModule(
        train_path=str(train),
        val_path=str(val),
        text_column="sentence",
        model_name_or_path=str(tiny_bert_dir),
        batch_size=4,
    )
    dm.setup()
    assert dm.label_names == ["negative", "positive"] and dm.num_labels == 2
    assert dm.texts["val"][:2] == ["the plot was good", "the plot was bad"] and dm.labels["val"][:2] == [1, 0]
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["labels"].tolist() == [1, 0, 1, 0]
    assert dm.tokenizer.convert_ids_to_tokens(batch["input_ids"][0][:5].tolist()) == [
        "[CLS]",
        "the",
        "plot",
        "was",
        "good",
    ]


def test_json_jsonl_int_labels_and_heldout_split(tmp_path, tiny_bert_dir):
    rows = [{"review": f"the film was {w}", "stars": int(w in POSITIVE_WORDS)} for w in POSITIVE_WORDS + NEGATIVE_WORDS]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert read_records(tmp_path / "rows.json") == read_records(tmp_path / "rows.jsonl") == rows
    dm = TextFileDataModule(
        train_path=str(tmp_path / "rows.jsonl"),
        text_column="review",
        label_column="stars",
        val_fraction=0.25,
        model_name_or_path=str(tiny_bert_dir),
        label_names=["bad", "good"],
    )
    dm.setup()
    assert Counter(dm.labels["val"]) == {0: 2, 1: 2} and Counter(dm.labels["train"]) == {0: 6, 1: 6}
    assert not set(dm.texts["val"]) & set(dm.texts["train"])
    assert dm.label_names == ["bad", "good"]


def test_file_errors(tmp_path, text_csvs, tiny_bert_dir):
    train, _ = text_csvs
    with pytest.raises(KeyError, match="text_column='text'"):
        TextFileDataModule(train_path=str(train), model_name_or_path=str(tiny_bert_dir)).setup()
    with pytest.raises(ValueError, match="unsupported data file"):
        read_records(train.with_suffix(".csv").rename(tmp_path / "data.xlsx"))
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(ImportError, match="pip install pyarrow"):
            read_records(tmp_path / "data.parquet")
    bad_val = tmp_path / "val.csv"
    bad_val.write_text("sentence,label\nthe plot was odd,neutral\n")
    dm = TextFileDataModule(
        train_path=str(text_csvs[1]),
        val_path=str(bad_val),
        text_column="sentence",
        model_name_or_path=str(tiny_bert_dir),
    )
    with pytest.raises(ValueError, match="'neutral' is not one of the label names"):
        dm.setup()


def test_hf_datasets_path(text_csvs, tiny_bert_dir, monkeypatch):
    train, val = text_csvs
    kwargs = dict(
        dataset_name="csv",
        dataset_config=None,
        data_files={"train": str(train), "validation": str(val)},
        text_column="sentence",
        model_name_or_path=str(tiny_bert_dir),
        batch_size=4,
    )
    if importlib.util.find_spec("datasets") is not None:  # the real path, on local files
        dm = HFTextDataModule(**kwargs)
        dm.setup()
        assert dm.label_names == ["negative", "positive"] and dm.texts["val"][0] == "the plot was good"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        HFTextDataModule(**kwargs).setup()


def test_shortcut_generator_is_deterministic():
    a = generate_shortcut_examples(50, seed=3, shortcut_rate=1.0, cue_rate=0.5)
    torch.manual_seed(0)
    __import__("random").seed(0)
    assert a == generate_shortcut_examples(50, seed=3, shortcut_rate=1.0, cue_rate=0.5)
    assert a != generate_shortcut_examples(50, seed=4, shortcut_rate=1.0, cue_rate=0.5)
    assert Counter(e.label for e in a) == {0: 25, 1: 25}


def test_shortcut_correlates_with_label_only_in_training():
    train = generate_shortcut_examples(400, seed=0, shortcut_rate=1.0, cue_rate=0.5)
    assert all(e.has_shortcut == (e.label == 1) for e in train)
    assert all(("zx" in e.words) == e.has_shortcut for e in train)
    cued = sum(any(e.rationale) for e in train) / len(train)
    assert 0.4 < cued < 0.6
    val = generate_shortcut_examples(400, seed=1, shortcut_rate=0.5, cue_rate=1.0, correlated=False)
    rates = [sum(e.has_shortcut for e in val if e.label == y) / 200 for y in (0, 1)]
    assert all(0.4 < r < 0.6 for r in rates)  # independent of the label
    for e in val:
        (cue,) = [w for w, r in zip(e.words, e.rationale, strict=True) if r]
        assert cue in (POSITIVE_WORDS if e.label == 1 else NEGATIVE_WORDS)


def test_shortcut_rationale_masks_align_with_word_pieces(tiny_bert_dir):
    # In this vocabulary 'excellent' -> ex ##cell ##ent and 'zx' -> z ##x: the mask must cover all three pieces.
    dm = ShortcutDataModule(
        train_size=64, val_size=64, test_size=8, model_name_or_path=str(tiny_bert_dir), batch_size=64, seed=0
    )
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["rationale_mask"].dtype == torch.bool
    assert batch["rationale_mask"].shape == batch["input_ids"].shape
    tokenizer = dm.tokenizer
    split_cues = 0
    for i, example in enumerate(dm.examples["val"]):
        ids = batch["input_ids"][i]
        mask = batch["rationale_mask"][i]
        assert not mask[batch["attention_mask"][i] == 0].any()  # never on padding
        marked = tokenizer.convert_ids_to_tokens(ids[mask].tolist())
        (cue,) = [w for w, r in zip(example.words, example.rationale, strict=True) if r]
        assert marked == tokenizer.tokenize(cue) and "".join(p.removeprefix("##") for p in marked) == cue
        split_cues += len(marked) > 1
        assert "[UNK]" not in tokenizer.convert_ids_to_tokens(ids.tolist())
    assert split_cues > 0  # the multi-piece case was exercised
    train_batch = next(iter(dm.train_dataloader()))
    assert (train_batch["rationale_mask"].sum(dim=1) <= 3).all()


def test_shortcut_with_bundled_tokenizer_and_classifier_ignores_the_mask(tiny_bert_dir):
    dm = ShortcutDataModule(train_size=16, val_size=8, test_size=0, batch_size=8)  # bundled MiniLM tokenizer
    dm.setup()
    assert dm.label_names == ["negative", "positive"]
    batch = next(iter(dm.val_dataloader()))
    tokens = dm.tokenizer.convert_ids_to_tokens(batch["input_ids"][0][batch["rationale_mask"][0]].tolist())
    assert "".join(t.removeprefix("##") for t in tokens) in POSITIVE_WORDS + NEGATIVE_WORDS
    module = TextClassifier(model_name_or_path=str(tiny_bert_dir), num_labels=2)
    module._trainer = SimpleNamespace(datamodule=dm)
    module.log = lambda *args, **kwargs: None
    small = ShortcutDataModule(train_size=8, val_size=8, test_size=0, model_name_or_path=str(tiny_bert_dir))
    small.setup()
    loss = module.training_step(next(iter(small.train_dataloader())), 0)  # has rationale_mask: not passed on
    assert loss.ndim == 0
