"""DigitConcepts: deterministic image concept sets for vit_digits.yaml's ConceptMonitor, written in YAML."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ConceptMonitor, cli
from lightning_xai.callbacks.concept_monitor import ConceptSource
from lightning_xai.recipes import DigitConcepts, DigitsDataModule

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY_VIT = [
    "--model.init_args.hidden_size=16",
    "--model.init_args.num_layers=2",
    "--model.init_args.num_heads=2",
    "--data.init_args.batch_size=16",
]


def test_sets_are_deterministic_with_the_recipe_shapes_and_normalisation():
    source = DigitConcepts(image_size=16)  # the recipe's settings: 2 x 40 concept images, 99 negatives
    sets, negatives = source.concept_sets(), source.negative_set()
    assert isinstance(source, ConceptSource)
    assert list(sets) == ["thick", "inverted"]
    assert {name: tuple(x.shape) for name, x in sets.items()} == {"thick": (40, 3, 16, 16), "inverted": (40, 3, 16, 16)}
    assert negatives is not None and tuple(negatives.shape) == (99, 3, 16, 16)
    again = DigitConcepts(image_size=16)
    for name, images in sets.items():
        assert torch.equal(images, again.concept_sets()[name])
    assert torch.equal(negatives, again.negative_set())

    # the images are the data module's held-out test split, preprocessed the same way (so never trained on)
    data = DigitsDataModule(image_size=16, val_fraction=0.2, test_fraction=0.1, seed=0)
    data.setup("fit")
    test = data._datasets["test"].pixels
    assert len(test) == 179
    assert torch.allclose(negatives, test[80:], atol=1e-6)
    # inverted = 1 - image in [0, 1], i.e. the negated normalised image with mean = std = 0.5
    assert torch.allclose(sets["inverted"], -test[40:80], atol=1e-6)
    # thick = a 3x3 max filter of the image (max commutes with the normalisation)
    dilated = torch.nn.functional.max_pool2d(test[:40], kernel_size=3, stride=1, padding=1)
    assert torch.allclose(sets["thick"], dilated, atol=1e-6)
    assert (sets["thick"] >= test[:40] - 1e-6).all() and (sets["thick"] > test[:40] + 1e-3).any()
    assert sets["thick"].amin() >= -1 - 1e-6 and sets["thick"].amax() <= 1 + 1e-6

    other = DigitConcepts(image_size=32, concepts=["plain", "thick"], per_concept=3, num_negatives=0,
                          mean=[0.0] * 3, std=[1.0] * 3)  # fmt: skip
    assert other.negative_set() is None
    plain = other.concept_sets()["plain"]
    assert tuple(plain.shape) == (3, 3, 32, 32) and plain.amin() >= 0 and plain.amax() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concepts": ["stripes"]}, "unknown digit concept 'stripes'"),
        ({"concepts": []}, "concepts is empty"),
        ({"concepts": ["thick", "thick"]}, "name a concept twice"),
        ({"per_concept": 1}, "per_concept must be an integer >= 2"),
        ({"num_negatives": 1}, "at least 2 images"),
        ({"num_negatives": -1}, "num_negatives must be an integer >= 0"),
        ({"per_concept": 60, "num_negatives": 99}, r"= 219 images, but the digits' test split .* holds 179"),
        ({"std": [0.5, 0.0, 0.5]}, "std > 0"),
    ],
)
def test_bad_specs_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitConcepts(**kwargs)


def test_the_monitor_takes_a_source_and_checks_what_it_builds():
    monitor = ConceptMonitor(DigitConcepts(per_concept=4, num_negatives=6))
    assert monitor.concept_names == ["thick", "inverted"] and monitor.kind == "vision"
    assert tuple(monitor.negatives.shape) == (6, 3, 16, 16)
    explicit = torch.zeros(3, 3, 16, 16)
    assert ConceptMonitor(DigitConcepts(per_concept=4, num_negatives=6), negatives=explicit).negatives is explicit
    assert ConceptMonitor(DigitConcepts(per_concept=4, num_negatives=0)).negatives is None  # relative CAVs

    class NotAMapping:
        def concept_sets(self):
            return [torch.zeros(2, 3, 16, 16)]

        def negative_set(self):
            return None

    class OneImage(NotAMapping):
        def concept_sets(self):
            return {"a": torch.zeros(1, 3, 16, 16), "b": torch.zeros(2, 3, 16, 16)}

    with pytest.raises(ValueError, match=r"NotAMapping.concept_sets\(\) must return a mapping"):
        ConceptMonitor(NotAMapping())
    with pytest.raises(ValueError, match="'a' has one example"):
        ConceptMonitor(OneImage())
    with pytest.raises(ValueError, match="or a ConceptSource"):
        ConceptMonitor(object())
    with pytest.raises(ValueError, match="one concept without negatives"):
        ConceptMonitor(DigitConcepts(concepts=["thick"], num_negatives=0))


def test_a_concept_set_of_the_wrong_size_fails_at_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(RECIPES / "vit_digits.yaml"), "--trainer.fast_dev_run=1", *TINY_VIT,
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    config = yaml.safe_load((RECIPES / "vit_digits.yaml").read_text())
    (concept,) = [c for c in config["trainer"]["callbacks"] if c["class_path"] == "lightning_xai.ConceptMonitor"]
    concept["init_args"]["concepts"]["init_args"]["image_size"] = 8  # the model takes 16 x 16
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(config))
    args[2] = str(path)
    with pytest.raises(ValueError, match=r"'thick': images of shape \(3, 8, 8\) do not fit"):
        cli.main(args)


@pytest.mark.filterwarnings("ignore:The number of training batches", "ignore:.*log_every_n_steps.*")
def test_the_recipe_logs_the_concept_keys(tmp_path, monkeypatch):
    """vit_digits.yaml's ConceptMonitor, instantiated from the YAML, logs its keys (every epoch here)."""
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((RECIPES / "vit_digits.yaml").read_text())
    (concept,) = [c for c in config["trainer"]["callbacks"] if c["class_path"] == "lightning_xai.ConceptMonitor"]
    assert concept["init_args"]["concepts"]["class_path"] == "lightning_xai.recipes.DigitConcepts"
    for callback in config["trainer"]["callbacks"]:
        callback["init_args"]["every_n_epochs"] = 1
    concept["init_args"].update(num_samples=16, num_cavs=2, num_random_cavs=2)
    path = tmp_path / "vit_digits.yaml"
    path.write_text(yaml.safe_dump(config))
    cli.main(
        ["fit", "--config", str(path), *TINY_VIT, f"--trainer.default_root_dir={tmp_path}",
         f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.max_epochs=1",
         "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
         "--trainer.enable_checkpointing=false"]
    )  # fmt: skip
    events = EventAccumulator(str(tmp_path / "runs" / "vit_digits" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    scores = {t for t in scalars if t.startswith("xai/ttcav/") and t.count("/") == 4}
    assert {t.split("/")[2] for t in scores} == {"thick", "inverted"}
    assert {t.split("/")[4] for t in scores} == {"layer_0", "layer_1"}  # the stand-in's two blocks
    assert "xai/ttcav/cost/seconds" in scalars
    assert any(t.endswith("/p_value_random") for t in scalars)
    images = set(events.Tags()["images"])
    assert {"xai/ttcav/thick/layer_0/heatmap/sample_00", "xai/ttcav/inverted/layer_0/heatmap/sample_01"} <= images
