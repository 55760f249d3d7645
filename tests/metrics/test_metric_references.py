"""ROAD, plausibility, map agreement and random-normalised gain against slow per-sample references.

References live in ``tests/reference/road.py`` and ``tests/reference/relations.py`` (plain loops, no library code);
sklearn / scipy are second, external references for AUPRC and Spearman.
"""

import math

import numpy as np
import pytest
import torch
from helpers import PATCH, make_inputs, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import faithfulness as fref
from reference import relations as ref
from reference import road as road_ref
from scipy.stats import spearmanr
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from lightning_xai.explain import logits_of
from lightning_xai.metrics import (
    ROAD,
    AOPCComprehensiveness,
    DeletionAUC,
    MapAgreement,
    Plausibility,
    RandomNormalisedGain,
    ScoringContext,
    auprc,
    map_agreement,
    plausibility,
    random_normalised_gain,
    rank_correlation,
    road,
    topk_overlap,
)
from lightning_xai.metrics.aopc import aopc_bins
from lightning_xai.modalities import TextModality, VisionModality
from lightning_xai.modalities.vision import noisy_linear_impute
from lightning_xai.types import Explanation

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # documented default
# The library solves the imputation by float32 conjugate gradients stopped at relative residual 1e-6; the reference
# solves the same system densely in float64. The error is at most cond(A) * 1e-6 * |x| plus float32 round-off; for
# the <= 256-unknown systems here cond(A) is O(10^2); measured worst cases: 9e-6 over 200 random masks, 1.2e-5 on
# the ROAD images below (N(0, 1) pixels), so PIXEL_TOL = 1e-4 leaves ~10x headroom while a wrong noise draw
# (std 0.01) or weight is caught. Those pixel errors moved the ROAD values by <= 6e-8, hence ROAD_TOL = 2e-6
# (~30x headroom); a wrong order / fraction set moves them by > 1e-4 and dropping the noise by ~1e-4 (checked in
# test_road_reference_sees_ranking_fractions_and_noise).
PIXEL_TOL = 1e-4
ROAD_TOL = 2e-6


def _forward(model):
    return lambda inputs: logits_of(model(**inputs))


def _isclose(got, expected, tol):
    if math.isnan(expected):
        return math.isnan(got)
    return abs(got - expected) <= tol


# ------------------------------------------------------------------------------------------------------------ ROAD


def _vision_explanation(family, batch, seed):
    prefix = 1 if family == "vit" else 2
    tokens = prefix + 16
    g = torch.Generator().manual_seed(seed)
    rel = torch.randn(batch, tokens, generator=g)
    rel[0] = torch.randint(0, 3, (tokens,), generator=g).float()  # heavy ties: earlier patch first
    rel[-1] = 0.5  # every patch tied: pure position order
    rel[:, :prefix] = 100.0  # prefix tokens are special: never ranked even with the largest relevance
    valid = torch.ones(batch, tokens, dtype=torch.bool)
    special = torch.zeros_like(valid)
    special[:, :prefix] = True
    target = torch.randint(0, 3, (batch,), generator=g)
    return Explanation("m", rel, valid, special, target), prefix


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many tiny ops; on a shared 2-core machine one intra-op thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ROAD_CASES = [("vit", "morf", 0.01, "prob"), ("vit", "lerf", 0.0, "logit"), ("deit", "lerf", 0.01, "prob")]


