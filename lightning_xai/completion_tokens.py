"""A causal LM's per-completion-token maps of a few heatmap samples, for the dashboards (no Lightning).

The monitor explains each completion as a whole (one map per sample, scored by the metrics). For its first few
heatmap samples it also shows which prompt tokens EACH completion token relies on (the inseq-style view): one map
per completion token, from :func:`~lightning_xai.explanation_pass.explain_completion_tokens`, attached to the
samples as :class:`~lightning_xai.records.CompletionTokens` and drawn as one matrix per method
(:func:`~lightning_xai.viz.text.render_token_matrix`). Nothing here is scored.

**Bounded cost.** At most ``num_samples`` samples (the first heatmap samples) and ``max_tokens`` completion tokens
per sample: each explained token is one row of the sample through :func:`~lightning_xai.explanation_pass.explain`,
so a validation explains at most ``num_samples x max_tokens`` extra rows, trimmed to the samples' own length. The
rows are explained in passes bounded like the monitor's chunks (``batch_size`` rows and ``token_budget``
rows x tokens^2, :func:`~lightning_xai.run.chunk_rows`), halved on out-of-memory and retried.

**Bad input.** A completion longer than ``max_tokens`` shows its first ``max_tokens`` tokens (the matrix says
"first K of N"; the completion map and every score use all of them), warned once and counted per method in
``xai/<method>/completion_tokens_truncated``. A method that fails (or an out-of-memory error at one row) loses its
matrices of this validation: warned once (or raised with ``on_error="raise"``), counted in
``xai/<method>/completion_tokens_skipped``; training goes on. Samples without completion tokens get no heatmap and
are already counted in ``xai/<method>/skipped_samples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from lightning_xai._distributed import gathered_parameters
from lightning_xai._runtime import ErrorPolicy, is_out_of_memory, raise_out_of_memory
from lightning_xai.explainers import Explainer, Random
from lightning_xai.explanation_pass import explain_completion_tokens
from lightning_xai.families import ModelFamily
from lightning_xai.families.causal_lm import LABELS_KEY, CausalLMFamily, completion_rows
from lightning_xai.keys import LogKeys
from lightning_xai.modalities import Modality, select
from lightning_xai.probe import ProbeData
from lightning_xai.records import CompletionTokens, ProbeSample
from lightning_xai.run import DEFAULT_TOKEN_BUDGET, EpochResult, chunk_rows

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_SAMPLES", "CompletionTokenViews", "add_completion_tokens",
           "explain_completion_token_samples", "view_methods"]

#: Heatmap samples that get per-completion-token maps by default.
DEFAULT_SAMPLES = 2
#: Completion tokens explained per sample by default (each is one more explained row of the sample).
DEFAULT_MAX_TOKENS = 16


@dataclass
class CompletionTokenViews:
    """What :func:`explain_completion_token_samples` produced.

    Attributes:
        views: probe-sample index -> its per-completion-token maps.
        skipped: method -> samples whose matrices it lost to errors.
        truncated: samples whose completion was longer than ``max_tokens`` (their first ``max_tokens`` are shown).
    """

    views: dict[int, CompletionTokens] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def attach(self, samples: Sequence[ProbeSample]) -> list[ProbeSample]:
        """The samples, each with its per-completion-token maps when it has some."""
        return [
            replace(sample, completion_tokens=self.views[sample.index]) if sample.index in self.views else sample
            for sample in samples
        ]

    def values(self, keys: LogKeys, methods: Sequence[str]) -> dict[str, torch.Tensor]:
        """The health counts to log: ``completion_tokens_skipped`` and ``_truncated`` per method, where non-zero."""
        out = {keys.tokens_skipped(name): torch.tensor(float(count)) for name, count in self.skipped.items() if count}
        if self.truncated:
            out.update({keys.tokens_truncated(name): torch.tensor(float(self.truncated)) for name in methods})
        return out


def view_methods(family: ModelFamily, explainers: Sequence[Explainer]) -> list[Explainer]:
    """The explainers that get per-completion-token maps: every one but ``Random``, for causal LMs only.

    ``Random`` is the scores' baseline: its rows would be independent noise, so it draws no matrix.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> from lightning_xai.explainers import GradSAM
        >>> from lightning_xai.families import resolve_family
        >>> view_methods(resolve_family(tiny_bert()), [GradSAM()])  # not a causal LM: no view
        []
    """
    if not isinstance(family, CausalLMFamily):
        return []
    return [explainer for explainer in explainers if not isinstance(explainer, Random)]


def explain_completion_token_samples(
    model: torch.nn.Module,
    probe: ProbeData,
    samples: Sequence[ProbeSample],
    explainers: Sequence[Explainer],
    *,
    family: ModelFamily,
    modality: Modality,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    policy: ErrorPolicy | None = None,
) -> CompletionTokenViews:
    """Per-completion-token maps of ``samples`` (heatmap samples of ``probe``) for each of ``explainers``.

    Args:
        model: the :class:`~lightning_xai.families.CompletionScorer` the monitor explains.
        probe: the collated probe set (CPU).
        samples: the heatmap samples to explain (their ``index`` is their row in ``probe``; text tokens as drawn).
        explainers: the methods (see :func:`view_methods`).
        family: the model's family (a :class:`~lightning_xai.families.CausalLMFamily`).
        modality: the inputs' token bookkeeping.
        max_tokens: most completion tokens explained per sample (the first ones).
        device: where the passes run.
        batch_size: most expanded rows per pass.
        token_budget: most rows x tokens^2 per pass (see :func:`~lightning_xai.run.chunk_rows`).
        policy: what a failure does (default: warn once and go on).

    Returns:
        The views by probe index, and the counts of skipped and truncated samples.
    """
    policy = policy if policy is not None else ErrorPolicy()
    result = CompletionTokenViews()
    names = [e.name for e in explainers]
    if not samples or not explainers:
        return result
    indices = torch.tensor([sample.index for sample in samples])
    inputs = select(probe.inputs, indices)
    inputs = modality.trim(inputs, int(modality.lengths(inputs).max()))  # only as wide as these samples
    inputs = {key: value.to(device) for key, value in inputs.items()}
    # the model's capture says whether the pass can stream (rows x tokens) rather than record (rows x tokens^2)
    size = chunk_rows(explainers, modality.num_tokens(inputs), batch_size, token_budget, family.capture())
    errors: dict[str, BaseException] = {}
    while True:
        errors.clear()
        try:
            maps = explain_completion_tokens(model, inputs, explainers, modality=modality, family=family,
                                             max_tokens=max_tokens, rows_per_pass=size, errors=errors)
            raise_out_of_memory(errors)
            break
        except Exception as error:
            if is_out_of_memory(error) and size > 1:
                size = max(1, size // 2)
                policy.warn_once("oom completion tokens", "out of memory explaining the per-completion-token maps; "
                                 f"retrying with passes of {size} rows")
                continue
            policy.handle("the per-completion-token maps", error)
            result.skipped = dict.fromkeys(names, len(samples))
            return result
    for name, error in errors.items():
        policy.handle(f"the per-completion-token maps of {name!r}", error)
        result.skipped[name] = len(samples)
    if not maps:
        return result
    first = next(iter(maps.values()))
    totals = completion_rows(inputs[LABELS_KEY]).sum(dim=1).cpu()  # as HF's loss counts them
    for row, sample in enumerate(samples):
        count = int((first.positions[row] >= 0).sum())
        content = first.content_mask[row]
        ids = inputs["input_ids"][row]
        tokens = modality.tokens(ids[first.positions[row, :count]].cpu()) if count else []
        view_maps = {name: m.relevance[row, :count][:, content].cpu().numpy() for name, m in maps.items()}
        result.views[sample.index] = CompletionTokens(list(tokens), int(totals[row]), view_maps)
    result.truncated = sum(view.truncated for view in result.views.values())
    if result.truncated:
        policy.warn_once(
            "completion tokens truncated",
            f"{result.truncated} heatmap sample(s) have completions longer than completion_token_limit={max_tokens} "
            f"tokens: their per-completion-token maps show the first {max_tokens} (their completion maps and every "
            "score use all of them); counted in xai/<method>/completion_tokens_truncated. What to do: raise "
            "ExplanationMonitor(completion_token_limit=...) to see more (each token is one more explained row of its "
            "sample), or leave it: nothing else is affected.",
        )
    return result


def add_completion_tokens(
    result: EpochResult,
    model: torch.nn.Module,
    probe: ProbeData,
    explainers: Sequence[Explainer],
    *,
    family: ModelFamily,
    modality: Modality,
    keys: LogKeys,
    num_samples: int = DEFAULT_SAMPLES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    policy: ErrorPolicy | None = None,
) -> None:
    """Causal LMs: attach per-completion-token maps to the first ``num_samples`` of ``result.samples`` (in place).

    What the monitor (and ``lightning-xai explain``) runs after :func:`~lightning_xai.run.explain_probe_set`: the
    heatmap samples get :class:`~lightning_xai.records.CompletionTokens`, and the health counts (skipped, truncated)
    join ``result.values``. Nothing happens for other families or with ``num_samples=0``; a rank without heatmap
    samples (ranks other than zero) runs no pass. Under FSDP2 every rank calls this together, as it calls
    :func:`~lightning_xai.run.explain_probe_set`: the parameters are gathered on every rank for the block
    (:func:`~lightning_xai._distributed.gathered_parameters`), so rank 0's passes run no collective the others would
    have to join. An unexpected failure is handled by ``policy`` and counted as skipped: a dashboard view is never
    worth a crashed validation.
    """
    policy = policy if policy is not None else ErrorPolicy()
    methods = view_methods(family, explainers)
    if not methods or num_samples <= 0:  # the same on every rank
        return
    with gathered_parameters(model, device=torch.device(device), names=[method.name for method in methods]):
        samples = result.samples[:num_samples]
        if not samples:
            return
        try:
            views = explain_completion_token_samples(
                model, probe, samples, methods, family=family, modality=modality, max_tokens=max_tokens,
                device=device, batch_size=batch_size, token_budget=token_budget, policy=policy,
            )
        except Exception as error:
            policy.handle("the per-completion-token maps", error)
            views = CompletionTokenViews(skipped=dict.fromkeys([m.name for m in methods], len(samples)))
    result.samples = views.attach(result.samples)
    result.values.update(views.values(keys, [method.name for method in methods]))

