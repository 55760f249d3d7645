"""ConceptMonitor: a monitored tiny fit logs the TTCAV keys; bad concept sets fail at construction or setup."""

import pytest
import torch
from helpers import (
    IMAGE_SIZE,
    collate_text,
    image_loaders,
    lightning_package,
    make_text_module_class,
    make_vision_module_class,
    text_loaders,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ConceptMonitor
from lightning_xai.concepts import fit_concept_vectors, ttcav_scores
from lightning_xai.keys import LogKeys

GOOD = ["good movie", "the plot was good", "good fun", "a good plot", "very good"]
OTHER = ["the movie was dull", "awful plot", "not fun", "a dull movie", "bad"]


def _trainer(pl, tmp_path, callbacks, max_epochs=2):
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    return pl.Trainer(
        max_epochs=max_epochs, logger=logger, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1,
        log_every_n_steps=1, default_root_dir=str(tmp_path),
    )  # fmt: skip


def test_text_fit_logs_ttcav_keys_equal_to_a_direct_computation(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders(batch_size=8, n_val=16)
    monitor = ConceptMonitor({"good": GOOD, "other": OTHER}, num_samples=12, num_cavs=3, num_random_cavs=2,
                             batch_size=5, layers=[0, -1])  # fmt: skip
    trainer = _trainer(pl, tmp_path, [monitor])
    with pytest.warns(UserWarning, match="TTCAV heatmaps of 'good' at layer 1 are not drawn: D is 0 on every content"):
        trainer.fit(module, train, val)
    assert sorted(monitor.history) == [0, 1]  # the sanity check is not scored
    logged = monitor.history[1]
    for concept in ("good", "other"):
        for k in (0, 1):
            for layer in (0, 1):
                key = f"xai/ttcav/{concept}/{k}/layer_{layer}"
                assert key in logged and key in trainer.callback_metrics
                assert 0.0 <= logged[key] <= 1.0
    p_values = [value for key, value in logged.items() if key.endswith(("/p_value", "/p_value_random"))]
    assert p_values and all(0.0 <= p <= 1.0 for p in p_values)  # NaN (no spread among the CAVs) is not logged
    assert logged["xai/ttcav/cost/seconds"] > 0
    assert all(LogKeys().parse(key) is None for key in logged)  # never read as an explainer's metric

    # heatmaps of D: the first 2 probe samples, each concept, every epoch; not at the last block, where D is 0 on
    # every token but [CLS] (only the prediction row reaches the head): warned above instead of drawn blank
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    expected_tags = {f"xai/ttcav/{c}/layer_0/heatmap/sample_{i:02d}" for c in ("good", "other") for i in (0, 1)}
    assert tags == expected_tags
    assert len(events.Images("xai/ttcav/good/layer_0/heatmap/sample_00")) == 2

    # the last epoch recomputed directly: the first 12 validation samples, final weights, the same CAV seeds
    rows = [val.dataset[i] for i in range(12)]
    batch = collate_text(rows)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    encode = lambda texts: {k: v for k, v in tokenizer(texts, padding=True, return_tensors="pt").items()}  # noqa: E731
    model = module.model
    vectors = fit_concept_vectors(model, {"good": encode(GOOD), "other": encode(OTHER)}, layers=[0, -1],
                                  num_cavs=3, num_random_cavs=2)  # fmt: skip
    expected = {(s.concept, s.class_index, s.layer): s.score for s in ttcav_scores(model, inputs, batch["labels"],
                                                                                  vectors)}  # fmt: skip
    for (concept, k, layer), score in expected.items():
        assert logged[f"xai/ttcav/{concept}/{k}/layer_{layer}"] == pytest.approx(score, abs=1e-6)


def test_vision_fit_with_negatives_logs_the_keys(tmp_path):
    pl = lightning_package("lightning.pytorch")
    module = make_vision_module_class(pl)("vit")
    train, val = image_loaders()
    g = torch.Generator().manual_seed(0)
    bright = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) + 2.0
    noise = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    monitor = ConceptMonitor({"bright": bright}, negatives=noise, num_samples=8, num_cavs=2, num_random_cavs=2,
                             layers=[0, 1], heatmap_layers=[0], classes=[1])  # fmt: skip
    _trainer(pl, tmp_path, [monitor], max_epochs=1).fit(module, train, val)
    assert {"xai/ttcav/bright/1/layer_0", "xai/ttcav/bright/1/layer_1"} <= set(monitor.history[0])
    assert not any("/0/" in key for key in monitor.history[0])  # classes=[1]
    assert {s.layer for s in monitor.last_scores} == {0, 1}
    samples = monitor.heatmap_samples(monitor.last_vectors)  # D on the 4 x 4 patch grid ([CLS] dropped)
    assert len(samples) == 2 and samples[0].maps["bright/layer_0"].shape == (4, 4) and samples[0].image is not None
    assert set(samples[0].maps) == {"bright/layer_0"} and abs(samples[0].maps["bright/layer_0"]).max() > 0


@pytest.mark.parametrize(
    ("concepts", "negatives", "message"),
    [
        ({}, None, "non-empty mapping"),
        ({"a": [], "b": ["x y", "z"]}, None, "'a' is empty"),
        ({"a": ["only"], "b": ["x y", "z"]}, None, "'a' has one example"),
        ({"a": torch.zeros(1, 3, 16, 16)}, torch.zeros(4, 3, 16, 16), "'a' has one example"),
        ({"a": ["x y", "z w"]}, None, "pass negatives"),
        ({"a": ["x y", "z w"], "b": torch.zeros(2, 3, 16, 16)}, None, "mix sentences and images"),
        ({"a": torch.zeros(2, 16, 16)}, torch.zeros(4, 3, 16, 16), r"float tensor \[n, channels"),
        ({"a/b": ["x y", "z w"], "c": ["a", "b"]}, None, "it is a log key"),
        ({"a": "good movie", "b": ["x y", "z"]}, None, "list of sentences"),
        ({"a": ["x y", ""], "b": ["x y", "z"]}, None, "empty sentence"),
        ({"a": [["x", "y"], [" "]], "b": ["x y", "z"]}, None, "empty word list"),
        ({"a": [["x", 1], ["y"]], "b": ["x y", "z"]}, None, "must hold words"),
    ],
)
def test_bad_concept_sets_fail_at_construction(concepts, negatives, message):
    with pytest.raises(ValueError, match=message):
        ConceptMonitor(concepts, negatives=negatives)


def test_wrong_modality_and_image_size_fail_at_setup(tokenizer):
    pl = lightning_package("lightning.pytorch")
    vision = make_vision_module_class(pl)("vit")
    text = make_text_module_class(pl)(tokenizer)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="are sentences, but ViTForImageClassification is a vision model"):
        ConceptMonitor({"good": GOOD, "other": OTHER}).setup(trainer, vision, "fit")
    images = {"a": torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE), "b": torch.ones(2, 3, IMAGE_SIZE, IMAGE_SIZE)}
    with pytest.raises(ValueError, match="are images, but BertForSequenceClassification is a text model"):
        ConceptMonitor(images).setup(trainer, text, "fit")
    wrong = {"a": torch.zeros(2, 3, 8, 8), "b": torch.ones(2, 3, 8, 8)}
    with pytest.raises(ValueError, match=r"'a': images of shape \(3, 8, 8\) do not fit ViTForImageClassification"):
        ConceptMonitor(wrong).setup(trainer, vision, "fit")
    ConceptMonitor(images).setup(trainer, vision, "fit")  # the right size passes


