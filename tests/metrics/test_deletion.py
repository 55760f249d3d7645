import math

import pytest
import torch
from helpers import make_inputs, make_model, text_modality
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.deletion import deletion_auc_reference

from lightning_xai import explain
from lightning_xai.explain import logits_of
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import DeletionAUC, ScoringContext, deletion_auc, trapezoid_auc
from lightning_xai.metrics._perturbation import removal_schedule
from lightning_xai.metrics.engine import chunk_bounds, perturbation_curves
from lightning_xai.modalities import VisionModality
from lightning_xai.types import Explanation


def _forward(model):
    return lambda inputs: logits_of(model(**inputs))


@pytest.mark.parametrize("steps", [1, 3, 10])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_equals_slow_per_sample_reference(family, steps):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    modality = text_modality()
    explanation = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"]
    batched = deletion_auc(_forward(model), inputs, explanation, modality, steps=steps, reduction="none",
                           max_batch_size=5)
    for row in range(4):
        length = int(inputs["attention_mask"][row].sum())
        ids = inputs["input_ids"][row, :length].tolist()
        expected = deletion_auc_reference(
            _forward(model),
            ids,
            explanation.content_mask[row, :length].tolist(),
            explanation.relevance[row, :length].tolist(),
            int(explanation.target[row]),
            replacement_id=4,
            steps=steps,
        )
        assert batched[row].item() == pytest.approx(expected, abs=1e-5)


class PlantedTokenModel(torch.nn.Module):
    """Decision rule known exactly: class 1 iff token 7 is present."""

    def forward(self, input_ids, attention_mask=None):
        present = (input_ids == 7).any(dim=1).float()
        return torch.stack([-4 * present, 4 * present], dim=1)


def test_oracle_beats_random_beats_anti_oracle():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 30, (16, 12), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[torch.arange(16), torch.randint(1, 11, (16,), generator=g)] = 7
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    valid = torch.ones_like(ids, dtype=torch.bool)
    special = (ids == 2) | (ids == 3)
    target = torch.ones(16, dtype=torch.long)
    oracle = Explanation("oracle", (ids == 7).float(), valid, special, target)
    anti = Explanation("anti", (ids != 7).float(), valid, special, target)
    random = Explanation("random", torch.rand(16, 12, generator=g), valid, special, target)
    model = PlantedTokenModel()
    modality = text_modality()
    scores = {e.method: float(deletion_auc(_forward(model), inputs, e, modality, steps=10)) for e in
              (oracle, random, anti)}
    assert scores["oracle"] < scores["random"] < scores["anti"]
    p_present = torch.softmax(torch.tensor([-4.0, 4.0]), 0)[1].item()
    # oracle curve: [p_present, 0.5, ..., 0.5] (10 content tokens, the planted one removed at step 1)
    assert scores["oracle"] == pytest.approx((p_present + 0.5) / 20 + 0.5 * 9 / 10, abs=1e-6)


def test_class_accumulates_like_the_functional_over_batches():
    model = make_model("bert", num_labels=2)
    modality = text_modality()
    metric = DeletionAUC(steps=4)
    per_sample = []
    for seed in range(3):
        inputs = make_inputs("bert", batch=3, seed=seed)
        explanation = explain(model, inputs, [Random(seed=seed)], modality=modality)["random"]
        metric.update(explanation, ScoringContext(_forward(model), inputs, modality))
        per_sample.append(deletion_auc(_forward(model), inputs, explanation, modality, steps=4, reduction="none"))
    assert metric.compute().item() == pytest.approx(torch.cat(per_sample).mean().item(), abs=1e-6)
    assert metric.higher_is_better is False


