"""The degenerate-map guard: all-zero or one-hot maps are counted, warned once and not scored."""

import pytest
import torch
from helpers import lightning_package, make_text_module_class, text_loaders

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.explainers import GradSAM
from lightning_xai.explainers.base import Explainer
from lightning_xai.metrics import DeletionAUC, deletion_auc
from lightning_xai.modalities import TextModality

pl = lightning_package("lightning.pytorch")


class _AllZero(Explainer):
    name = "all_zero"

    def explain(self, forward):
        return torch.zeros_like(forward.valid_mask, dtype=torch.float32)


class _OneHotFirst(Explainer):
    """What a [CLS]-row reading gives on a causal model: everything on the first content token."""

    name = "one_hot"

    def explain(self, forward):
        content = forward.valid_mask & ~forward.special_mask
        first = content.float().argmax(dim=1)
        return torch.nn.functional.one_hot(first, content.shape[1]).float()


class _HalfZero(Explainer):
    """Grad-SAM's map on even probe rows, zeros on odd ones: only the odd rows are degenerate."""

    name = "half_zero"

    def explain(self, forward):
        relevance = GradSAM().explain(forward).detach().float()
        relevance[1::2] = 0
        return relevance


def test_all_zero_and_one_hot_maps_are_counted_warned_and_not_scored(tmp_path, tokenizer):
    monitor = ExplanationMonitor(
        explainers=[GradSAM(), _AllZero(), _OneHotFirst(), _HalfZero()], metrics=[DeletionAUC(steps=3)],
        num_samples=8, batch_size=4, num_heatmaps=0, write_files=False,
    )
    train, val = text_loaders(n_val=8)
    trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    module = make_text_module_class(pl)(tokenizer)
    with pytest.warns(UserWarning, match=r"'all_zero' gave degenerate maps .*model family 'bert'") as record:
        trainer.fit(module, train, val)
    messages = [str(w.message) for w in record if "degenerate maps" in str(w.message)]
    assert sum("'all_zero'" in m for m in messages) == 1  # once, although both chunks had them
    assert any("'one_hot'" in m for m in messages) and any("'half_zero'" in m for m in messages)
    logged = monitor.history[0]
    assert logged["xai/all_zero/degenerate_samples"] == 8 and logged["xai/one_hot/degenerate_samples"] == 8
    assert logged["xai/half_zero/degenerate_samples"] == 4
    assert "xai/grad_sam/degenerate_samples" not in logged  # nothing degenerate: no key
    # never scored as if valid: no metric, gain or agreement value for a method whose every map is degenerate
    for method in ("all_zero", "one_hot"):
        assert not [k for k in logged if method in k and not k.endswith("degenerate_samples")], method
    assert "xai/half_zero/deletion_auc" in logged and "xai/grad_sam/deletion_auc" in logged
    # the half-degenerate method is scored on exactly the samples it ranks: Grad-SAM's value on the even rows
    modality = TextModality.from_tokenizer(tokenizer)
    probe = monitor.probe.collate(modality).inputs
    even = {key: value[0::2] for key, value in probe.items()}
    module.model.eval()  # the monitor scores in eval mode
    maps = explain(module.model, even, [GradSAM()], modality=modality)
    with torch.no_grad():
        expected = deletion_auc(lambda x: module.model(**x).logits, even, maps["grad_sam"], modality, steps=3)
    assert logged["xai/half_zero/deletion_auc"] == pytest.approx(float(expected), abs=1e-6)


def test_the_guard_on_its_own():
    from lightning_xai.scoring import degenerate_rows
    from lightning_xai.types import Explanation

    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False], [True] * 4])
    special = torch.tensor([[True, False, False, False]] * 4)
    relevance = torch.tensor([[5.0, 0.0, 0.0, 0.0],  # only the special token: all zero on content
                              [0.0, 0.0, 2.0, 0.0],  # one-hot on 3 content tokens
                              [0.0, 3.0, 0.0, 0.0],  # one content token: one-hot is all it can be
                              [0.0, -1.0, 2.0, 0.0]])  # a ranking
    rows = degenerate_rows(Explanation("m", relevance, valid, special, torch.zeros(4, dtype=torch.long)))
    assert rows.tolist() == [True, True, False, False]