def test_word_lists_encode_like_their_sentences(tokenizer):
    pl = lightning_package("lightning.pytorch")
    text = make_text_module_class(pl)(tokenizer)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    words = ConceptMonitor({"good": [s.split() for s in GOOD], "other": [s.split() for s in OTHER]})
    sentences = ConceptMonitor({"good": GOOD, "other": OTHER})
    for monitor in (words, sentences):
        monitor.setup(trainer, text, "fit")
    for name in ("good", "other"):
        for key, value in sentences._concept_inputs[name].items():
            assert torch.equal(words._concept_inputs[name][key], value), key


def test_validate_under_inference_mode_scores_and_leaves_the_model_alone(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    _, val = text_loaders(batch_size=8, n_val=16)
    monitor = ConceptMonitor({"good": GOOD, "other": OTHER}, num_samples=8, num_cavs=2, num_random_cavs=2,
                             layers=[-1], num_heatmaps=0)  # fmt: skip
    states = []
    for callbacks in ([], [monitor]):  # the global RNG after validate() is the same with and without the monitor
        trainer = pl.Trainer(logger=False, callbacks=callbacks, enable_progress_bar=False, inference_mode=True)
        before = {k: v.clone() for k, v in module.state_dict().items()}
        torch.manual_seed(0)
        trainer.validate(module, val)
        states.append(torch.random.get_rng_state())
    assert {"xai/ttcav/good/0/layer_1", "xai/ttcav/good/1/layer_1"} <= set(monitor.history[0])
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
    assert torch.equal(states[0], states[1])


def test_multi_process_runs_are_warned_that_scores_come_from_rank_zeros_shard(tokenizer, monkeypatch):
    from lightning_xai import _runtime

    pl = lightning_package("lightning.pytorch")
    text = make_text_module_class(pl)(tokenizer)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    monitor = ConceptMonitor({"good": GOOD, "other": OTHER})
    monitor.setup(trainer, text, "fit")  # one process: nothing to say
    monkeypatch.setattr(_runtime, "world_size", lambda: 2)
    with pytest.warns(UserWarning, match="rank zero's samples only"):
        ConceptMonitor({"good": GOOD, "other": OTHER}).setup(trainer, text, "fit")
