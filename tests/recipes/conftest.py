"""Local stand-ins for the hub models and data sets of the recipes (tiny, written under tmp dirs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_xai.recipes.shortcut import (
    _ADVERBS,
    _SUBJECTS,
    _TAILS,
    _VERBS,
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
)

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def shortcut_vocab() -> list[str]:
    """The shortcut generator's words, except that 'excellent' and 'zx' split into several word pieces."""
    words = {w for group in (_SUBJECTS, _VERBS, _ADVERBS, _TAILS) for phrase in group for w in phrase}
    words |= set(NEGATIVE_WORDS) | set(NEUTRAL_WORDS) | (set(POSITIVE_WORDS) - {"excellent"})
    return SPECIALS + sorted(words) + ["ex", "##cell", "##ent", "z", "##x"]


def save_tiny_bert(folder: Path, vocab: list[str], num_labels: int = 2) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 1-layer, 16-wide BERT + WordPiece tokenizer over the shortcut vocabulary, saved as an HF folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), shortcut_vocab())


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 1-layer ViT for 16x16 images (patch 4) with a 3-class head, saved as an HF folder."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=3,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_csvs(tmp_path_factory) -> tuple[Path, Path]:
    """train.csv / val.csv with columns sentence,label (string labels negative/positive)."""
    folder = tmp_path_factory.mktemp("text_csv")
    rows = {
        "train": [
            (f"the movie was {w}", "positive" if w in POSITIVE_WORDS else "negative")
            for w in POSITIVE_WORDS + NEGATIVE_WORDS
        ],
        "val": [("the plot was good", "positive"), ("the plot was bad", "negative")] * 4,
    }
    for split, items in rows.items():
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence", "label"])
            writer.writerows(items)
    return folder / "train.csv", folder / "val.csv"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """root/{cat,dog}/*.png: 6 RGB 20x20 images per class, plus one grayscale JPEG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir()
        for i in range(6):
            array = (rng.random((20, 20, 3)) * 100 + 120 * c).astype(np.uint8)
            Image.fromarray(array).save(root / name / f"{i}.png")
    Image.fromarray((rng.random((12, 14)) * 255).astype(np.uint8), mode="L").save(root / "cat" / "gray.jpg")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root
