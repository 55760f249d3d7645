"""The monitor's shared metric pass costs fewer forwards and gives the same values as each metric alone.

Two savings are checked here against slow references: the unperturbed rows take the explanation forward's logits
(``unperturbed=`` / ``ScoringContext.logits``) instead of a forward, and the length-sorted rows are cut into chunks
that minimise padding (``chunk_bounds(..., forward_cost=)``). Rows and positions are counted with a hook on the model.
"""

import math
from dataclasses import replace

import pytest
import torch
from helpers import left_padded, make_inputs, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import faithfulness as ref

from lightning_xai import explain
from lightning_xai._runtime import ErrorPolicy
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.keys import LogKeys
from lightning_xai.metrics import (
    AOPCComprehensiveness,
    AOPCSufficiency,
    DeletionAUC,
    ScoringContext,
    evaluate_suite,
    forward_removals,
)
from lightning_xai.metrics.engine import chunk_bounds
from lightning_xai.modalities import TextModality
from lightning_xai.scoring import Scoreboard, reusable_logits
from lightning_xai.types import logits_of

MASK = 4
STEPS = 4


def modality(removal="replace"):
    return TextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=MASK, removal=removal)


class RowCounter:
    """Counts the rows and positions of every no-grad forward of ``model``, and keeps their input ids."""

    def __init__(self, model):
        self.rows = self.positions = 0
        self.ids: list[torch.Tensor] = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, _args, kwargs):
        if not torch.is_grad_enabled():
            ids = kwargs["input_ids"]
            self.rows += ids.shape[0]
            self.positions += ids.numel()
            self.ids.extend(ids.clone())

    def close(self):
        self.handle.remove()


@pytest.fixture(scope="module")
def case():
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=6, seed=5)
    maps = explain(model, inputs, [GradSAM(), Random(seed=2)], modality=modality())
    # signed, tie-free relevance: the conventions' tie-breaking (earlier vs later position first) plays no part
    g = torch.Generator().manual_seed(3)
    maps = {name: replace(e, relevance=torch.randn(e.relevance.shape, generator=g) * e.valid_mask)
            for name, e in maps.items()}
    return model, inputs, maps


def _metrics():
    return [DeletionAUC(steps=STEPS), AOPCComprehensiveness(), AOPCSufficiency()]


def _forward(model):
    return lambda inputs: logits_of(model(**inputs))


def _memoized(model):
    """One unpadded sample's logits, each distinct input forwarded once (the references repeat many)."""
    seen = {}

    def forward(inputs):
        key = tuple(tuple(v.flatten().tolist()) for v in inputs.values())
        if key not in seen:
            seen[key] = logits_of(model(**inputs))
        return seen[key]

    return forward


def _reference(metric, forward, ids, content, relevance, target):
    """The slow per-sample reference of one metric (one unpadded sample, one perturbation per forward)."""
    if isinstance(metric, DeletionAUC):
        return ref.curve_reference(forward, ids, content, relevance, target, MASK, STEPS)
    sufficiency = isinstance(metric, AOPCSufficiency)
    return ref.aopc_reference(forward, ids, content, relevance, target, MASK, "eraser", sufficiency=sufficiency)


def test_reused_unperturbed_rows_give_each_metric_alone_per_sample(case):
    model, inputs, maps = case
    logits = next(iter(maps.values())).logits
    stats: list[dict[str, int]] = []
    metrics = _metrics()
    shared = evaluate_suite(_forward(model), inputs, maps, modality(), metrics, stats=stats, unperturbed=logits)
    assert stats[0]["reused_rows"] == inputs["input_ids"].shape[0]  # one unperturbed row per sample, not forwarded
    reference = _memoized(model)
    for metric, per_method in zip(metrics, shared, strict=True):
        for name, explanation in maps.items():
            for row in range(inputs["input_ids"].shape[0]):
                length = int(inputs["attention_mask"][row].sum())
                expected = _reference(metric, reference, inputs["input_ids"][row, :length].tolist(),
                                      explanation.content_mask[row, :length].tolist(),
                                      explanation.relevance[row, :length].tolist(), int(explanation.target[row]))
                value = per_method[name][row].item()
                assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, abs=1e-5), (
                    metric.name, name, row)


