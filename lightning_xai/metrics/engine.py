"""The batched perturbation engine shared by every perturbation metric.

:func:`forward_removals` is the one entry point to the model: it builds every perturbed input of every sample, runs
the unique ones in length-sorted chunks under ``no_grad`` with the model's own (fast) attention backend, and returns
their logits. :func:`evaluate_suite` runs any number of metrics on any number of methods' maps of one batch with one
deduplicated :func:`forward_removals` pass per removal mode; :func:`perturbation_curves` gives raw deletion or
insertion curves.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from lightning_xai.metrics._perturbation import (
    Score,
    curve_masks,
    removal_schedule,
    scores_of,
    trapezoid_auc,
)
from lightning_xai.modalities.base import Modality, select
from lightning_xai.types import Explanation, ModelInputs, logits_of

#: A function from model inputs to logits ``[B, C]``.
ForwardFn = Callable[[ModelInputs], Tensor]

#: Default bound on ``rows x tokens`` of one perturbation forward (256 rows of 64 tokens, or 32 rows of 512). A
#: no-grad forward with the fast attention backend needs memory proportional to the tokens it holds (MiniLM on CPU:
#: about 12 MiB per 512-token row, so about 400 MiB per forward at this bound; see ``bench/memory.py``).
DEFAULT_MAX_TOKENS = 256 * 64


class RemovalMetric(Protocol):
    """What :func:`evaluate_suite` needs of a metric (every :class:`~lightning_xai.metrics.PerturbationMetric`)."""

    removal: str | float | None
    max_batch_size: int
    max_tokens: int | None

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """``[B, R, N]`` bool masks; row 0 is the unperturbed input."""
        ...

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """``[B]`` values from the ``[B, R, C]`` logits of :meth:`removal_masks` (NaN = skipped)."""
        ...


class EmbeddingForward:
    """``forward(inputs) -> logits`` for a HF model, plus a forward with some input embeddings set to zero.

    Plain callables keep working everywhere; this wrapper is only needed for the ``"zero_embedding"`` text removal
    (AttnLRP's ablation), which zeroes positions through a temporary forward hook on
    ``model.get_input_embeddings()`` (removed right after the call).

    Example:
        >>> import torch
        >>> emb = torch.nn.Embedding(5, 2)
        >>> class M(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.emb = emb
        ...     def get_input_embeddings(self): return self.emb
        ...     def forward(self, input_ids): return self.emb(input_ids).sum(1)
        >>> f = EmbeddingForward(M())
        >>> f.zeroed({"input_ids": torch.tensor([[1, 2]])}, torch.tensor([[True, True]])).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, inputs: ModelInputs) -> Tensor:
        """Logits of the unperturbed inputs."""
        return logits_of(self.model(**inputs))

    def zeroed(self, inputs: ModelInputs, removed: Tensor) -> Tensor:
        """Logits with the input embeddings of ``removed`` positions (``[B, N]`` bool) set to zero."""
        embeddings = self.model.get_input_embeddings()
        keep = (~removed)[..., None]

        def hook(_module: torch.nn.Module, _args: object, output: Tensor) -> Tensor:
            return output * keep.to(output.dtype)

        handle = embeddings.register_forward_hook(hook)
        try:
            return logits_of(self.model(**inputs))
        finally:
            handle.remove()


def resolve_modality(modality: Modality, removal: str | float | None) -> Modality:
    """``modality`` itself, or its variant removing tokens with ``removal``."""
    return modality if removal is None else modality.variant(removal)  # type: ignore[arg-type]


@torch.no_grad()
def forward_removals(
    forward: ForwardFn,
    inputs: ModelInputs,
    modality: Modality,
    removed: Tensor,
    *,
    max_batch_size: int = 256,
    max_tokens: int | None = None,
    stats: dict[str, int] | None = None,
    unperturbed: Tensor | None = None,
) -> Tensor:
    """Logits of every perturbed input ``remove(inputs[b], removed[b, r])``: the engine's one entry point.

    Identical ``(sample, mask)`` rows are forwarded once (so the unperturbed and the everything-removed rows that
    every method and every metric share cost one forward each per sample). Unique rows are sorted by the length they
    need, built lazily per chunk (at most ``max_batch_size`` rows and ``max_tokens`` rows x width for text; within
    those bounds the cut points minimise the padded positions plus a per-forward cost, see :func:`chunk_bounds`),
    trimmed to the chunk's longest row and run under ``no_grad`` with the model's own attention backend. With
    ``unperturbed`` (the logits of an explanation forward of the same model on the same inputs), the unperturbed
    rows are not forwarded again: a sample's all-False row takes its logits from there, when removing nothing gives
    back exactly its inputs (it does not for, e.g., ``"retokenize"``, whose round trip may change the ids).

    Args:
        forward: inputs -> logits ``[rows, C]``; an :class:`EmbeddingForward` for ``removal="zero_embedding"``.
        inputs: the unperturbed batch (``B`` rows).
        modality: how tokens are removed (:meth:`Modality.remove`).
        removed: ``[B, R, N]`` bool, True where a token is removed in perturbation ``r`` of sample ``b``.
        max_batch_size: most rows per forward.
        max_tokens: most ``rows x width`` per forward for inputs with a length (text), None for no bound; a row
            longer than the bound runs alone.
        stats: when given, filled with ``rows`` (requested), ``unique_rows``, ``reused_rows`` (unique rows taken
            from ``unperturbed``), ``forwards``, ``forwarded_rows``, ``tokens`` (positions actually forwarded,
            padding included) and ``real_tokens`` (positions the forwarded rows need).
        unperturbed: ``[B, C]`` logits of ``inputs`` from a forward of the same model in the same mode (eval, same
            precision), e.g. :attr:`Explanation.logits <lightning_xai.types.Explanation.logits>` of the explanation
            pass; None forwards the unperturbed rows like the others.

    Returns:
        ``[B, R, C]`` float32 logits.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    num_samples, num_rows, num_tokens = removed.shape
    device = removed.device
    flat = removed.reshape(num_samples * num_rows, num_tokens)
    sample_of = torch.arange(num_samples, device=device).repeat_interleave(num_rows)
    keys = torch.cat([sample_of[:, None], flat.long()], dim=1)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    u_sample, u_removed = unique[:, 0], unique[:, 1:].bool()
    zero_embedding = getattr(modality, "removal", None) == "zero_embedding"
    if zero_embedding and not callable(getattr(forward, "zeroed", None)):
        raise TypeError("removal='zero_embedding' needs a forward with a zeroed() method: wrap the model in "
                        "lightning_xai.metrics.EmbeddingForward(model)")
    reused = torch.zeros(len(unique), dtype=torch.bool, device=device)
    if unperturbed is not None:
        if unperturbed.dim() != 2 or unperturbed.shape[0] != num_samples:
            raise ValueError(f"unperturbed must be [B, C] logits of the {num_samples} samples, got shape "
                             f"{tuple(unperturbed.shape)}")
        unchanged = _unchanged_by_empty_removal(inputs, modality, num_samples, num_tokens, device)
        reused = ~u_removed.any(dim=1) & unchanged[u_sample]
    todo = (~reused).nonzero().squeeze(1)

    base_lengths = modality.lengths(inputs)
    lengths: Tensor | None = None
    if base_lengths is not None:
        lengths = torch.empty(len(todo), dtype=torch.long, device=device)
        for start in range(0, len(todo), 4096):  # lengths without building rows
            part = todo[start : start + 4096]
            lengths[start : start + len(part)] = modality.removed_lengths(select(inputs, u_sample[part]),
                                                                           u_removed[part])
        # sorted and cut on the host once: the loop below reads widths without a device sync per chunk
        lengths, sort = torch.sort(lengths.cpu(), stable=True)
        order = todo[sort.to(device)]
        bounds = chunk_bounds(lengths, max_batch_size, max_tokens, forward_cost=_forward_cost(device, max_tokens))
    else:
        order = todo
        bounds = [(start, min(start + max_batch_size, len(order))) for start in range(0, len(order), max_batch_size)]
    logits: Tensor | None = None
    if reused.any():
        assert unperturbed is not None
        logits = torch.empty(len(unique), unperturbed.shape[-1], dtype=torch.float32, device=unperturbed.device)
        logits[reused.to(logits.device)] = unperturbed.detach().float()[u_sample[reused].to(logits.device)]
    forwards = tokens = real_tokens = 0
    for start, stop in bounds:
        chunk = order[start:stop]
        samples = u_sample[chunk]
        mask = u_removed[chunk]
        perturbed = modality.remove(select(inputs, samples), mask)
        if lengths is not None:
            width = int(lengths[stop - 1])  # sorted: the chunk's last row is its longest
            perturbed = modality.trim(perturbed, width)
            mask = mask[:, :width]
            tokens += width * len(chunk)
            real_tokens += int(lengths[start:stop].sum())
        out = forward.zeroed(perturbed, mask) if zero_embedding else forward(perturbed)  # type: ignore[attr-defined]
        out = logits_of(out).float()
        if logits is None:
            logits = torch.empty(len(unique), out.shape[-1], dtype=torch.float32, device=out.device)
        logits[chunk.to(logits.device)] = out.to(logits.device)
        forwards += 1
    assert logits is not None
    if stats is not None:
        stats.update(rows=num_samples * num_rows, unique_rows=len(unique), reused_rows=int(reused.sum()),
                     forwards=forwards, forwarded_rows=len(order), tokens=tokens, real_tokens=real_tokens)
    return logits[inverse.to(logits.device)].reshape(num_samples, num_rows, -1)


def _unchanged_by_empty_removal(
    inputs: ModelInputs, modality: Modality, num_samples: int, num_tokens: int, device: torch.device
) -> Tensor:
    """``[B]`` bool: the samples whose inputs ``modality.remove`` gives back exactly when nothing is removed."""
    rebuilt = modality.remove(inputs, torch.zeros(num_samples, num_tokens, dtype=torch.bool, device=device))
    same = torch.ones(num_samples, dtype=torch.bool, device=device)
    if set(rebuilt) != set(inputs):
        return ~same
    for key, value in inputs.items():
        other = rebuilt[key]
        if not isinstance(value, Tensor) or not isinstance(other, Tensor):
            if other is not value:
                return ~same
            continue
        per_sample = value.dim() > 0 and value.shape[0] == num_samples
        if other.shape != value.shape or other.dtype != value.dtype or not per_sample:
            return ~same
        same &= (other == value).reshape(num_samples, -1).all(dim=1).to(device)
    return same


def _forward_cost(device: torch.device, max_tokens: int | None) -> int:
    """What one more forward costs, in padded positions, when :func:`chunk_bounds` weighs a cut.

    On CPU the time of a forward is about proportional to the positions it holds (the fixed cost of a call is a few
    milliseconds, tens of positions of MiniLM), so the chunks follow the lengths closely; on an accelerator a call's
    fixed cost is worth thousands of positions, so chunks are only cut where that saves a full bound of padding.
    """
    if device.type == "cpu":
        return 64
    return max_tokens if max_tokens is not None else 256 * 64


def chunk_bounds(
    sorted_lengths: Tensor, max_rows: int, max_tokens: int | None, forward_cost: int | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of length-sorted rows.

    Every chunk holds at most ``max_rows`` rows and, when ``max_tokens`` is given, at most ``max_tokens`` rows x
    width (the width of a chunk is its last, longest row's length; a single row longer than the bound forms its own
    chunk). Without ``forward_cost`` the chunks are as large as both bounds allow (greedy). With it, the cut points
    minimise ``padded positions + forward_cost x forwards`` (the padded positions of a chunk are rows x width):
    a chunk ends either where the length changes or where a bound stops it, and a shortest path over those cut
    points finds the cheapest partition among them.

    Example:
        >>> import torch
        >>> chunk_bounds(torch.tensor([2, 2, 3, 8, 9]), max_rows=4, max_tokens=9)
        [(0, 3), (3, 4), (4, 5)]
        >>> chunk_bounds(torch.tensor([2, 2, 2, 9, 9, 9]), max_rows=6, max_tokens=None)
        [(0, 6)]
        >>> chunk_bounds(torch.tensor([2, 2, 2, 9, 9, 9]), max_rows=6, max_tokens=None, forward_cost=4)
        [(0, 3), (3, 6)]
    """
    lengths = sorted_lengths.tolist()
    count = len(lengths)

    def largest(start: int) -> int:
        """Rows of the largest chunk starting at ``start`` that both bounds allow."""
        low, high = 1, min(max_rows, count - start)
        if max_tokens is not None:
            while low < high:  # rows * width grows with rows (lengths ascend): bisect
                middle = (low + high + 1) // 2
                if middle * lengths[start + middle - 1] <= max_tokens:
                    low = middle
                else:
                    high = middle - 1
            return low
        return high

    if forward_cost is None:
        bounds, start = [], 0
        while start < count:
            stop = start + largest(start)
            bounds.append((start, stop))
            start = stop
        return bounds
    # cut points: where the length changes (and the end); a chunk may also stop where a bound stops it
    changes = [i for i in range(1, count) if lengths[i] != lengths[i - 1]] + [count]
    best: dict[int, tuple[int, int]] = {0: (0, -1)}  # position -> (cost to reach it, previous position)
    frontier = [0]
    while frontier:
        start = heapq.heappop(frontier)
        cost = best[start][0]
        if start == count:
            break
        limit = start + largest(start)
        stops = {limit, *changes[bisect.bisect_right(changes, start) : bisect.bisect_right(changes, limit)]}
        for stop in stops:
            total = cost + (stop - start) * lengths[stop - 1] + forward_cost
            if stop not in best:
                heapq.heappush(frontier, stop)
            if stop not in best or total < best[stop][0]:
                best[stop] = (total, start)
    bounds, stop = [], count
    while stop > 0:
        start = best[stop][1]
        bounds.append((start, stop))
        stop = start
    return bounds[::-1]


@torch.no_grad()
def evaluate_suite(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanations: Mapping[str, Explanation],
    modality: Modality,
    metrics: Sequence[RemovalMetric],
    *,
    max_batch_size: int | None = None,
    max_tokens: int | None = None,
    stats: list[dict[str, int]] | None = None,
    unperturbed: Tensor | None = None,
) -> list[dict[str, Tensor]]:
    """Every metric on every method's maps of one batch, with one shared, deduplicated engine pass per removal.

    Args:
        forward: inputs -> logits (an :class:`~lightning_xai.metrics.EmbeddingForward` for zero-embedding removal).
        inputs: the unperturbed batch.
        explanations: ``{method: Explanation}`` of the same batch.
        modality: token bookkeeping; each metric's ``removal`` picks a variant of it.
        metrics: the metrics to compute (their states are not touched).
        max_batch_size: rows per forward (default: the smallest of the metrics').
        max_tokens: rows x tokens per forward for text (default: the smallest of the metrics'; None if none has one).
        stats: when given, one engine statistics dict per removal group is appended.
        unperturbed: ``[B, C]`` logits of ``inputs`` from the explanation forward of the same model in the same mode;
            the unperturbed rows then cost no forward (see :func:`forward_removals`).

    Returns:
        ``out[i][method]``: ``[B]`` values of ``metrics[i]`` (NaN where skipped).
    """
    budget = max_batch_size or min((m.max_batch_size for m in metrics), default=256)
    if max_tokens is None:
        max_tokens = min((m.max_tokens for m in metrics if m.max_tokens is not None), default=None)
    groups: dict[Any, list[int]] = {}
    for i, metric in enumerate(metrics):
        groups.setdefault(metric.removal, []).append(i)
    out: list[dict[str, Tensor]] = [{} for _ in metrics]
    for removal, members in groups.items():
        parts, spans = [], []
        offset = 0
        for i in members:
            for name, explanation in explanations.items():
                masks = metrics[i].removal_masks(explanation)
                parts.append(masks)
                spans.append((i, name, offset, offset + masks.shape[1]))
                offset += masks.shape[1]
        group_stats: dict[str, int] = {}
        logits = forward_removals(
            forward, inputs, resolve_modality(modality, removal), torch.cat(parts, dim=1), max_batch_size=budget,
            max_tokens=max_tokens, stats=group_stats, unperturbed=unperturbed,
        )
        if stats is not None:
            stats.append(group_stats)
        for i, name, start, stop in spans:
            explanation = explanations[name]
            values = metrics[i].per_sample(logits[:, start:stop].to(explanation.relevance.device), explanation)
            out[i][name] = values
    return out


@torch.no_grad()
def perturbation_curves(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int,
    most_relevant_first: bool = True,
    score: Score = "prob",
    max_batch_size: int = 256,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    insertion: bool = False,
) -> Tensor:
    """Score of the explained class after removing ``0, ceil(n/steps), ..., n`` content tokens in relevance order.

    All ``B * (steps + 1)`` perturbed inputs go through :func:`forward_removals` (deduplicated, built lazily per
    chunk, length-sorted, trimmed per chunk, at most ``max_batch_size`` rows per forward).

    Args:
        forward: inputs -> logits; called under ``no_grad`` in whatever mode the caller set (eval).
        inputs: the unperturbed batch.
        explanation: relevance and token masks for the batch (its ``target`` is the scored class).
        modality: how tokens are removed.
        steps: number of removal steps (the curve has ``steps + 1`` points, the first one unperturbed).
        most_relevant_first: MoRF (deletion) order; False removes the least relevant first.
        score: ``"prob"`` (softmax probability) or ``"logit"``.
        max_batch_size: largest number of rows per forward.
        max_tokens: largest ``rows x tokens`` per forward (text; None: rows only).
        insertion: start from every content token removed and insert them in relevance order instead.

    Returns:
        ``[B, steps + 1]`` float32 curves.
    """
    curves = perturbation_curves_multi(
        forward, inputs, {explanation.method: explanation}, modality, steps=steps,
        orders=("morf" if most_relevant_first else "lerf",), score=score, max_batch_size=max_batch_size,
        max_tokens=max_tokens, insertion=insertion,
    )
    return next(iter(curves.values()))


@torch.no_grad()
def perturbation_curves_multi(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanations: dict[str, Explanation],
    modality: Modality,
    *,
    steps: int,
    orders: tuple[Literal["morf", "lerf"], ...] = ("morf",),
    score: Score = "prob",
    max_batch_size: int = 256,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    insertion: bool = False,
) -> dict[tuple[str, str], Tensor] | dict[str, Tensor]:
    """Deletion (or insertion) curves of several methods' maps of one batch, sharing every common forward.

    Returns ``{method: [B, steps + 1]}`` for a single order, else ``{(method, order): [B, steps + 1]}``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    masks, keys = [], []
    for name, explanation in explanations.items():
        content = explanation.content_mask
        schedule = removal_schedule(content.sum(dim=1), steps)
        for order in orders:
            if order not in ("morf", "lerf"):
                raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
            masks.append(curve_masks(explanation.relevance, content, schedule, descending=order == "morf",
                                     keep=insertion))
            keys.append((name, order))
    logits = forward_removals(forward, inputs, modality, torch.cat(masks, dim=1), max_batch_size=max_batch_size,
                              max_tokens=max_tokens)
    out: dict = {}
    for i, (name, order) in enumerate(keys):
        part = logits[:, i * (steps + 1) : (i + 1) * (steps + 1)]
        curve = scores_of(part, explanations[name].target, score)
        out[name if len(orders) == 1 else (name, order)] = curve.to(explanations[name].relevance.device)
    return out


__all__ = [
    "DEFAULT_MAX_TOKENS", "EmbeddingForward", "ForwardFn", "RemovalMetric", "Score", "chunk_bounds", "evaluate_suite",
    "forward_removals", "perturbation_curves", "perturbation_curves_multi", "resolve_modality", "trapezoid_auc",
]
