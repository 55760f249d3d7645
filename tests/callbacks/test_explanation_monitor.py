import pytest
import torch
from helpers import (
    image_loaders,
    lightning_package,
    make_text_module_class,
    make_vision_module_class,
    text_loaders,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.errors import BatchFormatError, LightningXAIError, UnsupportedModelError
from lightning_xai.explain import logits_of
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.explainers.base import Explainer
from lightning_xai.metrics import DeletionAUC, deletion_auc
from lightning_xai.modalities import TextModality, VisionModality

PACKAGES = ["lightning.pytorch", "pytorch_lightning"]


def _trainer(pl, tmp_path, callbacks, logger=True, **kwargs):
    if logger is True:
        logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    options = dict(max_epochs=2, logger=logger, callbacks=callbacks, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, deterministic=True,
                   num_sanity_val_steps=2, log_every_n_steps=1, default_root_dir=str(tmp_path))
    options.update(kwargs)
    return pl.Trainer(**options)


def _events(tmp_path):
    accumulator = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


@pytest.mark.parametrize("package", PACKAGES)
def test_text_fit_logs_exact_scalars_and_heatmaps_to_tensorboard(package, tmp_path, tokenizer):
    pl = lightning_package(package)
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders(batch_size=8, n_val=16)
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], metrics=[DeletionAUC(steps=5)], num_samples=12,
                                 num_heatmaps=3, batch_size=5)
    trainer = _trainer(pl, tmp_path, [monitor])
    trainer.fit(module, train, val)

    assert sorted(monitor.history) == [0, 1]  # sanity check skipped: exactly one entry per epoch
    keys = {"xai/grad_sam/deletion_auc", "xai/random/deletion_auc"}
    assert keys <= set(monitor.history[1])
    assert keys <= set(trainer.callback_metrics)

    # recompute the last epoch independently: the first 12 validation samples, final weights
    width = max(len(val.dataset[i]["input_ids"]) for i in range(12))
    ids = torch.zeros(12, width, dtype=torch.long)
    mask = torch.zeros(12, width, dtype=torch.long)
    for i in range(12):
        row = val.dataset[i]["input_ids"]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    model = module.model
    modality = TextModality.from_tokenizer(tokenizer)
    maps = explain(model, {"input_ids": ids, "attention_mask": mask}, [GradSAM()], modality=modality)["grad_sam"]
    model.eval()
    expected = deletion_auc(lambda x: logits_of(model(**x)), {"input_ids": ids, "attention_mask": mask}, maps,
                            modality, steps=5)
    model.train()
    assert monitor.history[1]["xai/grad_sam/deletion_auc"] == pytest.approx(float(expected), abs=1e-5)

    events = _events(tmp_path)
    for key in keys:
        logged = [event.value for event in events.Scalars(key)]
        assert logged == pytest.approx([monitor.history[0][key], monitor.history[1][key]], abs=1e-6)
    image_tags = set(events.Tags()["images"])
    for method in ("grad_sam", "random"):
        for i in range(3):
            tag = f"xai/{method}/heatmap/sample_{i:02d}"
            assert tag in image_tags
            assert len(events.Images(tag)) == 2  # one per epoch
            assert events.Images(tag)[0].width > 100 and events.Images(tag)[0].height > 20
    assert "xai/grad_sam/heatmap/sample_03" not in image_tags


@pytest.mark.parametrize("package", PACKAGES)
def test_validate_under_default_inference_mode(package, tmp_path, tokenizer):
    pl = lightning_package(package)
    module = make_text_module_class(pl)(tokenizer)
    _, val = text_loaders()
    monitor = ExplanationMonitor(num_samples=6, num_heatmaps=1, metrics=[DeletionAUC(steps=3)])
    trainer = _trainer(pl, tmp_path, [monitor])
    assert trainer.validate_loop.inference_mode
    seen = []
    original = module.validation_step

    def spy(batch, batch_idx):
        seen.append(torch.is_inference_mode_enabled())
        return original(batch, batch_idx)

    module.validation_step = spy
    results = trainer.validate(module, val, verbose=False)
    assert seen and all(seen)  # really ran under inference mode
    assert "xai/grad_sam/deletion_auc" in results[0]
    assert 0.0 <= results[0]["xai/grad_sam/deletion_auc"] <= 1.0
    assert module.model.config._attn_implementation == "sdpa"


