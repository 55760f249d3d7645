"""Plausibility, map agreement and random-normalised gain, one sample at a time with plain Python lists.

Every function takes one sample's values already restricted to its content tokens (the caller drops padding and
special tokens), so nothing here knows about masks.
"""

import math


def top_k_positions(values, k):
    """Indices of the ``k`` largest values; ties: earlier index first."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def predicted_rationale(relevance, k, only_pos=True):
    """ferret's top-k rationale: the top ``k`` tokens, keeping only those with relevance > 0 when ``only_pos``."""
    return {i for i in top_k_positions(relevance, k) if relevance[i] > 0 or not only_pos}


def token_f1_reference(relevance, gold, k=5, only_pos=True):
    pred = predicted_rationale(relevance, k, only_pos)
    truth = {i for i, g in enumerate(gold) if g}
    if not pred and not truth:
        return 0.0
    return 2 * len(pred & truth) / (len(pred) + len(truth))


def token_iou_reference(relevance, gold, k=5, only_pos=True):
    pred = predicted_rationale(relevance, k, only_pos)
    truth = {i for i, g in enumerate(gold) if g}
    union = pred | truth
    return len(pred & truth) / len(union) if union else 0.0


def auprc_reference(relevance, gold, only_pos=True):
    """Trapezoid area under the precision-recall curve: one point per distinct score (predict "rationale" for every
    token scoring >= it), plus the (recall 0, precision 1) start. NaN without a positive token."""
    scores = [max(r, 0.0) if only_pos else r for r in relevance]
    positives = sum(1 for g in gold if g)
    if positives == 0:
        return float("nan")
    points = [(0.0, 1.0)]
    for threshold in sorted(set(scores), reverse=True):
        tp = sum(1 for s, g in zip(scores, gold, strict=True) if s >= threshold and g)
        fp = sum(1 for s, g in zip(scores, gold, strict=True) if s >= threshold and not g)
        points.append((tp / positives, tp / (tp + fp)))
    area = 0.0
    for (r0, p0), (r1, p1) in zip(points, points[1:], strict=False):
        area += (r1 - r0) * (p0 + p1) / 2
    return area


def average_ranks(values):
    """1-based ranks, ties get the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for j in range(start, stop + 1):
            ranks[order[j]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman_reference(a, b):
    """Pearson correlation of the average ranks; NaN when a side is constant (or fewer than 2 values)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / math.sqrt(va * vb)


def topk_overlap_reference(a, b, k=5):
    """|top_k(a) ∩ top_k(b)| / min(k, n); NaN without tokens."""
    if not a:
        return float("nan")
    return len(set(top_k_positions(a, k)) & set(top_k_positions(b, k))) / min(k, len(a))


def gain_reference(method_values, random_values, higher_is_better):
    """Epoch gain from per-sample values of the method and the random map (a sample NaN on either side is dropped):
    ``(m − r) / |r|`` (higher is better) or ``(r − m) / |r|`` on the two means; NaN when ``r`` is 0 or nothing kept."""
    pairs = [(m, r) for m, r in zip(method_values, random_values, strict=True)
             if not (math.isnan(m) or math.isnan(r))]
    if not pairs:
        return float("nan")
    m = sum(p[0] for p in pairs) / len(pairs)
    r = sum(p[1] for p in pairs) / len(pairs)
    if r == 0 or math.isnan(r):
        return float("nan")
    return (m - r) / abs(r) if higher_is_better else (r - m) / abs(r)