def test_chunking_and_length_sorting_do_not_change_values():
    model = make_model("roberta", num_labels=2)
    modality = text_modality()
    inputs = make_inputs("roberta", batch=5, seed=4)
    explanation = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"]
    a = perturbation_curves(_forward(model), inputs, explanation, modality, steps=5, max_batch_size=1)
    b = perturbation_curves(_forward(model), inputs, explanation, modality, steps=5, max_batch_size=1000)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a[:, 0], torch.softmax(explanation.logits, -1).gather(1, explanation.target[:, None])[:, 0],
                          atol=1e-5)


def test_token_budget_bounds_every_forward_and_does_not_change_values():
    model = make_model("bert", num_labels=2)
    modality = text_modality()
    inputs = make_inputs("bert", batch=5, seed=6)
    explanation = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"]
    shapes = []

    def recording(x):
        shapes.append(tuple(x["input_ids"].shape))
        return _forward(model)(x)

    a = perturbation_curves(_forward(model), inputs, explanation, modality, steps=5, max_tokens=None)
    b = perturbation_curves(recording, inputs, explanation, modality, steps=5, max_tokens=20)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(shapes) > 1
    assert all(rows * width <= 20 or rows == 1 for rows, width in shapes)
    with pytest.raises(ValueError, match="max_tokens"):
        DeletionAUC(max_tokens=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=0, max_size=30), st.integers(1, 8), st.one_of(st.none(),
       st.integers(1, 100)))
def test_chunk_bounds_cover_rows_in_order_within_both_bounds(lengths, max_rows, max_tokens):
    sorted_lengths = torch.tensor(sorted(lengths), dtype=torch.long)
    bounds = chunk_bounds(sorted_lengths, max_rows, max_tokens)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(len(lengths)))
    for start, stop in bounds:
        rows, width = stop - start, int(sorted_lengths[stop - 1]) if stop > start else 0
        assert 1 <= rows <= max_rows
        assert max_tokens is None or rows == 1 or rows * width <= max_tokens
        # greedy: one more row would break a bound
        if stop < len(lengths):
            assert rows == max_rows or (max_tokens is not None and (rows + 1) * int(sorted_lengths[stop]) > max_tokens)


def test_vision_patches_are_replaced_by_the_baseline_and_prefix_never_removed():
    model = make_model("deit", num_labels=3)
    inputs = make_inputs("deit", batch=2)
    modality = VisionModality(patch_size=4)
    explanation = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"]
    seen = []

    def forward(x):
        seen.append(x["pixel_values"].clone())
        return model(**x).logits

    curves = perturbation_curves(forward, inputs, explanation, modality, steps=4, max_batch_size=100)
    pixels = torch.cat(seen)
    assert curves.shape == (2, 5)
    assert (pixels == 0).float().mean() > 0.2  # patches set to the zero baseline
    last = pixels.reshape(2, 5, 3, 16, 16)[:, -1]
    assert torch.all(last == 0)  # everything removed at the last step: all 16 patches (and no prefix "pixels")


def test_samples_without_content_tokens_are_skipped():
    ids = torch.tensor([[2, 3, 0], [2, 9, 3]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    special = torch.tensor([[True, True, True], [True, False, True]])
    exp = Explanation("m", torch.rand(2, 3), valid, special, torch.tensor([0, 0]))
    auc = deletion_auc(_forward(PlantedTokenModel()), {"input_ids": ids}, exp, text_modality(), steps=2,
                       reduction="none")
    assert math.isnan(auc[0].item()) and not math.isnan(auc[1].item())


def test_schedule_and_trapezoid_basics():
    assert removal_schedule(torch.tensor([10]), 10).tolist() == [list(range(11))]
    assert removal_schedule(torch.tensor([3]), 2).tolist() == [[0, 2, 3]]
    assert trapezoid_auc(torch.tensor([[1.0, 1.0, 1.0]])).item() == pytest.approx(1.0)


def test_bad_arguments_raise_with_the_valid_values():
    with pytest.raises(ValueError, match="steps"):
        DeletionAUC(steps=0)
    with pytest.raises(ValueError, match="'prob' or 'logit'"):
        DeletionAUC(score="loss")