def test_vision_fit_logs_overlays(tmp_path):
    pl = lightning_package("lightning.pytorch")
    module = make_vision_module_class(pl)("deit")
    train, val = image_loaders()
    monitor = ExplanationMonitor(num_samples=8, num_heatmaps=2, metrics=[DeletionAUC(steps=4)])
    trainer = _trainer(pl, tmp_path, [monitor], max_epochs=1)
    trainer.fit(module, train, val)
    events = _events(tmp_path)
    assert {"xai/grad_sam/heatmap/sample_00", "xai/grad_sam/heatmap/sample_01"} <= set(events.Tags()["images"])
    assert [e.value for e in events.Scalars("xai/grad_sam/deletion_auc")] == pytest.approx(
        [monitor.history[0]["xai/grad_sam/deletion_auc"]])
    assert isinstance(monitor._modality, VisionModality)


class _Exploding(Explainer):
    name = "exploding"
    needs = frozenset({"attention_gradients"})

    def explain(self, forward):
        forward.attention_gradients()
        raise RuntimeError("injected failure")


def _train_once(tmp_path, tokenizer, callbacks):
    pl = lightning_package("lightning.pytorch")
    pl.seed_everything(123)
    module = make_text_module_class(pl)(tokenizer)
    from helpers import collate_text, text_dataset
    from torch.utils.data import DataLoader

    train = DataLoader(text_dataset(32, seed=1), batch_size=8, shuffle=True, collate_fn=collate_text)  # global RNG
    val = DataLoader(text_dataset(16, seed=2), batch_size=8, shuffle=True, collate_fn=collate_text)
    trainer = _trainer(pl, tmp_path, callbacks, logger=False, deterministic=False)
    trainer.fit(module, train, val)
    optimizer = trainer.optimizers[0].state_dict()
    return module.model.state_dict(), optimizer, torch.rand(3)


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path, tokenizer):
    base_weights, base_optim, base_next = _train_once(tmp_path / "a", tokenizer, [])
    monitor = ExplanationMonitor(explainers=[GradSAM(), Random(), _Exploding()], num_samples=10, num_heatmaps=0,
                                 metrics=[DeletionAUC(steps=3)], on_error="warn")
    with pytest.warns(UserWarning, match="injected failure"):
        weights, optim, next_draw = _train_once(tmp_path / "b", tokenizer, [monitor])
    assert {"xai/grad_sam/deletion_auc", "xai/random/deletion_auc", "xai/exploding/skipped_samples"} <= set(
        monitor.history[1])
    assert not any(key.startswith("xai/exploding/") and "skipped" not in key for key in monitor.history[1])
    assert monitor.history[1]["xai/exploding/skipped_samples"] == 10  # every probe sample, counted once per epoch
    for key, value in base_weights.items():
        assert torch.equal(value, weights[key]), key
    for index, state in base_optim["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optim["state"][index][name]), (index, name)
    assert torch.equal(base_next, next_draw)  # the global RNG stream continues exactly as without monitoring


def test_probe_set_is_identical_every_epoch_even_with_a_shuffled_val_loader(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    from helpers import collate_text, text_dataset
    from torch.utils.data import DataLoader

    seen = []

    class Recording(Random):
        name = "recording"

        def explain(self, forward):
            seen.append(forward.inputs["input_ids"].clone())
            return super().explain(forward)

    module = make_text_module_class(pl)(tokenizer)
    train, _ = text_loaders()
    val = DataLoader(text_dataset(16, seed=2), batch_size=4, shuffle=True, collate_fn=collate_text)
    monitor = ExplanationMonitor(explainers=[Recording()], num_samples=6, num_heatmaps=0,
                                 metrics=[DeletionAUC(steps=2)])
    _trainer(pl, tmp_path, [monitor], max_epochs=3, logger=False).fit(module, train, val)
    assert len(seen) == 3 and all(torch.equal(seen[0], epoch) for epoch in seen[1:])


def test_every_n_epochs(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()
    monitor = ExplanationMonitor(num_samples=4, num_heatmaps=0, every_n_epochs=2, metrics=[DeletionAUC(steps=2)])
    _trainer(pl, tmp_path, [monitor], max_epochs=4, logger=False).fit(module, train, val)
    assert sorted(monitor.history) == [1, 3]


def test_on_error_raise_surfaces_the_cause_and_restores_the_model(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()
    monitor = ExplanationMonitor(explainers=[_Exploding()], num_samples=4, on_error="raise")
    with pytest.raises(LightningXAIError, match="explainer 'exploding' failed: RuntimeError: injected failure"):
        _trainer(pl, tmp_path, [monitor], max_epochs=1, logger=False).fit(module, train, val)
    assert module.model.config._attn_implementation == "sdpa"


def test_unsupported_model_fails_at_setup_with_the_supported_families(tmp_path):
    pl = lightning_package("lightning.pytorch")

    class LSTMModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(4, 4)

        def validation_step(self, batch, batch_idx):
            pass

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4)), batch_size=2)
    trainer = _trainer(pl, tmp_path, [ExplanationMonitor()], logger=False)
    with pytest.raises(UnsupportedModelError, match="Supported model families"):
        trainer.validate(LSTMModule(), loader, verbose=False)


def test_text_model_without_tokenizer_fails_at_setup_saying_what_to_do(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    module.tokenizer = None
    _, val = text_loaders()
    with pytest.raises(LightningXAIError, match="tokenizer=") :
        _trainer(pl, tmp_path, [ExplanationMonitor()], logger=False).validate(module, val, verbose=False)


def test_unknown_batch_format_names_the_batch_adapter(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")

    class OddBatches(make_text_module_class(pl)):
        def validation_step(self, batch, batch_idx):
            pass

    module = OddBatches(tokenizer)
    loader = torch.utils.data.DataLoader([{"tokens": "a b c"}] * 4, batch_size=2)
    monitor = ExplanationMonitor(on_error="raise")
    with pytest.raises(BatchFormatError, match="batch_adapter="):
        _trainer(pl, tmp_path, [monitor], logger=False).validate(module, loader, verbose=False)
    warn_monitor = ExplanationMonitor()
    with pytest.warns(UserWarning, match="batch_adapter="):
        _trainer(pl, tmp_path, [warn_monitor], logger=False).validate(module, loader, verbose=False)
    assert warn_monitor.history == {}


def test_custom_batch_adapter(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()

    def adapter(batch):
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, batch["labels"]

    monitor = ExplanationMonitor(batch_adapter=adapter, target="label", num_samples=4, num_heatmaps=0,
                                 metrics=[DeletionAUC(steps=2)])
    _trainer(pl, tmp_path, [monitor], max_epochs=1, logger=False).fit(module, train, val)
    assert "xai/grad_sam/deletion_auc" in monitor.history[0]


def test_arguments_are_checked_at_construction():
    with pytest.raises(ValueError, match="num_samples"):
        ExplanationMonitor(num_samples=0)
    with pytest.raises(ValueError, match="unique"):
        ExplanationMonitor(explainers=[GradSAM(), GradSAM()])
    with pytest.raises(ValueError, match="target"):
        ExplanationMonitor(target="best")
    with pytest.raises(TypeError, match="Explainer"):
        ExplanationMonitor(explainers=[object()])
    with pytest.raises(TypeError, match="Metric"):
        ExplanationMonitor(metrics=[3])
    with pytest.raises(ValueError, match="grad_sum"):
        ExplanationMonitor(explainers=["grad_sum"])


def test_methods_can_be_named():
    monitor = ExplanationMonitor(explainers=["grad_sam", "random"], metrics=["deletion_auc", "insertion_auc"])
    assert [explainer.name for explainer in monitor.explainers] == ["grad_sam", "random"]
    assert [type(metric).__name__ for metric in monitor.metrics] == ["DeletionAUC", "InsertionAUC"]


def test_state_dict_round_trip():
    monitor = ExplanationMonitor()
    monitor.history = {0: {"xai/grad_sam/deletion_auc": 0.5}}
    other = ExplanationMonitor()
    other.load_state_dict(monitor.state_dict())
    assert other.history == monitor.history
    assert "grad_sam" in monitor.state_key


def test_class_index_the_model_lacks_is_refused_at_setup(tmp_path, tokenizer):
    pl = lightning_package("lightning.pytorch")
    module = make_text_module_class(pl)(tokenizer)
    _, val = text_loaders()
    monitor = ExplanationMonitor(target=7, num_samples=4, num_heatmaps=0)
    with pytest.raises(ValueError, match=r"target=7 is not a class of this model, which has 2"):
        _trainer(pl, tmp_path, [monitor], logger=False).validate(module, val, verbose=False)
    assert monitor.history == {}