@pytest.mark.parametrize("family,order,noise,score", ROAD_CASES)
def test_road_equals_per_image_reference(family, order, noise, score):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3, seed=5)
    pixels = inputs["pixel_values"]
    exp, prefix = _vision_explanation(family, 3, seed=2)
    tokens = exp.relevance.shape[1]
    modality = VisionModality(PATCH, road_noise=noise)
    values = road(_forward(model), inputs, exp, modality, order=order, score=score, reduction="none",
                  max_batch_size=4)
    expected = []
    for b in range(3):
        perturbed = road_ref.road_images_reference(pixels[b].numpy(), exp.relevance[b].tolist(), PATCH, prefix,
                                                   ROAD_FRACTIONS, order, noise)
        # the images the library forwards (modality.remove under removal="road") are the reference images
        removed = torch.zeros(len(perturbed), tokens, dtype=torch.bool)
        for i, (patches, _) in enumerate(perturbed):
            removed[i, [prefix + p for p in patches]] = True
        built = modality.variant("road").remove({"pixel_values": pixels[b : b + 1].expand(len(perturbed), -1, -1, -1)},
                                                removed)["pixel_values"]
        np.testing.assert_allclose(built.double().numpy(), np.stack([img for _, img in perturbed]), atol=PIXEL_TOL,
                                   rtol=0)
        expected.append(road_ref.road_value_reference(model, perturbed, int(exp.target[b]), score))
        assert values[b].item() == pytest.approx(expected[b], abs=ROAD_TOL), (family, order, b)
    if family == "vit" and order == "morf":
        # the Metric accumulates the per-sample mean over batches (another chunking: same values)
        metric = ROAD(order=order, score=score, max_batch_size=7)
        for part in (slice(0, 2), slice(2, 3)):
            sub = Explanation("m", exp.relevance[part], exp.valid_mask[part], exp.special_mask[part],
                              exp.target[part])
            metric.update(sub, ScoringContext(_forward(model), {k: v[part] for k, v in inputs.items()}, modality))
        assert metric.compute().item() == pytest.approx(sum(expected) / 3, abs=ROAD_TOL)
    assert ROAD(order=order).higher_is_better is (order == "lerf")


def test_road_reference_sees_ranking_fractions_and_noise():
    """ROAD_TOL is far below what a wrong order, fraction set or noise changes (so the test above can fail)."""
    model = make_model("vit", num_labels=3)
    image = make_inputs("vit", batch=1, seed=5)["pixel_values"][0].numpy()
    exp, prefix = _vision_explanation("vit", 2, seed=2)
    rel, target = exp.relevance[0].tolist(), int(exp.target[0])

    def value(order, fractions, noise):
        perturbed = road_ref.road_images_reference(image, rel, PATCH, prefix, fractions, order, noise)
        return road_ref.road_value_reference(model, perturbed, target, "logit")

    fractions = (0.2, 0.5, 0.8)
    base = value("morf", fractions, 0.01)
    assert abs(value("lerf", fractions, 0.01) - base) > 20 * ROAD_TOL
    assert abs(value("morf", fractions[1:], 0.01) - base) > 20 * ROAD_TOL
    assert abs(value("morf", fractions, 0.0) - base) > 20 * ROAD_TOL


def _random_mask(g, h, w, patch_level):
    p = float(torch.rand(1, generator=g)) * 0.95
    if patch_level:
        grid = torch.rand(h // 4, w // 4, generator=g) < p
        return grid.repeat_interleave(4, 0).repeat_interleave(4, 1)
    return torch.rand(h, w, generator=g) < p


def test_noisy_linear_impute_equals_dense_solve_and_seeded_noise():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 16, 12, generator=g)
    masks = torch.stack([_random_mask(g, 16, 12, patch_level=i % 2 == 0) for i in range(6)])
    masks[0, 0, 0] = True  # a removed corner pixel (3 in-image neighbours only)
    masks[1] = True  # everything removed: zeros (+ noise), as documented
    masks[2] = False  # nothing removed: unchanged
    for noise in (0.0, 0.01):
        got = noisy_linear_impute(images, masks, noise_std=noise)
        for b in range(6):
            expected = road_ref.linear_impute_reference(images[b].numpy(), masks[b].numpy())
            if noise:
                expected = expected + road_ref.road_noise_reference(masks[b].numpy(), 3, noise)
            np.testing.assert_allclose(got[b].double().numpy(), expected, atol=PIXEL_TOL, rtol=0)
            kept = ~masks[b]
            assert torch.equal(got[b][:, kept], images[b][:, kept])  # kept pixels are bit-identical
    # chunking: one image at a time gives the same pixels (noise depends on the mask only)
    alone = torch.cat([noisy_linear_impute(images[b : b + 1], masks[b : b + 1]) for b in range(6)])
    torch.testing.assert_close(alone, noisy_linear_impute(images, masks), atol=PIXEL_TOL, rtol=0)


