"""A metric tester in the style of torchmetrics' ``MetricTester`` (``tests/unittests/_helpers/testers.py``).

For one registered metric on one tiny model family, :meth:`MetricTester.run_class_metric_test` checks:

* class (accumulated over the batches) == functional == slow per-sample reference (where ``tests/reference/`` has one);
* batched == per-sample (each sample scored alone);
* the shared-pass shortcut (``context.values`` / ``context.reference_values``) == the full path;
* ``state_dict`` round trip (states restored, the restored metric goes on accumulating identically);
* the contract: constants are class attributes or read-only properties (nothing in ``vars(metric)``), ``requires``
  names context fields, and a missing required field raises a ``ValueError`` naming the metric and the field;
* a metric that cannot score the family's modality raises its clear ``check()`` error (and really cannot score it).

:meth:`MetricTester.run_ddp_test` runs every case in ONE pair of forked processes (gloo on loopback, a
``FileStore``): each rank updates its share of the batches and ``compute()`` on both ranks must equal the
single-process value over all batches.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import PATCH, TEXT_FAMILIES, make_inputs, make_model
from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics import RandomNormalisedGain, ScoringContext, get_metric, list_metrics, random_normalised_gain
from lightning_xai.metrics._base import CONTEXT_FIELDS, ExplanationMetric
from lightning_xai.modalities import TextModality, VisionModality, select
from lightning_xai.types import Explanation, logits_of

UNK, MASK = 1, 4
#: Tolerances: the same values summed in another order (epoch means, DDP); the same computation batched differently
#: (float noise of other chunk compositions); a slow one-sample reference (as ``tests/metrics/test_faithfulness.py``).
ATOL_SUMS = 1e-6
ATOL_BATCHING = 1e-5
ATOL_REFERENCE = 2e-5


def text_modality() -> TextModality:
    return TextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=MASK,
                        token_ids={"unk": UNK, "mask": MASK, "pad": 0})


def prefix_tokens(family: str) -> int:
    return 2 if family == "deit" else 1


# ---------------------------------------------------------------------------------------------------------- data


def _rows(explanation: Explanation, index: slice) -> Explanation:
    return dataclasses.replace(
        explanation, relevance=explanation.relevance[index], valid_mask=explanation.valid_mask[index],
        special_mask=explanation.special_mask[index], target=explanation.target[index],
        logits=None if explanation.logits is None else explanation.logits[index])


@dataclass(frozen=True)
class Batch:
    """One batch: the maps scored and everything else a metric may need."""

    explanation: Explanation
    context: ScoringContext

    @property
    def size(self) -> int:
        return self.explanation.target.shape[0]

    def row(self, b: int) -> Batch:
        """Sample ``b`` alone (a batch of one)."""
        index = slice(b, b + 1)
        context = self.context
        assert context.inputs is not None and context.rationale is not None and context.reference is not None
        return Batch(_rows(self.explanation, index), dataclasses.replace(
            context, inputs=select(context.inputs, index), rationale=context.rationale[index],
            reference=_rows(context.reference, index)))


@dataclass(frozen=True)
class Sample:
    """One sample as the slow references take it: plain lists, text without its padding."""

    family: str
    model: torch.nn.Module
    forward: Callable[[dict], Tensor]
    ids: list[int] | None  # text
    pixels: Tensor | None  # vision, [C, H, W]
    relevance: list[float]  # every model token
    content: list[bool]
    target: int
    rationale: list[bool]
    reference: list[float]

    def on_content(self, values: Sequence[Any]) -> list[Any]:
        return [v for v, c in zip(values, self.content, strict=True) if c]


@dataclass
class Setup:
    """A tiny model of one family, its modality and two batches of maps (shared by every metric)."""

    family: str
    model: torch.nn.Module
    modality: TextModality | VisionModality
    batches: list[Batch]

    def samples(self) -> list[Sample]:
        out = []
        for batch in self.batches:
            inputs, exp, ctx = batch.context.inputs, batch.explanation, batch.context
            assert inputs is not None and ctx.rationale is not None and ctx.reference is not None
            for b in range(batch.size):
                n = int(inputs["attention_mask"][b].sum()) if "attention_mask" in inputs else exp.relevance.shape[1]
                out.append(Sample(
                    self.family, self.model, batch.context.forward,  # type: ignore[arg-type]
                    inputs["input_ids"][b, :n].tolist() if "input_ids" in inputs else None,
                    inputs["pixel_values"][b] if "pixel_values" in inputs else None,
                    exp.relevance[b, :n].tolist(), exp.content_mask[b, :n].tolist(), int(exp.target[b]),
                    ctx.rationale[b, :n].tolist(), ctx.reference.relevance[b, :n].tolist()))
        return out


def sensitive_model(family: str, std: float = 0.3) -> torch.nn.Module:
    """A tiny model whose scores move when tokens are removed.

    The default initialisation (std 0.02) gives near-uniform probabilities that no perturbation changes by more than
    ~1e-6, so every comparison would pass whatever the masks; weight matrices drawn with std 0.3 move them by ~0.1.
    """
    model = make_model(family, num_labels=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * std)
    return model


def make_setup(family: str, num_batches: int = 2, batch_size: int = 4) -> Setup:
    """Signed random maps (row 0 with ties), a random reference map, random rationales; in the second text batch
    one sample has no content token (every metric must skip it)."""
    model = sensitive_model(family)
    modality = text_modality() if family in TEXT_FAMILIES else VisionModality(PATCH)

    def forward(inputs: dict) -> Tensor:
        return logits_of(model(**inputs))

    batches = []
    for i in range(num_batches):
        inputs = make_inputs(family, batch=batch_size, seed=10 + i)
        tokens = inputs["input_ids"].shape[1] if "input_ids" in inputs else prefix_tokens(family) + 16
        valid, special = modality.token_masks(inputs, tokens)
        if i == 1 and family in TEXT_FAMILIES:
            special[0] = True
        g = torch.Generator().manual_seed(100 + i)
        relevance = torch.randn(valid.shape, generator=g)
        relevance[0] = torch.randint(-2, 3, relevance[0].shape, generator=g).float()  # ties
        with torch.no_grad():
            probabilities = forward(inputs).softmax(dim=-1)
        assert float(probabilities.std(dim=0).max()) > 1e-2, "the model barely reacts to its input"
        target = probabilities.argmax(dim=-1)
        explanation = Explanation("method", relevance * valid, valid, special, target, signed=True)
        reference = Explanation("random", torch.rand(valid.shape, generator=g) * valid, valid, special, target)
        rationale = torch.rand(valid.shape, generator=g) < 0.4
        batches.append(Batch(explanation, ScoringContext(forward, inputs, modality, rationale, reference)))
    return Setup(family, model, modality, batches)


# ---------------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class MetricCase:
    """A registered metric under test.

    Attributes:
        name: its registry name.
        make: a fresh, small (fast) instance.
        functional: the functional twin on one batch: ``[B]`` values (``[B, 2]`` method and random values for gain).
        reference: the slow reference of one sample (a float, or ``(method, random)`` for gain), or None.
        reference_modalities: the modalities the reference is written for.
    """

    name: str
    make: Callable[[], ExplanationMetric]
    functional: Callable[[Batch], Tensor]
    reference: Callable[[Sample], Any] | None = None
    reference_modalities: frozenset[str] = frozenset({"text"})

    def __str__(self) -> str:
        return self.name


def perturbation_case(name: str, functional: Callable[..., Tensor], reference: Callable[[Sample], Any] | None = None,
                      reference_modalities: frozenset[str] = frozenset({"text"}), **kwargs: Any) -> MetricCase:
    """A perturbation metric whose constructor and functional take the same ``kwargs``."""

    def run(batch: Batch) -> Tensor:
        ctx = batch.context
        return functional(ctx.forward, ctx.inputs, batch.explanation, ctx.modality, reduction="none", **kwargs)

    return MetricCase(name, lambda: get_metric(name, **kwargs), run, reference, reference_modalities)


def batch_values(metric: ExplanationMetric, batch: Batch) -> Tensor | None:
    """The class's per-sample values of one batch (``[B, 2]`` method and random values for gain)."""
    if isinstance(metric, RandomNormalisedGain):
        pair = metric.paired_values(batch.explanation, batch.context)
        return None if pair is None else torch.stack(pair, dim=1)
    return metric.sample_values(batch.explanation, batch.context)  # type: ignore[attr-defined]


