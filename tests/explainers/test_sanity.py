"""Sanity checks in the spirit of Adebayo et al. (NeurIPS 2018): maps depend on what the model learned.

A tiny BERT learns "label = 1 iff the word 'good' occurs" (48 Adam steps, not to saturation: a saturated tanh
pooler zeroes every gradient); its maps must (1) differ from those of the same
architecture with re-initialised weights (model-parameter randomisation) and (2) put the planted token on top.
"""

import pytest
import torch
from helpers import VOCAB, collate_text, make_model, modality_for, text_dataset

from lightning_xai import explain
from lightning_xai.explainers import GradSAM
from lightning_xai.explainers.attention import Rollout
from lightning_xai.explainers.gae import GAE
from lightning_xai.explainers.gradients import GradientXInput, IntegratedGradients
from lightning_xai.explainers.legrad import LeGrad

GOOD = VOCAB.index("good")
METHODS = [GradSAM(), GAE(), GradientXInput(), IntegratedGradients(steps=8), LeGrad(), Rollout()]
#: Methods that must find the planted token (rollout is class-agnostic and is only randomisation-checked).
MUST_FIND = ("grad_sam", "gae", "gradient_x_input", "integrated_gradients", "legrad")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = make_model("bert", seed=0).train()
    data = text_dataset(96, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(48):
        batch = collate_text([data[(step * 16 + i) % len(data)] for i in range(16)])
        labels = batch.pop("labels")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    val = collate_text(text_dataset(48, seed=2))
    labels = val.pop("labels")
    with torch.no_grad():
        accuracy = (model(**val).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9, f"the tiny model did not learn the planted token (accuracy {accuracy:.2f})"
    return model, {key: value[labels == 1] for key, value in val.items()}  # positive samples


def _spearman(a, b):
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm() + 1e-12))


def test_planted_token_is_on_top_for_most_positive_samples(trained):
    model, val = trained
    maps = explain(model, val, METHODS, modality=modality_for("bert"), target=1)
    planted = val["input_ids"] == GOOD
    for name in MUST_FIND:
        scores = maps[name].relevance.masked_fill(~maps[name].content_mask, float("-inf"))
        hits = planted.gather(1, scores.argmax(dim=1, keepdim=True)).float().mean()
        assert hits >= 0.8, f"{name} puts the planted token on top for only {hits:.0%} of positive samples"


def test_maps_change_when_the_weights_are_randomised(trained):
    model, val = trained
    randomised = make_model("bert", seed=123)
    modality = modality_for("bert")
    learned = explain(model, val, METHODS, modality=modality, target=1)
    random = explain(randomised, val, METHODS, modality=modality, target=1)
    for method in METHODS:
        a, b = learned[method.name], random[method.name]
        rhos = [
            _spearman(a.relevance[r][a.content_mask[r]], b.relevance[r][a.content_mask[r]])
            for r in range(val["input_ids"].shape[0])
        ]
        mean = sum(rhos) / len(rhos)
        assert mean < 0.6, f"{method.name}: rank correlation {mean:.2f} between trained and randomised maps"