def test_road_noise_statistics():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, 64, 64, generator=g)
    mask = torch.rand(1, 64, 64, generator=g) < 0.5
    clean = noisy_linear_impute(image, mask, noise_std=0.0)
    noisy = noisy_linear_impute(image, mask, noise_std=0.01)
    diff = (noisy - clean)[0][:, mask[0]].double()
    n = diff.numel()
    assert abs(diff.mean().item()) < 4 * 0.01 / math.sqrt(n)
    assert diff.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal((noisy - clean)[0][:, ~mask[0]], torch.zeros(3, int((~mask).sum())))
    assert torch.equal(noisy, noisy_linear_impute(image, mask, noise_std=0.01))  # deterministic
    other = mask.clone()
    other[0, 0, 0] = ~other[0, 0, 0]
    diff2 = (noisy_linear_impute(image, other, noise_std=0.01) - noisy_linear_impute(image, other, noise_std=0.0))
    both = mask[0] & other[0]
    corr = np.corrcoef(diff[:, both[mask[0]]].flatten().numpy(), diff2[0][:, both].double().flatten().numpy())[0, 1]
    assert abs(corr) < 0.1  # another mask draws fresh noise


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), channels=st.integers(1, 3), seed=st.integers(0, 10_000),
       value=st.floats(-3, 3))
def test_property_imputation_is_the_neighbour_mean(h, w, channels, seed, value):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, channels, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(1, h, w, generator=g) < 0.6
    out = noisy_linear_impute(image, mask, noise_std=0.0, tol=1e-10)[0].numpy()
    # every removed pixel equals the renormalised weighted mean of its in-image neighbours (unless all removed)
    if not mask.all():
        for r in range(h):
            for c in range(w):
                if not mask[0, r, c]:
                    assert np.array_equal(out[:, r, c], image[0, :, r, c].numpy())
                    continue
                total, weight = np.zeros(channels), 0.0
                for dr, dc, wt in road_ref.NEIGHBOURS:
                    if 0 <= r + dr < h and 0 <= c + dc < w:
                        total += wt * out[:, r + dr, c + dc]
                        weight += wt
                np.testing.assert_allclose(out[:, r, c], total / weight, atol=1e-7)
    # a constant image stays constant wherever something is kept
    flat = torch.full((1, channels, h, w), value, dtype=torch.float64)
    expected = np.zeros((channels, h, w)) if mask.all() else np.full((channels, h, w), value)
    np.testing.assert_allclose(noisy_linear_impute(flat, mask, noise_std=0.0, tol=1e-10)[0].numpy(), expected,
                               atol=1e-7)


# ------------------------------------------------------------------------------------------------- plausibility


