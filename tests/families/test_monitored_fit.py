"""A short monitored fit per architecture: every method its family does not refuse logs finite scores."""

import math

import pytest
from helpers import (
    ARCHITECTURES,
    CAUSAL_LMS,
    VISION_FAMILIES,
    image_loaders,
    lightning_package,
    make_decoder_tokenizer,
    make_text_module_class,
    make_tokenizer,
    make_vision_module_class,
    text_loaders,
)

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import get_explainer, list_explainers
from lightning_xai.families import resolve_family
from lightning_xai.metrics import DeletionAUC

pl = lightning_package("lightning.pytorch")
DECODER_FAMILIES = {"decoder", "gpt2"}


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_method_the_family_serves_logs_finite_scores(architecture, tmp_path):
    if architecture in CAUSAL_LMS:
        pytest.skip("a causal LM is fitted on an SFT batch, not a class label: tests/families/test_causal_lm.py")
    explainers = [get_explainer(name, steps=4) if name == "integrated_gradients" else get_explainer(name)
                  for name in list_explainers()]
    if architecture in VISION_FAMILIES:
        module = make_vision_module_class(pl)(family=architecture)
        train, val = image_loaders(n_train=8, n_val=4, batch_size=4)
    else:
        decoder = ARCHITECTURES[architecture] in DECODER_FAMILIES
        tokenizer = make_decoder_tokenizer() if decoder else make_tokenizer()
        module = make_text_module_class(pl)(tokenizer, family=architecture)
        train, val = text_loaders(n_train=8, n_val=4, batch_size=4)
    family = resolve_family(module.model)
    served = [e.name for e in explainers if family.refusal(e.name, e.requirements()) is None]
    refused = [e for e in explainers if e.name not in served]
    monitor = ExplanationMonitor(explainers=[e for e in explainers if e.name in served], metrics=[DeletionAUC(steps=2)],
                                 num_samples=4, num_heatmaps=0, on_error="raise", write_files=False)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=False, callbacks=[monitor],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, train, val)
    logged = monitor.history[0]
    for name in served:
        value = logged.get(f"xai/{name}/deletion_auc")
        assert value is not None and math.isfinite(value), (name, sorted(logged))
    if refused:  # a refused method makes the monitor refuse at setup under on_error="raise"
        with pytest.raises(Exception, match="refused|cannot explain"):
            ExplanationMonitor(explainers=refused, on_error="raise").setup(trainer, module, "fit")
