import math

import pytest
import torch
from helpers import make_inputs, make_model, make_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import faithfulness as ref

from lightning_xai import explain
from lightning_xai.errors import LightningXAIError
from lightning_xai.explain import logits_of
from lightning_xai.explainers import GradSAM, Random
from lightning_xai.metrics import (
    AOPCComprehensiveness,
    AOPCSufficiency,
    AreaBetweenCurves,
    DeletionAUC,
    EmbeddingForward,
    InsertionAUC,
    LogOdds,
    ScoringContext,
    aopc_comprehensiveness,
    aopc_sufficiency,
    area_between_curves,
    au_mse,
    auac,
    aupc,
    deletion_auc,
    evaluate_suite,
    forward_removals,
    insertion_auc,
    kendall_tau,
    leave_one_out_tau,
    log_odds,
    perturbation_curves_multi,
)
from lightning_xai.modalities import TextModality
from lightning_xai.types import Explanation

UNK, MASK = 1, 4


def modality(removal="replace", tokenizer=None):
    return TextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=MASK, removal=removal,
                        token_ids={"unk": UNK, "mask": MASK, "pad": 0}, tokenizer=tokenizer)


TOKENIZER = make_tokenizer()
RETOKENIZE = ref.retokenizing(TOKENIZER)


def _forward(model):
    return lambda inputs: logits_of(model(**inputs))


@pytest.fixture(scope="module")
def setup():
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=4, seed=3)
    exp = explain(model, inputs, [GradSAM()], modality=modality())["grad_sam"]
    # signed, tie-free relevance so every convention's tie-breaking is irrelevant
    g = torch.Generator().manual_seed(1)
    rel = (torch.randn(exp.relevance.shape, generator=g) * exp.valid_mask)
    exp = Explanation("m", rel, exp.valid_mask, exp.special_mask, exp.target, True, exp.logits)
    return model, inputs, exp


def _rows(inputs, exp):
    for row in range(inputs["input_ids"].shape[0]):
        length = int(inputs["attention_mask"][row].sum())
        yield (row, inputs["input_ids"][row, :length].tolist(), exp.content_mask[row, :length].tolist(),
               exp.relevance[row, :length].tolist(), int(exp.target[row]))