def _text_batch(seed, batch=7, width=12, ties=True):
    """Rows with [CLS] ... [SEP] + padding; garbage relevance / rationale on special and padding positions.

    Row 0: integer relevance (ties, zeros, negatives); row 1: all relevance negative; row 2: no gold token;
    row 3: one content token; row 4: no content token at all ([CLS][SEP] only); other rows: random."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, width + 1, (batch,), generator=g)
    lengths[3], lengths[4] = 3, 2
    positions = torch.arange(width)[None]
    valid = positions < lengths[:, None]
    special = ~valid | (positions == 0) | (positions == lengths[:, None] - 1)
    rel = torch.randn(batch, width, generator=g)
    if ties:
        rel[0] = torch.randint(-2, 3, (width,), generator=g).float()
    rel[1] = -rel[1].abs() - 0.1
    rationale = torch.rand(batch, width, generator=g) < 0.4
    rationale[2] = False
    rationale[3] = True
    content = valid & ~special
    rel = torch.where(content, rel, torch.full_like(rel, 50.0))  # largest values on non-content positions
    rationale = rationale | ~content  # and "gold" on every non-content position
    rationale[2] = rationale[2] & ~content[2]
    target = torch.zeros(batch, dtype=torch.long)
    return Explanation("m", rel, valid, special, target), rationale


def _content_rows(exp, rationale):
    for b in range(exp.relevance.shape[0]):
        keep = exp.content_mask[b]
        yield b, exp.relevance[b][keep].tolist(), rationale[b][keep].tolist()


PLAUSIBILITY_REFS = {"token_f1": ref.token_f1_reference, "token_iou": ref.token_iou_reference}


PLAUSIBILITY_CASES = [(kind, only_pos, k) for kind in ("token_f1", "token_iou", "auprc") for only_pos in (True, False)
                      for k in ((5,) if kind == "auprc" else (1, 3, 5))]


@pytest.mark.parametrize("kind,only_pos,k", PLAUSIBILITY_CASES)
def test_plausibility_equals_per_sample_reference(kind, only_pos, k):
    exp, rationale = _text_batch(seed=3)
    values = plausibility(exp, rationale, kind=kind, k=k, only_pos=only_pos, reduction="none")
    expected = []
    for b, rel, gold in _content_rows(exp, rationale):
        if not rel:
            want = float("nan")  # a sample without content tokens is skipped
        elif kind == "auprc":
            want = ref.auprc_reference(rel, gold, only_pos)
        else:
            want = PLAUSIBILITY_REFS[kind](rel, gold, k, only_pos)
        expected.append(want)
        assert _isclose(values[b].item(), want, 1e-6), (kind, b, values[b].item(), want)
        assert math.isnan(want) or 0 <= want <= 1
    metric = Plausibility(kind, k=k, only_pos=only_pos)
    metric.update(exp, ScoringContext(rationale=rationale))
    metric.update(exp, ScoringContext())  # no rationale: skipped
    kept = [v for v in expected if not math.isnan(v)]
    assert metric.compute().item() == pytest.approx(sum(kept) / len(kept), abs=1e-6)


def test_auprc_is_sklearn_trapezoid_area_not_average_precision():
    """The documented definition (ERASER's ``_auprc`` and ferret's ``auprc_plau``): ``auc(recall, precision)`` on
    ``precision_recall_curve``'s points. That is not average precision, which differs on the same rows."""
    exp, rationale = _text_batch(seed=11, batch=9)
    for only_pos in (True, False):
        values = auprc(exp.relevance, rationale, exp.content_mask, only_pos)
        differs = 0
        for b, rel, gold in _content_rows(exp, rationale):
            if not any(gold):
                assert math.isnan(values[b].item())
                continue
            scores = [max(r, 0.0) for r in rel] if only_pos else rel
            precision, recall, _ = precision_recall_curve([int(x) for x in gold], scores)
            assert values[b].item() == pytest.approx(auc(recall, precision), abs=1e-6)
            if not all(gold):
                differs += abs(values[b].item() - average_precision_score([int(x) for x in gold], scores)) > 1e-4
        assert differs > 0
    # hand-computed: scores 0.9 0.8 0.7 0.6, gold 0 1 0 1 -> points (0,1) (0,0) (.5,.5) (.5,1/3) (1,.5)
    content = torch.ones(1, 4, dtype=torch.bool)
    value = auprc(torch.tensor([[0.9, 0.8, 0.7, 0.6]]), torch.tensor([[False, True, False, True]]), content)
    assert value.item() == pytest.approx(0.5 * 0.5 / 2 + 0.5 * (1 / 3 + 0.5) / 2, abs=1e-6)  # 1/3; AP would be 0.5


