"""The recipes.data package: old import paths, constructor arguments as hyperparameters, shared split helpers."""

import inspect
import sys
from types import SimpleNamespace

import pytest
import torch

import lightning_xai.recipes as recipes
from lightning_xai.recipes import data
from lightning_xai.recipes.data import (
    DigitsDataModule,
    EncodedDataset,
    FacesDataModule,
    HFImageDataModule,
    HFTextDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    SentimentDataModule,
    TextClassificationDataModule,
    TextFileDataModule,
    hf_splits,
)
from lightning_xai.recipes.shortcut import ShortcutDataModule


def test_old_module_paths_re_export_the_moved_objects():
    from lightning_xai.recipes import image_data, text_data, text_files

    for module in (image_data, text_data, text_files):
        for name in module.__all__:
            assert getattr(module, name) is getattr(data, name), (module.__name__, name)
    assert text_data._Encoded is EncodedDataset
    for name in recipes.__all__:
        if hasattr(data, name):
            assert getattr(recipes, name) is getattr(data, name), name


def test_sentiment_is_a_text_classification_module():
    assert issubclass(SentimentDataModule, TextClassificationDataModule)
    assert issubclass(ShortcutDataModule, TextClassificationDataModule)
    for cls in (DigitsDataModule, FacesDataModule, ImageFolderDataModule, HFImageDataModule):
        assert issubclass(cls, ImageDataModule)


def _arguments(cls) -> list[str]:
    return [p for p in inspect.signature(cls).parameters]


@pytest.mark.parametrize("cls", [DigitsDataModule, FacesDataModule, HFImageDataModule])
def test_image_modules_save_every_argument(cls):
    dm = cls(image_size=12, batch_size=5, seed=3, mean=(0.1, 0.2, 0.3))
    assert list(dm.hparams) == _arguments(cls)  # every argument, in signature order (what checkpoints store)
    assert (dm.image_size, dm.batch_size, dm.seed, dm.mean, dm.max_shift) == (12, 5, 3, [0.1, 0.2, 0.3], 0)
    defaults = {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    assert dm.val_fraction == defaults.get("val_fraction", 0.0) and dm.test_fraction == defaults.get(
        "test_fraction", 0.0
    )
    with pytest.raises(ValueError, match="one value per RGB channel"):
        cls(mean=(0.5,))
    with pytest.raises(ValueError, match="image_size and batch_size must be >= 1"):
        cls(batch_size=0)


def test_image_folder_and_text_modules_save_every_argument(image_folder, text_csvs, tiny_bert_dir):
    folder = ImageFolderDataModule(str(image_folder), image_size=8)
    assert list(folder.hparams) == _arguments(ImageFolderDataModule) and folder.hparams.root == str(image_folder)
    text = TextFileDataModule(str(text_csvs[0]), model_name_or_path=str(tiny_bert_dir))
    assert list(text.hparams) == _arguments(TextFileDataModule)
    hf = HFTextDataModule(model_name_or_path=str(tiny_bert_dir))
    assert list(hf.hparams) == _arguments(HFTextDataModule)
    sentiment = SentimentDataModule(model_name_or_path=str(tiny_bert_dir), batch_size=7)
    assert list(sentiment.hparams) == _arguments(SentimentDataModule)
    assert sentiment.batch_size == 7 and sentiment.label_names == ["negative", "neutral", "positive"]
    assert sentiment.train_texts == [] and sentiment.num_labels == 3


def test_loaders_before_setup_say_so(tiny_bert_dir):
    for dm in (DigitsDataModule(), SentimentDataModule(model_name_or_path=str(tiny_bert_dir))):
        with pytest.raises(RuntimeError, match=r"no 'train' split: call setup\(\) first"):
            dm.train_dataloader()


class _Rows(list):
    """A stand-in for a ``datasets.Dataset``: columns by name, rows by index, ``select`` and ``features``."""

    def __init__(self, rows, features=None):
        super().__init__(rows)
        self.features = features or {}

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self]
        return super().__getitem__(key)

    def select(self, indices):
        return _Rows([self[i] for i in indices], self.features)


def test_hf_splits_limits_and_skips():
    data = {"a": _Rows([{"x": i} for i in range(5)]), "b": _Rows([{"x": 9}] * 3)}
    splits = hf_splits(data, "a", "b", "b", max_train_samples=2, max_eval_samples=10)
    assert list(splits) == ["train", "val", "test"] and len(splits["train"]) == 2 and len(splits["test"]) == 3
    assert list(hf_splits(data, "a", None, None)) == ["train"]


def test_hf_image_module_on_a_stand_in_dataset(monkeypatch):
    from PIL import Image

    gray = [Image.new("L", (10, 12), color=40 * i) for i in range(6)]
    rows = [{"image": im, "label": i % 3} for i, im in enumerate(gray)]
    names = SimpleNamespace(names=["a", "b", "c"])
    loaded = {"train": _Rows(rows, {"label": names}), "validation": _Rows(rows[:4])}
    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=lambda *args, **kwargs: loaded))
    dm = HFImageDataModule(
        image_column="image", val_split="validation", image_size=8, batch_size=4, max_eval_samples=3
    )
    dm.setup()
    assert dm.label_names == ["a", "b", "c"] and sorted(dm._datasets) == ["train", "val"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and batch["labels"].tolist() == [0, 1, 2]
    assert torch.equal(batch["pixel_values"][:, 0], batch["pixel_values"][:, 2])  # grayscale repeated
    assert sorted(torch.cat([b["labels"] for b in dm.train_dataloader()]).tolist()) == [0, 0, 1, 1, 2, 2]