def test_shared_pass_forwards_fewer_rows_and_positions_than_each_metric_alone(case):
    model, inputs, maps = case
    batch = inputs["input_ids"].shape[0]
    logits = next(iter(maps.values())).logits
    counter = RowCounter(model)
    try:
        with torch.no_grad():
            alone = {(m.name, name): m.sample_values(e, ScoringContext(_forward(model), inputs, modality()))
                     for m in _metrics() for name, e in maps.items()}
            alone_rows, alone_positions = counter.rows, counter.positions
            counter.rows = counter.positions = 0
            plain = evaluate_suite(_forward(model), inputs, maps, modality(), _metrics())
            plain_rows = counter.rows
            counter.rows = counter.positions = 0
            counter.ids.clear()
            stats: list[dict[str, int]] = []
            reused = evaluate_suite(_forward(model), inputs, maps, modality(), _metrics(), stats=stats,
                                    unperturbed=logits)
    finally:
        counter.close()
    assert stats[0]["forwarded_rows"] == counter.rows == plain_rows - batch
    assert stats[0]["tokens"] == counter.positions
    assert counter.rows < alone_rows and counter.positions < alone_positions
    for row in range(batch):  # no forward saw an unperturbed sample
        length = int(inputs["attention_mask"][row].sum())
        original = inputs["input_ids"][row, :length]
        assert not any(ids.shape[0] >= length and torch.equal(ids[:length], original) and not ids[length:].any()
                       for ids in counter.ids), row
    for i, metric in enumerate(_metrics()):
        for name in maps:
            torch.testing.assert_close(reused[i][name], plain[i][name], atol=1e-6, rtol=0, equal_nan=True)
            torch.testing.assert_close(reused[i][name], alone[(metric.name, name)], atol=1e-6, rtol=0,
                                       equal_nan=True)


def test_no_reuse_where_removing_nothing_changes_the_inputs(case):
    model, inputs, maps = case
    shifted = left_padded(inputs)  # "delete" moves the kept tokens first: left padding becomes right padding
    exps = {name: replace(e, relevance=e.relevance.gather(1, _left_order(inputs)),
                          valid_mask=shifted["attention_mask"].bool(),
                          special_mask=e.special_mask.gather(1, _left_order(inputs)))
            for name, e in maps.items()}
    logits = next(iter(maps.values())).logits
    stats: dict[str, int] = {}
    masks = torch.cat([DeletionAUC(steps=STEPS).removal_masks(e) for e in exps.values()], dim=1)
    padded_rows = shifted["attention_mask"][:, 0] == 0
    with torch.no_grad():
        out = forward_removals(_forward(model), shifted, modality("delete"), masks, stats=stats, unperturbed=logits)
        plain = forward_removals(_forward(model), shifted, modality("delete"), masks)
    assert stats["reused_rows"] == int((~padded_rows).sum())  # only the rows without padding come back unchanged
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unperturbed must be"):
        forward_removals(_forward(model), inputs, modality(), masks, unperturbed=logits[:2])


def _left_order(inputs):
    return torch.argsort(inputs["attention_mask"].bool().long(), dim=1, stable=True)


def test_scoreboard_values_are_unchanged_by_the_reuse(case):
    model, inputs, maps = case
    names = list(maps)
    values = []
    for logits in (None, reusable_logits(model, maps)):
        board = Scoreboard(names, _metrics(), LogKeys(), ErrorPolicy("raise"), baseline="random")
        with torch.no_grad():
            board.update(maps, ScoringContext(_forward(model), inputs, modality(), logits=logits), {})
        values.append(board.compute(distributed=False)[0])
    assert values[0].keys() == values[1].keys() and any("gain_vs_random" in key for key in values[0])
    for key in values[0]:
        torch.testing.assert_close(values[1][key], values[0][key], atol=1e-6, rtol=0, equal_nan=True)


def test_reusable_logits_only_in_full_precision(case):
    model, _, maps = case
    assert reusable_logits(model, maps) is next(iter(maps.values())).logits
    half = make_model("bert", num_labels=3).to(torch.bfloat16)
    assert reusable_logits(half, maps) is None
    other = {**maps, "grad_sam": replace(maps["grad_sam"], logits=maps["grad_sam"].logits.clone())}
    assert reusable_logits(model, other) is None  # two forwards: which one would be reused is unclear
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert reusable_logits(model, maps) is None
    finally:
        torch.set_float32_matmul_precision(previous)


def _cost(bounds, lengths, forward_cost):
    return sum((stop - start) * lengths[stop - 1] + forward_cost for start, stop in bounds)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=120), rows=st.integers(1, 50),
       tokens=st.one_of(st.none(), st.integers(1, 600)), forward_cost=st.integers(0, 200))
def test_chunks_respect_the_bounds_and_pad_no_more_than_greedy(lengths, rows, tokens, forward_cost):
    lengths = sorted(lengths)
    greedy = chunk_bounds(torch.tensor(lengths), rows, tokens)
    tight = chunk_bounds(torch.tensor(lengths), rows, tokens, forward_cost=forward_cost)
    assert [b for a in tight for b in a] == [0, *[b for a in tight[:-1] for b in (a[1], a[1])], len(lengths)]
    for start, stop in tight:
        assert 1 <= stop - start <= rows
        assert tokens is None or stop - start == 1 or (stop - start) * lengths[stop - 1] <= tokens
    assert _cost(tight, lengths, forward_cost) <= _cost(greedy, lengths, forward_cost)