def _embed(exp, rationale, left, right, fill):
    """Wrap every row in ``left`` extra special columns and ``right`` extra padding columns (relevance ``fill``,
    rationale True)."""
    b, n = exp.relevance.shape
    width = left + n + right

    def widen(x, value):
        out = torch.full((b, width), value, dtype=x.dtype)
        out[:, left : left + n] = x
        return out

    special = widen(exp.special_mask, True)
    valid = widen(exp.valid_mask, False)
    valid[:, :left] = True
    return (Explanation("m", widen(exp.relevance, fill), valid, special, exp.target),
            widen(rationale, True))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8), left=st.integers(0, 2), right=st.integers(0, 4),
       fill=st.floats(-10, 10), only_pos=st.booleans())
def test_property_plausibility_padding_batch_and_permutation(seed, k, left, right, fill, only_pos):
    exp, rationale = _text_batch(seed, batch=5, width=9)
    wide, wide_rationale = _embed(exp, rationale, left, right, fill)
    for kind in ("token_f1", "token_iou", "auprc"):
        base = plausibility(exp, rationale, kind=kind, k=k, only_pos=only_pos, reduction="none")
        finite = base[~torch.isnan(base)]
        assert torch.all((finite >= 0) & (finite <= 1))
        # padding / special columns never count, whatever their relevance or rationale
        torch.testing.assert_close(plausibility(wide, wide_rationale, kind=kind, k=k, only_pos=only_pos,
                                                reduction="none"), base, equal_nan=True)
        # a row's value does not depend on the other rows of its batch
        for b in (0, 4):
            one = Explanation("m", exp.relevance[b : b + 1], exp.valid_mask[b : b + 1], exp.special_mask[b : b + 1],
                              exp.target[b : b + 1])
            torch.testing.assert_close(plausibility(one, rationale[b : b + 1], kind=kind, k=k, only_pos=only_pos,
                                                    reduction="none"), base[b : b + 1], equal_nan=True)
    # AUPRC groups tied scores, so it is invariant to the order of the content tokens
    perm = torch.randperm(exp.relevance.shape[1], generator=torch.Generator().manual_seed(seed))
    shuffled = Explanation("m", exp.relevance[:, perm], exp.valid_mask[:, perm], exp.special_mask[:, perm],
                           exp.target)
    torch.testing.assert_close(plausibility(shuffled, rationale[:, perm], kind="auprc", only_pos=only_pos,
                                            reduction="none"),
                               plausibility(exp, rationale, kind="auprc", only_pos=only_pos, reduction="none"),
                               equal_nan=True, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------- agreement


def _agreement_batch(seed, batch=6, width=11):
    exp_a, _ = _text_batch(seed, batch=batch, width=width)
    g = torch.Generator().manual_seed(seed + 1)
    b_rel = torch.randn(batch, width, generator=g)
    b_rel[0] = torch.randint(0, 3, (width,), generator=g).float()  # ties on both sides
    b_rel[5] = 1.0  # constant on the content: Spearman NaN
    b_rel = torch.where(exp_a.content_mask, b_rel, torch.full_like(b_rel, -7.0))
    exp_b = Explanation("b", b_rel, exp_a.valid_mask, exp_a.special_mask, exp_a.target)
    return exp_a, exp_b


@pytest.mark.parametrize("k", [1, 3, 5, 20])
def test_agreement_equals_per_sample_reference(k):
    a, b = _agreement_batch(seed=4)
    rho = rank_correlation(a.relevance, b.relevance, a.content_mask)
    overlap = topk_overlap(a.relevance, b.relevance, a.content_mask, k=k)
    expected_rho, expected_overlap = [], []
    for row in range(a.relevance.shape[0]):
        keep = a.content_mask[row]
        va, vb = a.relevance[row][keep].tolist(), b.relevance[row][keep].tolist()
        want = ref.spearman_reference(va, vb)
        expected_rho.append(want)
        assert _isclose(rho[row].item(), want, 1e-6), (row, rho[row].item(), want)
        if len(va) >= 2 and len(set(va)) > 1 and len(set(vb)) > 1:
            assert want == pytest.approx(spearmanr(va, vb).statistic, abs=1e-12)  # the hand reference is right
        want_overlap = ref.topk_overlap_reference(va, vb, k)
        expected_overlap.append(want_overlap)
        assert _isclose(overlap[row].item(), want_overlap, 1e-6), (row, k)
    assert sum(math.isnan(v) for v in expected_rho) >= 2  # constant side and < 2 tokens are exercised
    for kind, expected in (("spearman", expected_rho), ("topk", expected_overlap)):
        kept = [v for v in expected if not math.isnan(v)]
        metric = MapAgreement(kind, k=k)
        metric.update(a, ScoringContext(reference=b))
        assert metric.compute().item() == pytest.approx(sum(kept) / len(kept), abs=1e-6)
        assert map_agreement(a, b, kind=kind, k=k).item() == pytest.approx(sum(kept) / len(kept), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), scale=st.integers(1, 5), shift=st.integers(-3, 3),
       left=st.integers(0, 2), right=st.integers(0, 3))
