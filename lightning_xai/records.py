"""What one scheduled validation produced, as handed to the sinks: probe samples, heatmaps, the epoch report.

These are plain frozen records (no rendering, no I/O): the engine builds :class:`ProbeSample`s, ``viz``
renders them once into :class:`Heatmap`s, and every sink reads one :class:`EpochReport` and parses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from lightning_xai.keys import LogKeys, View


@dataclass(frozen=True)
class CompletionTokens:
    """A causal LM's per-completion-token maps of one probe sample: one row per completion token.

    Row ``c`` explains the teacher-forced log-probability of the sample's ``c``-th completion token alone
    (:func:`~lightning_xai.explanation_pass.explain_completion_tokens`); columns are the sample's content (prompt)
    tokens, :attr:`ProbeSample.tokens`, as in its completion map.

    Attributes:
        tokens: the explained completion tokens, in order: the first ``len(tokens)`` of the completion.
        total: how many completion tokens the sample has (more than ``len(tokens)``: cut to the monitor's cap).
        maps: method -> ``[len(tokens), len(sample.tokens)]`` float relevance, raw (not normalised).
    """

    tokens: list[str]
    total: int
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """Whether the completion had more tokens than were explained."""
        return self.total > len(self.tokens)


@dataclass(frozen=True)
class ProbeSample:
    """One probe sample with every method's map, as shown on dashboards.

    Attributes:
        index: position in the probe set (stable across epochs).
        label: class name of the label, when the batch has labels.
        prediction: predicted class name.
        probability: predicted class probability.
        explained: name of the explained class.
        tokens: text: the content tokens (special tokens and padding removed).
        image: vision: the input image ``[C, H, W]`` (model input space).
        maps: method -> relevance over ``tokens`` (text, 1-D) or over the patch grid (vision, ``[rows, cols]``).
        signed: method -> whether its relevance is signed.
        completion_tokens: causal LMs: the per-completion-token maps (the first few heatmap samples), else None.
    """

    index: int
    label: str | None
    prediction: str | None
    probability: float | None
    explained: str
    tokens: list[str] | None = None
    image: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)
    completion_tokens: CompletionTokens | None = None

    def caption(self) -> str:
        """``label: x · pred: y (p=0.87) · explained: y``.

        Example:
            >>> ProbeSample(0, "pos", "neg", 0.7, "neg").caption()
            'label: pos · pred: neg (p=0.70) · explained: neg'
        """
        parts = [] if self.label is None else [f"label: {self.label}"]
        if self.prediction is not None:
            probability = "" if self.probability is None else f" (p={self.probability:.2f})"
            parts.append(f"pred: {self.prediction}{probability}")
        parts.append(f"explained: {self.explained}")
        return " · ".join(parts)


@dataclass(frozen=True)
class Heatmap:
    """One rendered heatmap of one probe sample.

    Attributes:
        method: the method whose map it shows; None for the comparison grid of every method.
        sample: the probe sample's index.
        rgb: ``[H, W, 3]`` uint8 image.
        html: text samples: the token heatmap as an escaped HTML fragment (None for images and the grid).
        view: ``"map"`` (the sample's map) or ``"completion_tokens"`` (a causal LM's matrix of one map per
            completion token; its keys and paths come from :mod:`lightning_xai.keys` with this view).
    """

    method: str | None
    sample: int
    rgb: np.ndarray
    html: str | None = None
    view: View = "map"

    @cached_property
    def png(self) -> bytes:
        """``rgb`` encoded as PNG once, for every sink that stores PNGs (files, TensorBoard)."""
        from lightning_xai.viz.png import png_bytes

        return png_bytes(self.rgb)


@dataclass(frozen=True)
class EpochReport:
    """Everything the monitor computed at one scheduled validation.

    Attributes:
        epoch: trainer epoch.
        step: trainer global step (the x-axis loggers use).
        scalars: logged key -> value (see :mod:`lightning_xai.keys`).
        higher_is_better: logged key -> direction of the metric.
        samples: the probe samples with maps (the first ``num_heatmaps``).
        heatmaps: the samples' rendered heatmaps (one per sample and method, plus comparison grids).
        relevance: method -> every content-token relevance of the whole probe set (for histograms).
        keys: the run's key formatting (its prefix).
    """

    epoch: int
    step: int
    scalars: dict[str, float]
    higher_is_better: dict[str, bool]
    samples: list[ProbeSample]
    heatmaps: list[Heatmap] = field(default_factory=list)
    relevance: dict[str, np.ndarray] = field(default_factory=dict)
    keys: LogKeys = field(default_factory=LogKeys)

    @property
    def prefix(self) -> str:
        """The log-key prefix (``"xai/"``)."""
        return self.keys.prefix

    def methods(self) -> list[str]:
        """Methods with maps in this report, in first-seen order."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.update(dict.fromkeys(sample.maps))
        return list(seen)

    def heatmap(self, method: str | None, sample: int, view: View = "map") -> Heatmap | None:
        """The heatmap of ``method`` (None: the comparison grid) for probe sample ``sample``, if rendered."""
        return next(
            (h for h in self.heatmaps if h.method == method and h.sample == sample and h.view == view), None
        )