def with_values(batch: Batch, values: Tensor) -> Batch:
    """The batch with its values given (the shared engine pass's shortcut)."""
    if values.dim() == 2:
        return Batch(batch.explanation, dataclasses.replace(batch.context, values=values[:, 0],
                                                            reference_values=values[:, 1]))
    return Batch(batch.explanation, dataclasses.replace(batch.context, values=values))


def epoch_value(metric: ExplanationMetric, values: Tensor) -> float:
    """What ``compute()`` must give for these per-sample values (all batches)."""
    if values.dim() == 2:  # gain: the ratio of the two means over the samples scored on both sides
        kept = ~torch.isnan(values).any(dim=1)
        means = values[kept].double().mean(dim=0)
        assert isinstance(metric, RandomNormalisedGain)
        return float(random_normalised_gain(means[0], means[1], bool(metric.metric.higher_is_better)))
    kept = values[~torch.isnan(values)]
    return float(kept.double().mean()) if len(kept) else math.nan


def assert_close(got: Tensor | float, expected: Tensor | float, atol: float, what: str) -> None:
    got, expected = (torch.as_tensor(x, dtype=torch.float64) for x in (got, expected))
    torch.testing.assert_close(got, expected, atol=atol, rtol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------------------- tester


def _ddp_worker(rank: int, world_size: int, store_path: str, jobs: list[tuple[str, MetricCase, Setup]],
                queue: Any) -> None:
    try:
        torch.set_num_threads(1)  # a forked child must not reuse the parent's thread pool
        dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank,
                                world_size=world_size)
        results = {}
        for key, case, setup in jobs:
            metric = case.make()
            for batch in setup.batches[rank::world_size]:
                metric.update(batch.explanation, batch.context)
            results[key] = float(metric.compute())
        dist.barrier()
        dist.destroy_process_group()
        queue.put((rank, results))
    except BaseException:  # report to the parent instead of dying silently
        queue.put((rank, traceback.format_exc()))