def test_property_agreement(seed, k, scale, shift, left, right):
    g = torch.Generator().manual_seed(seed)
    a, _ = _text_batch(seed, batch=5, width=10)
    content = a.content_mask
    ia = torch.randint(-3, 4, content.shape, generator=g).double()  # integer maps: ties, exact transforms
    ib = torch.randint(-3, 4, content.shape, generator=g).double()
    rho = rank_correlation(ia, ib, content)
    finite = rho[~torch.isnan(rho)]
    assert torch.all(finite.abs() <= 1 + 1e-6)
    torch.testing.assert_close(rank_correlation(ib, ia, content), rho, equal_nan=True)  # symmetric
    # invariant to strictly increasing maps of either side; negating one side flips the sign
    torch.testing.assert_close(rank_correlation(scale * ia + shift, ib, content), rho, equal_nan=True)
    torch.testing.assert_close(rank_correlation(-ia, ib, content), -rho, equal_nan=True)
    torch.testing.assert_close(rank_correlation(ia, ia, content)[~torch.isnan(rho)],
                               torch.ones_like(finite, dtype=torch.float32))
    over = topk_overlap(ia, ib, content, k=k)
    has = content.any(dim=1)
    assert torch.all((over[has] >= 0) & (over[has] <= 1)) and torch.all(torch.isnan(over[~has]))
    assert torch.all(topk_overlap(ia, ia, content, k=k)[has] == 1)
    # extra padding / special columns with any values change nothing
    wide_a, _ = _embed(Explanation("a", ia.float(), a.valid_mask, a.special_mask, a.target),
                       torch.zeros_like(content), left, right, 9.0)
    wide_b, _ = _embed(Explanation("b", ib.float(), a.valid_mask, a.special_mask, a.target),
                       torch.zeros_like(content), left, right, -9.0)
    for kind in ("spearman", "topk"):
        torch.testing.assert_close(
            map_agreement(wide_a, wide_b, kind=kind, k=k, reduction="none"),
            map_agreement(Explanation("a", ia.float(), a.valid_mask, a.special_mask, a.target),
                          Explanation("b", ib.float(), a.valid_mask, a.special_mask, a.target), kind=kind, k=k,
                          reduction="none"), equal_nan=True)


# --------------------------------------------------------------------------------------------------------- gain