CASES = [
    ("deletion_morf", lambda f, i, e: deletion_auc(f, i, e, modality(), steps=4, reduction="none", max_batch_size=3),
     lambda m, ids, c, r, t: ref.curve_reference(m, ids, c, r, t, MASK, 4)),
    ("deletion_lerf", lambda f, i, e: deletion_auc(f, i, e, modality(), steps=3, order="lerf", reduction="none"),
     lambda m, ids, c, r, t: ref.curve_reference(m, ids, c, r, t, MASK, 3, order="lerf")),
    ("deletion_attention", lambda f, i, e: deletion_auc(f, i, e, modality(), steps=3, removal="attention",
                                                        reduction="none"),
     lambda m, ids, c, r, t: ref.curve_reference(m, ids, c, r, t, MASK, 3, mode="attention")),
    ("insertion_unk", lambda f, i, e: insertion_auc(f, i, e, modality(), steps=4, removal="unk", reduction="none"),
     lambda m, ids, c, r, t: ref.curve_reference(m, ids, c, r, t, UNK, 4, insertion=True)),
    ("comp_eraser", lambda f, i, e: aopc_comprehensiveness(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "eraser")),
    ("suff_eggen", lambda f, i, e: aopc_sufficiency(f, i, e, modality(), convention="eggen", reduction="none"),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "eggen", sufficiency=True)),
    ("comp_ferret_delete", lambda f, i, e: aopc_comprehensiveness(f, i, e, modality(), convention="ferret",
                                                                  removal="delete", reduction="none", max_batch_size=2),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "ferret", mode="delete")),
    ("suff_ferret_delete", lambda f, i, e: aopc_sufficiency(f, i, e, modality(), convention="ferret", removal="delete",
                                                            reduction="none"),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "ferret", sufficiency=True, mode="delete")),
    ("comp_ferret", lambda f, i, e: aopc_comprehensiveness(f, i, e, modality(tokenizer=TOKENIZER), convention="ferret",
                                                           reduction="none", max_batch_size=2),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "ferret", mode=RETOKENIZE)),
    ("suff_ferret", lambda f, i, e: aopc_sufficiency(f, i, e, modality(tokenizer=TOKENIZER), convention="ferret",
                                                     reduction="none"),
     lambda m, ids, c, r, t: ref.aopc_reference(m, ids, c, r, t, MASK, "ferret", sufficiency=True, mode=RETOKENIZE)),
    ("log_odds", lambda f, i, e: log_odds(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.log_odds_reference(m, ids, c, r, t, MASK)),
    ("auac", lambda f, i, e: auac(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.ali_reference(m, ids, c, r, t, UNK, "auac")),
    ("aupc", lambda f, i, e: aupc(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.ali_reference(m, ids, c, r, t, UNK, "aupc")),
    ("au_mse", lambda f, i, e: au_mse(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.ali_reference(m, ids, c, r, t, UNK, "au_mse")),
    ("loo_delete", lambda f, i, e: leave_one_out_tau(f, i, e, modality(), reduction="none"),
     lambda m, ids, c, r, t: ref.loo_tau_reference(m, ids, c, r, t, MASK)),
    ("loo_replace", lambda f, i, e: leave_one_out_tau(f, i, e, modality(), removal="replace", reduction="none"),
     lambda m, ids, c, r, t: ref.loo_tau_reference(m, ids, c, r, t, MASK, mode="replace")),
    ("loo_retokenize", lambda f, i, e: leave_one_out_tau(f, i, e, modality(tokenizer=TOKENIZER), removal="retokenize",
                                                         reduction="none", max_batch_size=5),
     lambda m, ids, c, r, t: ref.loo_tau_reference(m, ids, c, r, t, MASK, mode=RETOKENIZE)),
]


@pytest.mark.parametrize("name,batched,reference", CASES, ids=[c[0] for c in CASES])
def test_equals_slow_per_sample_reference(setup, name, batched, reference):
    model, inputs, exp = setup
    values = batched(_forward(model), inputs, exp)
    for row, ids, content, rel, target in _rows(inputs, exp):
        expected = reference(_forward(model), ids, content, rel, target)
        if math.isnan(expected):
            assert math.isnan(values[row].item())
        else:
            assert values[row].item() == pytest.approx(expected, abs=2e-5), (name, row)


def test_area_between_curves_zero_embedding_reference(setup):
    model, inputs, exp = setup
    fwd = EmbeddingForward(model)
    value = area_between_curves(fwd, inputs, exp, modality(), steps=3, removal="zero_embedding", reduction="none")
    for row, ids, content, rel, target in _rows(inputs, exp):
        n = sum(content)
        curves = []
        for descending in (True, False):
            ranked = ref._order(content, rel, descending=descending)
            ys = []
            for k in range(4):
                m = math.ceil(k * n / 3 - 1e-9)
                x = {"input_ids": torch.tensor([ids])}
                ys.append(fwd.zeroed(x, torch.tensor([[i in ranked[:m] for i in range(len(ids))]]))[0, target].item())
            curves.append(ref._trapz(ys))
        assert value[row].item() == pytest.approx(curves[1] - curves[0], abs=1e-4)
    with pytest.raises(TypeError, match="EmbeddingForward"):
        area_between_curves(_forward(model), inputs, exp, modality(), removal="zero_embedding")


def test_retokenize_is_ferrets_round_trip_and_differs_from_delete(setup):
    model, inputs, exp = setup
    # the random rows contain lone word pieces ("##ing" after a deleted word), so the round trip changes ids
    changed = 0
    text = modality(tokenizer=TOKENIZER)
    for row, ids, _, _, _ in _rows(inputs, exp):
        for position in range(1, len(ids) - 1):
            kept = ids[:position] + ids[position + 1 :]
            again = TOKENIZER(TOKENIZER.decode(kept[1:-1]))["input_ids"]
            changed += again != kept
            perturbed = text.variant("retokenize").remove(
                {k: v[row : row + 1] for k, v in inputs.items()},
                torch.tensor([[i == position for i in range(inputs["input_ids"].shape[1])]]))
            assert perturbed["input_ids"][0][perturbed["attention_mask"][0].bool()].tolist() == again
    assert changed > 0
    delete = leave_one_out_tau(_forward(model), inputs, exp, text, reduction="none")
    retokenize = leave_one_out_tau(_forward(model), inputs, exp, text, removal="retokenize", reduction="none")
    assert not torch.allclose(delete, retokenize, equal_nan=True)
    with pytest.raises(LightningXAIError, match="needs the tokenizer"):
        aopc_comprehensiveness(_forward(model), inputs, exp, modality(), convention="ferret")
    pair = dict(inputs, token_type_ids=torch.ones_like(inputs["input_ids"]))
    with pytest.raises(LightningXAIError, match="single sequences"):
        text.variant("retokenize").remove(pair, torch.zeros_like(pair["input_ids"], dtype=torch.bool))


class Planted(torch.nn.Module):
    """p(class 1) = sigmoid(8) iff token 7 is present, else 0.5."""

    def forward(self, input_ids, attention_mask=None):
        present = (input_ids == 7).any(dim=1).float()
        return torch.stack([torch.zeros_like(present), 8 * present], dim=1)


def _toy(relevance, ids=(2, 10, 11, 7, 12, 3)):
    ids = torch.tensor([list(ids)])
    valid = torch.ones_like(ids, dtype=torch.bool)
    special = (ids == 2) | (ids == 3)
    return {"input_ids": ids}, Explanation("m", torch.tensor([relevance]), valid, special, torch.tensor([1]))


P1 = torch.sigmoid(torch.tensor(8.0)).item()


def test_hand_computed_conventions():
    fwd = _forward(Planted())
    # content tokens: 10, 11, 7, 12 (n=4); oracle ranks 7 first
    inputs, oracle = _toy([0.0, 0.1, 0.2, 0.9, 0.3, 0.0])
    d = P1 - 0.5
    # ERASER: k = ceil(f*4) = 1,1,1,1,2 -> 7 removed in every bin -> mean of 5 deltas = d
    assert aopc_comprehensiveness(fwd, inputs, oracle, modality()).item() == pytest.approx(d, abs=1e-6)
    # Eggen: K = 0,10,20,50% -> k = 0,1,1,2 -> (0 + 3d) / 5
    assert aopc_comprehensiveness(fwd, inputs, oracle, modality(), convention="eggen").item() == pytest.approx(
        3 * d / 5, abs=1e-6)
    # Eggen sufficiency: k=0 keeps nothing (delta d), k>=1 keeps 7 (delta 0) -> d / 5
    assert aopc_sufficiency(fwd, inputs, oracle, modality(), convention="eggen").item() == pytest.approx(
        d / 5, abs=1e-6)
    # ferret: thresholds 10..100% -> int(f*4) = 0,0,1,1,2,2,2,3,3,4 -> kept k = 1,2,3,4 (only_pos: all 4 positive)
    # (whole words only, so ferret's decode + re-tokenise round trip gives the same ids back)
    assert aopc_comprehensiveness(fwd, inputs, oracle, modality(tokenizer=TOKENIZER),
                                  convention="ferret").item() == pytest.approx(d, abs=1e-6)
    # ferret only_pos: only token 7 positive -> the rationale never grows past it: one kept threshold
    inputs, single = _toy([0.0, -0.1, -0.2, 0.9, -0.3, 0.0])
    assert aopc_sufficiency(fwd, inputs, single, modality(tokenizer=TOKENIZER),
                            convention="ferret").item() == pytest.approx(0.0, abs=1e-6)
    # log-odds at 20%: ceil(0.8) = 1 token (the planted one): log(0.5) - log(P1)
    assert log_odds(fwd, inputs, oracle, modality()).item() == pytest.approx(math.log(0.5) - math.log(P1), abs=1e-5)
    # LOO: only token 7 matters -> loo = [0, 0, d, 0]; tau-b with relevance [0.1, 0.2, 0.9, 0.3]:
    # pairs with 7: 3 concordant; the other 3 pairs tie in loo -> tau_b = 3 / sqrt(3 * 6)
    from lightning_xai.metrics import leave_one_out_tau as loo

    assert loo(fwd, inputs, oracle, modality()).item() == pytest.approx(3 / math.sqrt(18), abs=1e-5)
    # insertion MoRF, steps=4: [0.5, P1, P1, P1, P1] -> (0.5 + P1)/8 + 3 P1 / 4
    assert insertion_auc(fwd, inputs, oracle, modality(), steps=4).item() == pytest.approx(
        (0.5 + P1) / 8 + 3 * P1 / 4, abs=1e-6)


def test_kendall_tau_matches_reference_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 3, (5, 7), generator=g).float()
    b = torch.randint(0, 3, (5, 7), generator=g).float()
    mask = torch.rand(5, 7, generator=g) > 0.2
    got = kendall_tau(a, b, mask)
    for r in range(5):
        idx = [i for i in range(7) if mask[r, i]]
        expected = ref.kendall_tau_b([a[r, i].item() for i in idx], [b[r, i].item() for i in idx])
        assert (math.isnan(expected) and math.isnan(got[r].item())) or got[r].item() == pytest.approx(expected, 1e-6)


def _planted_batch(seed, batch=8, width=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 30, (batch, width), generator=g)
    lengths = torch.randint(4, width + 1, (batch,), generator=g)
    mask = torch.arange(width)[None] < lengths[:, None]
    ids[:, 0] = 2
    ids[torch.arange(batch), lengths - 1] = 3
    ids[torch.arange(batch), (torch.rand(batch, generator=g) * (lengths - 2).float()).long() + 1] = 7
    ids = ids.masked_fill(~mask, 0)
    special = (ids == 2) | (ids == 3) | ~mask
    target = torch.ones(batch, dtype=torch.long)
    make = lambda name, rel: Explanation(name, rel * mask, mask, special, target)  # noqa: E731
    return ({"input_ids": ids, "attention_mask": mask.long()}, make("oracle", (ids == 7).float() + 0.01),
            make("random", torch.rand(batch, width, generator=g)), make("anti", (ids != 7).float() + 0.01))


def test_oracle_beats_random_beats_anti_oracle_on_every_metric():
    inputs, *maps = _planted_batch(0, batch=16)
    explanations = {e.method: e for e in maps}
    metrics = [DeletionAUC(steps=5), InsertionAUC(steps=5), AreaBetweenCurves(steps=5, score="prob"),
               AOPCComprehensiveness(), AOPCSufficiency(convention="eggen"), LogOdds()]
    out = evaluate_suite(_forward(Planted()), inputs, explanations, modality(), metrics)
    for metric, values in zip(metrics, out, strict=False):
        means = {k: v.nanmean().item() for k, v in values.items()}
        sign = 1 if metric.higher_is_better else -1
        assert sign * means["oracle"] > sign * means["random"] > sign * means["anti"], (metric.name, means)


def test_suite_shares_forwards_and_equals_separate_runs():
    model = make_model("bert", num_labels=2)
    inputs = make_inputs("bert", batch=4, seed=1)
    exps = explain(model, inputs, [GradSAM(), Random(seed=1)], modality=modality())
    metrics = [DeletionAUC(steps=4), AOPCComprehensiveness(), AOPCSufficiency()]
    stats = []
    together = evaluate_suite(_forward(model), inputs, exps, modality(), metrics, stats=stats)
    for metric, values in zip(metrics, together, strict=False):
        for name, exp in exps.items():
            alone = metric.sample_values(exp, ScoringContext(_forward(model), inputs, modality()))
            torch.testing.assert_close(values[name], alone, atol=1e-5, rtol=1e-5)
    assert stats[0]["unique_rows"] < stats[0]["rows"]
    # unperturbed and everything-removed rows are shared: curves of 2 methods need at most 2*4*5 - 2*4 rows
    curves = perturbation_curves_multi(_forward(model), inputs, exps, modality(), steps=4, orders=("morf", "lerf"))
    assert set(curves) == {(m, o) for m in exps for o in ("morf", "lerf")}
    masks = torch.zeros(4, 3, inputs["input_ids"].shape[1], dtype=torch.bool)
    fstats: dict = {}
    forward_removals(_forward(model), inputs, modality(), masks, stats=fstats)
    assert fstats["unique_rows"] == 4


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 6))
def test_property_ranges(seed, steps):
    inputs, oracle, random, anti = _planted_batch(seed, batch=4, width=9)
    fwd = _forward(Planted())
    for exp in (oracle, random, anti):
        for value in (deletion_auc(fwd, inputs, exp, modality(), steps=steps, reduction="none"),
                      insertion_auc(fwd, inputs, exp, modality(), steps=steps, reduction="none"),
                      auac(fwd, inputs, exp, modality(), steps=steps, reduction="none"),
                      aupc(fwd, inputs, exp, modality(), steps=steps, reduction="none")):
            assert torch.all((value >= -1e-6) & (value <= 1 + 1e-6))
        for conv in ("eraser", "eggen", "ferret"):
            text = modality(tokenizer=TOKENIZER)
            c = aopc_comprehensiveness(fwd, inputs, exp, text, convention=conv, reduction="none")
            s = aopc_sufficiency(fwd, inputs, exp, text, convention=conv, reduction="none")
            assert torch.all(c.abs() <= 1 + 1e-6) and torch.all(s.abs() <= 1 + 1e-6)
        assert torch.all(au_mse(fwd, inputs, exp, modality(), reduction="none") >= 0)
        tau = leave_one_out_tau(fwd, inputs, exp, modality(), reduction="none")
        assert torch.all(torch.isnan(tau) | (tau.abs() <= 1 + 1e-6))
    # padding never perturbed / chunk invariance
    a = deletion_auc(fwd, inputs, random, modality(), steps=steps, reduction="none", max_batch_size=1)
    b = deletion_auc(fwd, inputs, random, modality(), steps=steps, reduction="none", max_batch_size=999)
    torch.testing.assert_close(a, b)


def test_higher_is_better_flags():
    assert DeletionAUC().higher_is_better is False and DeletionAUC(order="lerf").higher_is_better is True
    assert InsertionAUC().higher_is_better is True and InsertionAUC(order="lerf").higher_is_better is False
    assert AOPCComprehensiveness.higher_is_better and not AOPCSufficiency.higher_is_better
    with pytest.raises(ValueError, match="convention"):
        AOPCComprehensiveness(convention="paper")
