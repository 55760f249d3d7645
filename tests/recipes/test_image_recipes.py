"""Image data modules (digits, faces, folders, HF datasets) and the ImageClassifier module."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from lightning_xai.recipes import (
    DigitsDataModule,
    FacesDataModule,
    HFImageDataModule,
    ImageClassifier,
    ImageFolderDataModule,
    stratified_split,
)
from lightning_xai.recipes._optim import lr_multiplier


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(image_size=16, batch_size=32)
    dm.setup("fit")
    return dm


def _all(loader):
    batches = list(loader)
    return torch.cat([b["pixel_values"] for b in batches]), torch.cat([b["labels"] for b in batches])


def test_digits_batches_shapes_labels_and_normalisation(digits):
    batch = next(iter(digits.val_dataloader()))
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (32, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long
    assert digits.label_names == [str(d) for d in range(10)] and digits.num_labels == 10
    pixels, labels = _all(digits.val_dataloader())
    assert pixels.min() >= -1.0 - 1e-6 and pixels.max() <= 1.0 + 1e-6
    assert torch.equal(pixels[:, 0], pixels[:, 1])  # grayscale repeated to 3 channels
    sizes = [len(digits._datasets[s]) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[1] == pytest.approx(0.2 * 1797, abs=10)
    counts = Counter(labels.tolist())
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 2  # stratified


def test_digits_labels_match_sklearn(digits):
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels, labels = _all(digits.val_dataloader())
    # the upsampled image of every validation row shrinks back to its sklearn digit, with the same label
    small = torch.nn.functional.avg_pool2d(pixels[:, :1], 2)[:, 0]
    originals = torch.from_numpy(data.images / 8.0 - 1.0).float()  # the 0..16 -> [-1, 1] normalisation
    nearest = torch.cdist(small.flatten(1), originals.flatten(1)).argmin(dim=1)
    assert (torch.from_numpy(data.target)[nearest] == labels).float().mean() > 0.98


def test_digits_split_deterministic_and_train_shuffles(digits):
    other = DigitsDataModule(image_size=16, batch_size=32)
    torch.manual_seed(123)
    other.setup()
    assert torch.equal(_all(other.val_dataloader())[1], _all(digits.val_dataloader())[1])
    first = next(iter(digits.train_dataloader()))["labels"]
    assert torch.equal(first, next(iter(other.train_dataloader()))["labels"])
    assert not torch.equal(first, digits._datasets["train"].labels[:32])


def test_random_shift_only_in_training():
    dm = DigitsDataModule(image_size=16, batch_size=8, max_shift=2)
    dm.setup()
    plain = dm._datasets["train"].pixels[:8]
    torch.manual_seed(0)
    shifted = next(iter(dm.train_dataloader()))["pixel_values"]
    assert shifted.shape == plain.shape
    val = next(iter(dm.val_dataloader()))["pixel_values"]
    assert torch.equal(val, dm._datasets["val"].pixels[:8])


def test_faces_module():
    dm = FacesDataModule(image_size=32, batch_size=16, val_fraction=0.2, test_fraction=0.1)
    dm.setup()
    assert dm.label_names == ["face", "non-face"] and dm.num_labels == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape == (16, 3, 32, 32)
    assert Counter(_all(dm.val_dataloader())[1].tolist()) == {0: 20, 1: 20}
    assert len(dm._datasets["test"]) == 20 and len(dm._datasets["train"]) == 140


def test_image_folder_module(image_folder):
    dm = ImageFolderDataModule(root=str(image_folder), image_size=8, batch_size=4, val_fraction=0.34)
    assert dm.label_names == ["cat", "dog"]
    dm.setup()
    pixels, labels = _all(dm.val_dataloader())
    assert pixels.shape[1:] == (3, 8, 8) and Counter(labels.tolist()) == {0: 2, 1: 2}
    assert len(dm._datasets["train"]) == 9  # 7 cats (one grayscale JPEG) + 6 dogs - 4 held out; the .txt is ignored
    # the dog images are brighter: class ids follow the sorted folder names
    train_pixels, train_labels = _all(dm.train_dataloader())
    assert train_pixels[train_labels == 1].mean() > train_pixels[train_labels == 0].mean()
    with_val = ImageFolderDataModule(root=str(image_folder), val_root=str(image_folder), image_size=8, batch_size=4)
    with_val.setup()
    assert len(with_val._datasets["val"]) == 13 and len(with_val._datasets["train"]) == 13


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolderDataModule(root=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderDataModule(root=str(tmp_path))


def test_hf_image_module_needs_datasets(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    dm = HFImageDataModule(dataset_name="cifar10")
    with pytest.raises(ImportError, match="pip install datasets"):
        dm.setup()


def test_stratified_split_is_deterministic_and_disjoint():
    labels = [i % 3 for i in range(30)]
    a = stratified_split(labels, [0.2, 0.1], seed=0)
    assert a == stratified_split(labels, [0.2, 0.1], seed=0) and a != stratified_split(labels, [0.2, 0.1], seed=1)
    assert sorted(sum(a, [])) == list(range(30))
    assert [Counter(labels[i] for i in part) for part in a[:2]] == [{0: 2, 1: 2, 2: 2}, {0: 1, 1: 1, 2: 1}]


def test_image_classifier_from_scratch():
    module = ImageClassifier(
        num_labels=4, image_size=16, patch_size=4, hidden_size=32, num_layers=2, num_heads=2, architecture="deit"
    )
    assert type(module.model).__name__ == "DeiTForImageClassification"
    assert module.model.config._attn_implementation == "sdpa"
    assert module.model.training
    assert module(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    module._trainer = SimpleNamespace(
        estimated_stepping_batches=20, datamodule=SimpleNamespace(label_names=list("abcd"))
    )
    module.setup("fit")
    assert module.model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}
    module.log = lambda *args, **kwargs: None  # no Trainer to log into
    loss = module.training_step({"pixel_values": torch.randn(3, 3, 16, 16), "labels": torch.tensor([0, 1, 3])}, 0)
    assert loss.ndim == 0 and loss.requires_grad
    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert any(names[id(p)].endswith("cls_token") for p in no_decay["params"])


def test_image_classifier_from_local_folder(tiny_vit_dir):
    module = ImageClassifier(model_name_or_path=str(tiny_vit_dir), num_labels=5, label_names=list("vwxyz"))
    assert module.model.config.num_labels == 5 and module.model.config.id2label[4] == "z"
    assert module(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


def test_image_classifier_argument_checks():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ImageClassifier(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="schedule"):
        ImageClassifier(image_size=16, hidden_size=32, num_heads=2, schedule="exp")


def test_cosine_and_linear_schedules():
    cosine = [lr_multiplier(s, 2, 10, "cosine") for s in range(10)]
    linear = [lr_multiplier(s, 2, 10, "linear") for s in range(10)]
    assert cosine[:2] == linear[:2] and cosine[2] == linear[2] == 1.0
    assert all(a >= b for a, b in zip(cosine[2:], cosine[3:], strict=False))
    assert cosine[4] > linear[4]  # cosine stays higher in the first half of the decay
    assert lr_multiplier(5, 0, None, "cosine") == 1.0