def test_random_normalised_gain_hand_values():
    cases = [(0.2, 0.5, False, 0.6), (0.3, 0.2, True, 0.5), (0.7, 0.5, False, -0.4), (0.1, 0.2, True, -0.5),
             (-0.1, -0.2, True, 0.5), (-0.3, -0.2, False, 0.5), (0.3, 0.0, True, math.nan),
             (0.3, math.nan, False, math.nan)]
    for m, r, hib, want in cases:
        assert _isclose(random_normalised_gain(m, r, higher_is_better=hib).item(), want, 1e-6), (m, r, hib)
        assert _isclose(ref.gain_reference([m], [r], hib), want, 1e-12)
    got = random_normalised_gain(torch.tensor([0.2, 0.3]), torch.tensor([0.5, 0.0]), higher_is_better=False)
    assert got[0].item() == pytest.approx(0.6) and math.isnan(got[1].item())


MASK = 4


def _text_modality():
    return TextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=MASK,
                        token_ids={"unk": 1, "mask": MASK, "pad": 0})


def _text_explanation(inputs, seed, skip_row=None):
    g = torch.Generator().manual_seed(seed)
    valid = inputs["attention_mask"].bool()
    ids = inputs["input_ids"]
    special = ~valid | (ids == 2) | (ids == 3)
    if skip_row is not None:
        special[skip_row] = True  # no content token: NaN for this map
    rel = torch.rand(ids.shape, generator=g) * valid
    return Explanation(f"m{seed}", rel, valid, special, torch.randint(0, 2, (ids.shape[0],), generator=g))


