"""The engine: explain and score a probe set once, with no Lightning in sight.

:func:`explain_probe_set` is what one scheduled validation of :class:`~lightning_xai.ExplanationMonitor` does and
what ``lightning-xai explain`` does over a whole split: the probe set is explained in chunks (bounded by
``batch_size`` rows and ``token_budget`` rows x tokens^2, or rows x tokens for a streamed pass; halved on
out-of-memory and retried), every chunk's maps are scored by the :class:`~lightning_xai.scoring.Scoreboard`, the
first ``num_heatmaps`` samples are kept for the dashboards, and the result is one :class:`EpochResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_xai._distributed import SERVED_SHARDING, gathered_parameters, reduction_guard, sharding_refusal
from lightning_xai._runtime import ErrorPolicy, is_out_of_memory, raise_out_of_memory
from lightning_xai.capture import eval_mode
from lightning_xai.capture.base import AttentionCapture
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.explainers import Explainer, resolve_explainers
from lightning_xai.explanation_pass import Target, explain, streams_attention
from lightning_xai.families import ModelFamily
from lightning_xai.metrics import ScoringContext, resolve_metrics
from lightning_xai.metrics.engine import resolve_modality
from lightning_xai.modalities import Modality, select
from lightning_xai.probe import ProbeData
from lightning_xai.records import ProbeSample
from lightning_xai.scoring import Scoreboard, Skipped, metric_name, reusable_logits
from lightning_xai.types import Explanation, ModelInputs, logits_of

#: Default bound on ``rows x tokens^2`` of one explanation chunk (32 rows of 128 tokens; 2 rows of 512).
DEFAULT_TOKEN_BUDGET = 32 * 128 * 128


@dataclass
class EpochResult:
    """What explaining a probe set produced.

    Attributes:
        values: logged key -> scalar (reduced over processes under DDP, except this process's skipped-sample
            counts; NaN where nothing was scored).
        higher_is_better: logged key -> direction.
        samples: the first ``num_heatmaps`` probe samples with every method's map (dashboards).
        relevance: method -> every content-token relevance of the probe set (histograms).
        maps: method -> its maps of the whole probe set on the CPU (the next validation's stability reference).
        skipped: ``method`` or ``method/metric`` -> probe samples lost to errors.
    """

    values: dict[str, Tensor] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    samples: list[ProbeSample] = field(default_factory=list)
    relevance: dict[str, np.ndarray] = field(default_factory=dict)
    maps: dict[str, Explanation] = field(default_factory=dict)
    skipped: Skipped = field(default_factory=dict)


def validate_methods(
    explainers: Sequence[Explainer | str], metrics: Sequence[Metric | str]
) -> tuple[list[Explainer], list[Metric]]:
    """The explainers and metrics (instances or registered names) as instances, checked, with what to pass instead.

    Example:
        >>> from lightning_xai.explainers import GradSAM
        >>> validate_methods([GradSAM(), GradSAM()], [])
        Traceback (most recent call last):
        ...
        ValueError: explainer names must be unique; got ['grad_sam', 'grad_sam']
    """
    explainers, metrics = resolve_explainers(explainers), resolve_metrics(metrics)
    if not explainers:
        raise ValueError("explainers must name at least one explainer, e.g. [GradSAM()] or ['grad_sam']")
    for metric in metrics:
        if "reference" in getattr(metric, "requires", ()):
            raise ValueError(
                f"{type(metric).__name__} compares two maps: the engine already scores stability, agreement "
                "between methods and gains over a Random explainer; pass metrics that score one map."
            )
    names = [e.name for e in explainers]
    if len(set(names)) != len(names):
        raise ValueError(f"explainer names must be unique; got {names}")
    return explainers, metrics


def runnable(
    family: ModelFamily,
    modality: Modality,
    explainers: Sequence[Explainer],
    metrics: Sequence[Metric],
    policy: ErrorPolicy,
) -> tuple[list[Explainer], list[Metric]]:
    """The explainers the family can serve and the metrics the modality allows; the others are refused.

    A refusal names the method, the family (or modality), the reason and what to do. With ``on_error="raise"``,
    or when no explainer is left, it is an :class:`~lightning_xai.errors.UnsupportedMethodError`; otherwise each
    refusal is warned once and the other methods run.
    """
    refusals = {e.name: family.refusal(e.name, e.requirements()) for e in explainers}
    for metric in metrics:
        check = getattr(metric, "check", None)
        if callable(check):
            try:
                check(modality)
            except LightningXAIError as error:
                refusals[metric_name(metric)] = str(error)
    refused = {name: reason for name, reason in refusals.items() if reason is not None}
    active = [e for e in explainers if e.name not in refused]
    if refused and (policy.on_error == "raise" or not active):
        raise UnsupportedMethodError(f"{policy.owner}: " + "\n".join(refused.values()))
    for name, reason in refused.items():
        policy.warn_once(f"refused {name}", f"{name!r} is refused at setup and will not run: {reason}")
    kept = [m for m in metrics if metric_name(m) not in refused]
    caveats: dict[str, list[str]] = {}
    for metric in kept:  # what a removal cannot measure on this family: said once, not left silent
        if hasattr(metric, "removal_masks"):  # the modality the engine removes with (checked above: it resolves)
            caveat = family.removal_caveat(getattr(resolve_modality(modality, metric.removal), "removal", None))
            if caveat is not None:
                caveats.setdefault(caveat, []).append(metric_name(metric))
    for caveat, names in caveats.items():
        policy.warn_once("removal caveat", f"{', '.join(names)} on a {family.name!r} model: {caveat}.")
    return active, kept


def label_names(model: nn.Module) -> dict[int, str]:
    """Class index -> name from ``model.config.id2label`` (empty when the model has none)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


def chunk_rows(
    explainers: Sequence[Explainer],
    width: int,
    batch_size: int,
    token_budget: int,
    capture: AttentionCapture | None = None,
) -> int:
    """Rows of one explanation chunk: at most ``batch_size``, and ``token_budget`` counted as rows x tokens^2.

    The recorded eager attention and its gradient grow with ``T x T`` per row. When the pass streams instead
    (:func:`~lightning_xai.explanation_pass.streams_attention`: no method needing the maps, and one asking for the
    sdpa pass or the model's ``capture`` able to stream) and no method's own pass may form the maps
    (:meth:`~lightning_xai.explainers.base.Explainer.own_pass_forms_maps`: LRP on the eager attention, integrated
    gradients), the explanation's memory grows with ``T``, and the budget counts rows x tokens.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> from lightning_xai.explainers import AttnLRP, GradientXInput, GradSAM
        >>> from lightning_xai.families import resolve_family
        >>> budget = 32 * 128 * 128
        >>> chunk_rows([GradSAM()], 2048, 32, budget), chunk_rows([GradSAM(attention="sdpa")], 2048, 32, budget)
        (1, 32)
        >>> chunk_rows([GradSAM(attention="sdpa"), AttnLRP(attention="eager")], 512, 32, budget)  # rows x T^2
        2
        >>> capture = resolve_family(tiny_bert()).capture()  # gradient x input streams wherever the capture can
        >>> chunk_rows([GradientXInput()], 2048, 32, budget), chunk_rows([GradientXInput()], 2048, 32, budget, capture)
        (1, 32)
        >>> chunk_rows([AttnLRP()], 2048, 32, budget, capture)  # its own pass on the model's sdpa: rows x T
        32
    """
    linear = streams_attention(explainers, capture) and not any(e.own_pass_forms_maps(capture) for e in explainers)
    cost = width if linear else width * width
    return max(1, min(batch_size, token_budget // cost))


def explain_probe_set(
    model: nn.Module,
    probe: ProbeData,
    explainers: Sequence[Explainer],
    scoreboard: Scoreboard,
    *,
    family: ModelFamily,
    modality: Modality,
    device: torch.device | str = "cpu",
    target: Target = "predicted",
    batch_size: int = 32,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    num_heatmaps: int = 0,
    keep_samples: bool = True,
    previous_maps: Mapping[str, Explanation] | None = None,
    policy: ErrorPolicy | None = None,
    distributed: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> EpochResult:
    """Explain ``probe`` with every explainer, score every map, and compute the scoreboard.

    Args:
        model: the model (a registered family's).
        probe: the collated probe set (CPU; each chunk is moved to ``device``).
        explainers: the methods.
        scoreboard: metric states (updated, computed and reset here).
        family: the model's family.
        modality: the inputs' token bookkeeping.
        device: where the chunks run.
        target: class to explain: ``"predicted"``, ``"label"`` or a class index.
        batch_size: most probe samples per explanation pass.
        token_budget: most ``rows x tokens^2`` per explanation pass (attention memory grows with it); rows x tokens
            when the pass streams the attention (see :func:`chunk_rows`).
        num_heatmaps: how many of the first probe samples are kept for dashboards.
        keep_samples: keep dashboard samples and relevance histograms (False on ranks other than zero).
        previous_maps: the previous validation's maps of the same probe set (stability), when there is one.
        policy: what a failure does (default: warn once and go on).
        distributed: whether every process runs this too (then every metric is computed on every rank).
        on_chunk: called with the number of probe samples done after each chunk (a progress bar).

    Returns:
        The :class:`EpochResult`.

    Under FSDP2 (``fully_shard``) every rank must call this together, even with no probe sample: the sharded
    parameters are gathered once for the whole call (:func:`~lightning_xai._distributed.gathered_parameters`), so
    the passes themselves run no collective and uneven shards, skipped rows and out-of-memory retries cannot leave a
    rank waiting. Sharding that is not served (FSDP1, tensor parallelism, 2-D meshes) raises before any pass.
    With ``distributed``, an error raised on one rank before the reduction (``on_error="raise"``) is told to the
    others at the reduction (one all-reduce), so they raise too instead of waiting for it until the timeout.
    """
    refusal = sharding_refusal(None, model, serves_fsdp2=True)
    if refusal is not None:
        raise LightningXAIError(f"explain_probe_set cannot explain this model: {refusal}. " + SERVED_SHARDING)
    agreed = [e.name for e in explainers] + [metric_name(m) for m in scoreboard.templates]  # equal on every rank
    device = torch.device(device)
    with (
        gathered_parameters(model, device=device, names=agreed),
        reduction_guard(distributed, device) as reached_reduction,
    ):
        policy = policy if policy is not None else ErrorPolicy()
        scoreboard.to(device)
        result = EpochResult()
        names = label_names(model)
        collected: dict[str, list[Explanation]] = {}
        relevance: dict[str, list[np.ndarray]] = {}
        total = len(probe)
        width = modality.num_tokens(probe.inputs) if total else 1
        start, size = 0, chunk_rows(explainers, width, batch_size, token_budget, family.capture())

        def forward(inputs: ModelInputs) -> Tensor:
            return logits_of(model(**inputs))

        while start < total:
            rows = slice(start, min(start + size, total))
            count = rows.stop - rows.start
            chunk = {k: v.to(device) for k, v in select(probe.inputs, rows).items()}
            labels = None if probe.labels is None else probe.labels[rows].to(device)
            rationale = None if probe.rationale is None else probe.rationale[rows].to(device)
            errors: dict[str, BaseException] = {}
            try:
                maps = explain(model, chunk, explainers, modality=modality, target=target, labels=labels,
                               family=family, errors=errors)
                raise_out_of_memory(errors)
            except Exception as error:
                if is_out_of_memory(error) and size > 1:  # halve the chunk and retry the same rows
                    size = max(1, size // 2)
                    policy.warn_once("oom", f"out of memory explaining {count} samples at once; retrying with chunks "
                                     f"of {size}")
                    continue
                policy.handle("the explanation forward", error)  # every method loses this chunk
                _count(result.skipped, [e.name for e in explainers], count)
                start = rows.stop
                continue
            for name, error in errors.items():
                policy.handle(f"explainer {name!r}", error)
                _count(result.skipped, [name], count)
            empty = _rows_without_anything_to_explain(family, chunk, maps, result, policy)
            with eval_mode(model), torch.no_grad():
                context = ScoringContext(forward=forward, inputs=chunk, modality=modality, rationale=rationale,
                                         logits=reusable_logits(model, maps) if maps else None)
                scored = scoreboard.update(maps, context, result.skipped)
            for name, explanation in scored.items():
                collected.setdefault(name, []).append(explanation.to("cpu"))
                _warn_degenerate(policy, family, scoreboard.keys.degenerate(name), maps[name], explanation)
            if keep_samples and maps:
                for name, explanation in maps.items():
                    content = explanation.relevance[explanation.content_mask]
                    relevance.setdefault(name, []).append(content.cpu().numpy())
                result.samples.extend(
                    _probe_samples(start, chunk, labels, maps, modality, names, num_heatmaps, empty)
                )
            start = rows.stop
            if on_chunk is not None:
                on_chunk(count)

        result.maps = {name: _concatenate(parts) for name, parts in collected.items()}
        scoreboard.update_stability(result.maps, previous_maps or {})
        if not reached_reduction():  # another rank raised before the reduction
            raise LightningXAIError("another process failed while explaining its probe shard (its error is raised "
                                    "there); this one stops too instead of waiting for it at the reduction")
        result.values, result.higher_is_better = scoreboard.compute(distributed)
        for name, count in result.skipped.items():  # this process's losses (a method, or a method/metric pair)
            result.values[scoreboard.keys.skipped(name)] = torch.tensor(float(count))
        result.relevance = {name: np.concatenate(parts) for name, parts in relevance.items()}
        return result


def maps_state(maps: Mapping[str, Explanation]) -> dict[str, tuple[Tensor, Tensor]]:
    """Maps as kept in a checkpoint: method -> (relevance ``[P, N]``, content mask ``[P, N]``)."""
    return {name: (e.relevance.clone(), e.content_mask.clone()) for name, e in maps.items()}


def maps_from_state(state: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, Explanation]:
    """The inverse of :func:`maps_state` (targets are not kept: stability compares the maps only)."""
    return {
        name: Explanation(name, relevance, content, torch.zeros_like(content),
                          torch.zeros(relevance.shape[0], dtype=torch.long))
        for name, (relevance, content) in state.items()
    }


def _warn_degenerate(
    policy: ErrorPolicy, family: ModelFamily, key: str, raw: Explanation, scored: Explanation
) -> None:
    """Warn once per method when the scoreboard found maps that rank nothing (they are counted and not scored)."""
    lost = int((raw.content_mask.any(dim=1) & ~scored.content_mask.any(dim=1)).sum())
    if lost:
        policy.warn_once(
            f"degenerate {raw.method}",
            f"{raw.method!r} gave degenerate maps (all zero or one-hot on the content tokens) for {lost} of "
            f"{raw.relevance.shape[0]} samples of a {type(family.model).__name__} (model family {family.name!r}). "
            f"They are not scored; their count is logged as {key}. A method "
            "that is degenerate on every sample cannot be defined for this model: report it with the family file.",
        )


def _rows_without_anything_to_explain(
    family: ModelFamily, chunk: ModelInputs, maps: Mapping[str, Explanation], result: EpochResult,
    policy: ErrorPolicy,
) -> Tensor | None:
    """``[B]`` bool: the rows the family says have nothing to explain (a causal LM's sample without completion).

    They are warned about once and counted as skipped for every method that ran; they hold no content token, so no
    metric scores them.
    """
    found = family.skipped_rows(chunk)
    if found is None or not maps:
        return None
    rows, reason = found
    count = int(rows.sum())
    if count:
        policy.warn_once(
            f"skipped rows {family.name}",
            f"{count} probe sample(s) of this {type(family.model).__name__} are skipped: {reason}. They are "
            "counted in each method's skipped_samples and scored by no metric; training goes on.",
        )
        _count(result.skipped, list(maps), count)
    return rows


def _count(skipped: Skipped, names: list[str], rows: int) -> None:
    for name in names:
        skipped[name] = skipped.get(name, 0) + rows


def _concatenate(parts: list[Explanation]) -> Explanation:
    """One explanation of the whole probe set from its chunks' (the logits are dropped)."""
    first = parts[0]
    return Explanation(
        first.method,
        torch.cat([p.relevance for p in parts]),
        torch.cat([p.valid_mask for p in parts]),
        torch.cat([p.special_mask for p in parts]),
        torch.cat([p.target for p in parts]),
        first.signed,
    )


def _probe_samples(
    start: int,
    chunk: ModelInputs,
    labels: Tensor | None,
    maps: dict[str, Explanation],
    modality: Modality,
    names: dict[int, str],
    num_heatmaps: int,
    empty: Tensor | None = None,
) -> list[ProbeSample]:
    """Dashboard view of the chunk's rows that are among the first ``num_heatmaps`` probe samples.

    Rows with nothing to explain (``empty``, e.g. a causal LM's sample without completion) get no heatmap.
    """
    first = next(iter(maps.values()))
    count = max(0, min(num_heatmaps - start, first.relevance.shape[0]))
    samples = []
    for i in range(count):
        if empty is not None and bool(empty[i]):
            continue
        probs = None if first.logits is None else first.logits[i].softmax(-1)
        prediction = None if probs is None else int(probs.argmax())
        view: dict[str, Any] = modality.sample_view(chunk, i, maps)
        samples.append(
            ProbeSample(
                index=start + i,
                label=None if labels is None else names.get(int(labels[i]), str(int(labels[i]))),
                prediction=None if prediction is None else names.get(prediction, str(prediction)),
                probability=None if probs is None or prediction is None else float(probs[prediction]),
                explained=names.get(int(first.target[i]), str(int(first.target[i]))),
                signed={name: e.signed for name, e in maps.items()},
                **view,
            )
        )
    return samples