class MetricTester:
    """Runs the checks of the module docstring; caches single-process values for :meth:`run_ddp_test`."""

    def __init__(self) -> None:
        self.single_process: dict[str, float] = {}

    @staticmethod
    def key(case: MetricCase, setup: Setup) -> str:
        return f"{case.name}/{setup.family}"

    def run_class_metric_test(self, case: MetricCase, setup: Setup) -> float | None:
        """Every single-process check; returns ``compute()`` over all batches (None: the modality is unsupported)."""
        metric = case.make()
        assert type(metric) is list_metrics()[case.name], (case.name, type(metric))
        self._check_constants(metric)
        try:
            metric.check(setup.modality)
        except LightningXAIError as error:
            message = str(error)  # names the metric, the modality, the reason and what to do
            for part in (type(metric).__name__, setup.modality.name, "removal=", "pass a removal"):
                assert part in message, (part, message)
            with pytest.raises(Exception):  # noqa: B017 -- check() was right: the metric really cannot score it
                case.functional(setup.batches[0])
            return None

        for batch in setup.batches:
            metric.update(batch.explanation, batch.context)
        value = float(metric.compute())
        assert math.isfinite(value), (case.name, setup.family, value)
        assert metric.update_count == len(setup.batches)

        functional = torch.cat([case.functional(batch) for batch in setup.batches])
        per_batch = [batch_values(case.make(), batch) for batch in setup.batches]
        assert all(v is not None for v in per_batch)
        batched = torch.cat(per_batch)  # type: ignore[arg-type]
        assert_close(batched, functional, ATOL_BATCHING, f"{case}: class values vs functional")
        assert_close(value, epoch_value(metric, functional), ATOL_SUMS, f"{case}: accumulated compute() vs functional")
        self._check_per_sample(case, setup, batched)
        self._check_reference(case, setup, batched)
        self._check_given_values(case, setup, per_batch, value)  # type: ignore[arg-type]
        self._check_state_dict(case, metric, setup, per_batch[0])  # type: ignore[arg-type]
        self._check_requires(case, setup)
        self.single_process[self.key(case, setup)] = value
        return value

    def run_ddp_test(self, cases: Sequence[MetricCase], setups: Sequence[Setup], store_path: str,
                     world_size: int = 2, timeout: float = 120.0) -> None:
        """Every supported (case, setup) in one pair of forked processes; ``compute()`` on each rank == single."""
        jobs = []
        for setup in setups:
            for case in cases:
                key = self.key(case, setup)
                if key not in self.single_process and self.run_class_metric_test(case, setup) is None:
                    continue
                jobs.append((key, case, setup))
        context = mp.get_context("fork")
        queue = context.Queue()
        workers = [context.Process(target=_ddp_worker, args=(rank, world_size, store_path, jobs, queue))
                   for rank in range(world_size)]
        for worker in workers:
            worker.start()
        try:
            results = dict(queue.get(timeout=timeout) for _ in workers)
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
        for rank, result in results.items():
            assert isinstance(result, dict), f"rank {rank} failed:\n{result}"
            for key, single in self.single_process.items():
                if key in result:
                    assert_close(result[key], single, ATOL_SUMS, f"{key} on rank {rank} of {world_size}")
        assert all(set(r) == {key for key, _, _ in jobs} for r in results.values())

    # -------------------------------------------------------------------------------------------------- checks

    @staticmethod
    def _check_constants(metric: ExplanationMetric) -> None:
        for attribute in ("name", "higher_is_better", "is_differentiable", "full_state_update", "requires"):
            assert attribute not in vars(metric), f"{type(metric).__name__}.{attribute} is written per instance"
        assert isinstance(metric.name, str) and metric.name
        assert isinstance(metric.higher_is_better, bool)
        assert metric.is_differentiable is False and metric.full_state_update is False
        assert metric.requires and metric.requires <= CONTEXT_FIELDS, metric.requires
        with pytest.raises((RuntimeError, AttributeError)):  # torchmetrics' const guard, or a read-only property
            metric.higher_is_better = not metric.higher_is_better  # type: ignore[misc]

    @staticmethod
    def _check_per_sample(case: MetricCase, setup: Setup, batched: Tensor) -> None:
        alone = [batch_values(case.make(), batch.row(b)) for batch in setup.batches for b in range(batch.size)]
        assert_close(torch.cat(alone), batched, ATOL_BATCHING, f"{case}/{setup.family}: each sample alone vs batched")

    @staticmethod
    def _check_reference(case: MetricCase, setup: Setup, batched: Tensor) -> None:
        if case.reference is None or setup.modality.name not in case.reference_modalities:
            return
        for i, sample in enumerate(setup.samples()):
            if not any(sample.content):
                expected: Any = [math.nan] * batched[i].numel()  # no content token: every metric skips it
            else:
                expected = case.reference(sample)
            assert_close(batched[i], torch.tensor(expected, dtype=torch.float64).reshape(batched[i].shape),
                         ATOL_REFERENCE, f"{case}/{setup.family} sample {i}: vs slow reference")

    @staticmethod
    def _check_given_values(case: MetricCase, setup: Setup, per_batch: list[Tensor], value: float) -> None:
        shortcut = case.make()
        for batch, values in zip(setup.batches, per_batch, strict=True):
            given = with_values(batch, values)
            shortcut.update(given.explanation, given.context)
        assert_close(float(shortcut.compute()), value, ATOL_SUMS, f"{case}: update with context.values vs full path")

    @staticmethod
    def _check_state_dict(case: MetricCase, metric: ExplanationMetric, setup: Setup, values: Tensor) -> None:
        metric.persistent(True)
        state = metric.state_dict()
        assert set(metric._defaults) <= set(state), (set(metric._defaults), set(state))
        restored = case.make()
        restored.persistent(True)
        restored.load_state_dict(state)
        with warnings.catch_warnings():  # torchmetrics keeps its update count out of the state_dict: it warns
            warnings.filterwarnings("ignore", "The ``compute`` method of metric")
            assert_close(float(restored.compute()), float(metric.compute()), 0.0, f"{case}: state_dict round trip")
        again = with_values(setup.batches[0], values)
        for m in (metric, restored):  # the restored metric goes on accumulating like the original
            m.update(again.explanation, again.context)
        assert_close(float(restored.compute()), float(metric.compute()), 0.0, f"{case}: update after load_state_dict")

    @staticmethod
    def _check_requires(case: MetricCase, setup: Setup) -> None:
        metric = case.make()
        batch = setup.batches[0]
        for field in sorted(metric.requires):
            context = dataclasses.replace(batch.context, **{field: None})
            if field == "rationale":  # documented: a batch without rationale is skipped
                metric.update(batch.explanation, context)
                assert metric.update_count == 1 and math.isnan(float(metric.compute()))
                continue
            with pytest.raises(ValueError, match=rf"{type(metric).__name__}.*context\.{field}"):
                metric.update(batch.explanation, context)