class _BagOfTokens(torch.nn.Module):
    """A classifier every token moves (a random tiny BERT barely reacts to masking, so all gains would be ~0)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(32, 2)
        torch.nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            self.emb.weight[:5] = 0  # [PAD] [UNK] [CLS] [SEP] [MASK] carry no evidence: removal = replacement by 0

    def forward(self, input_ids, attention_mask=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return (self.emb(input_ids) * mask[..., None]).sum(dim=1)


@pytest.mark.parametrize("metric_name", ["deletion_morf", "deletion_lerf"])
def test_gain_metric_equals_reference_over_an_epoch(metric_name):
    fwd = _forward(_BagOfTokens())
    order = "morf" if metric_name == "deletion_morf" else "lerf"
    metric = RandomNormalisedGain(DeletionAUC(steps=3, order=order))
    assert metric.metric.higher_is_better is (order == "lerf")
    method_values, random_values = [], []
    for batch_seed, skips in ((1, (1, None)), (2, (None, 2))):
        inputs = make_inputs("bert", batch=4, seed=batch_seed)
        method = _text_explanation(inputs, 10 + batch_seed, skip_row=skips[0])
        random = _text_explanation(inputs, 20 + batch_seed, skip_row=skips[1])
        random = Explanation(random.method, random.relevance, random.valid_mask, random.special_mask, method.target)
        metric.update(method, ScoringContext(fwd, inputs, _text_modality(), reference=random))
        for row in range(4):
            length = int(inputs["attention_mask"][row].sum())
            ids = inputs["input_ids"][row, :length].tolist()
            for exp, out in ((method, method_values), (random, random_values)):
                content = exp.content_mask[row, :length].tolist()
                if not any(content):
                    out.append(float("nan"))
                    continue
                out.append(fref.curve_reference(fwd, ids, content, exp.relevance[row, :length].tolist(),
                                                int(exp.target[row]), MASK, 3, order=order))
    expected = ref.gain_reference(method_values, random_values, higher_is_better=order == "lerf")
    assert metric.compute().item() == pytest.approx(expected, abs=1e-5)
    # dropping the pairing (skipping a sample on one side only) would give another number
    loose = [v for v in method_values if not math.isnan(v)]
    loose_r = [v for v in random_values if not math.isnan(v)]
    m, r = sum(loose) / len(loose), sum(loose_r) / len(loose_r)
    unpaired = (m - r) / abs(r) if order == "lerf" else (r - m) / abs(r)
    assert abs(unpaired - expected) > 1e-3


class _Planted(torch.nn.Module):
    """p(class 1) = sigmoid(6) iff token 7 is present, else 0.5."""

    def forward(self, input_ids, attention_mask=None):
        present = (input_ids == 7).any(dim=1).float()
        return torch.stack([torch.zeros_like(present), 6 * present], dim=1)


def test_gain_sign_means_better_than_random_in_both_directions():
    g = torch.Generator().manual_seed(0)
    batch, width = 12, 10
    ids = torch.randint(10, 30, (batch, width), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[torch.arange(batch), torch.randint(1, width - 1, (batch,), generator=g)] = 7
    valid = torch.ones(batch, width, dtype=torch.bool)
    special = (ids == 2) | (ids == 3)
    target = torch.ones(batch, dtype=torch.long)
    maps = {name: Explanation(name, rel, valid, special, target) for name, rel in
            (("oracle", (ids == 7).float() + 0.01), ("anti", (ids != 7).float() + 0.01),
             ("random", torch.rand(batch, width, generator=g)))}
    inputs = {"input_ids": ids, "attention_mask": valid.long()}
    for wrapped in (DeletionAUC(steps=4), AOPCComprehensiveness()):  # lower-is-better, higher-is-better
        gains = {}
        for name in ("oracle", "anti"):
            metric = RandomNormalisedGain(wrapped)
            context = ScoringContext(_forward(_Planted()), inputs, _text_modality(), reference=maps["random"])
            metric.update(maps[name], context)
            gains[name] = metric.compute().item()
        assert gains["oracle"] > 0 > gains["anti"], (wrapped.name, gains)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(RandomNormalisedGain(DeletionAUC()).compute().item())  # nothing scored


@settings(max_examples=40, deadline=None)
@given(m=st.floats(-5, 5), r=st.floats(-5, 5).filter(lambda x: abs(x) > 1e-3), c=st.floats(0.1, 10),
       hib=st.booleans())
def test_property_gain(m, r, c, hib):
    gain = random_normalised_gain(m, r, higher_is_better=hib).item()
    assert gain == pytest.approx(ref.gain_reference([m], [r], hib), rel=1e-5, abs=1e-5)
    assert random_normalised_gain(m, r, higher_is_better=not hib).item() == pytest.approx(-gain, rel=1e-5, abs=1e-5)
    assert random_normalised_gain(c * m, c * r, higher_is_better=hib).item() == pytest.approx(gain, rel=1e-4,
                                                                                           abs=1e-4)
    assert random_normalised_gain(r, r, higher_is_better=hib).item() == 0
    better = m > r if hib else m < r
    if abs(m - r) > 1e-6:
        assert (gain > 0) == better


# ------------------------------------------------------------------------------------------------ ERASER bins


def test_eraser_bin_sizes_equal_erasers_own_expression():
    """ERASER's baselines (successar/Eraser-Benchmark-Baseline-Models, ``soft_encoder_model.py``) compute
    ``max_length = math.ceil((1 - always_keep_mask).sum() * threshold)`` for thresholds 0.01 0.05 0.1 0.2 0.5, and
    ``rationale_benchmark/metrics.py::_instances_aopc`` takes ``np.average`` of the 5 deltas (weight 1/5 each)."""
    n_max = 600
    valid = torch.ones(n_max, n_max + 2, dtype=torch.bool)
    special = torch.arange(n_max + 2)[None] >= torch.arange(1, n_max + 1)[:, None] + 1  # row i: i content tokens
    special[:, 0] = True
    exp = Explanation("m", torch.rand(n_max, n_max + 2), valid, special, torch.zeros(n_max, dtype=torch.long))
    counts, weights, _ = aopc_bins(exp, "eraser")
    for row in range(n_max):
        n = row + 1
        assert int(exp.content_mask[row].sum()) == n
        assert counts[row].tolist() == [math.ceil(n * t) for t in (0.01, 0.05, 0.1, 0.2, 0.5)], n
    assert torch.allclose(weights, torch.full_like(weights, 1 / 5))
