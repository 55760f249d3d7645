"""Weights & Biases: image overlays, HTML token heatmaps, one table per epoch, best-epoch summaries.

A causal LM's per-completion-token matrices are logged as images (``xai/<method>/completion_tokens/sample_NN``).

Logged through the Lightning ``WandbLogger`` (``log_metrics`` adds ``trainer/global_step``, so Lightning owns the
step). ``define_metric`` is called once per key with the summary that fits what the key means
(:func:`summary_for`): the best epoch (``min``/``max``) where "best" means something, the last value elsewhere.

The probe table shows what the heatmaps show: words merged from their word pieces
(:func:`~lightning_xai.viz.merge_wordpieces`, as the token heatmaps do), each method's most relevant words, and one
inline heatmap cell per method (the coloured-HTML token heatmap for texts, the overlay image for images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_xai.keys import ParsedKey
from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink
from lightning_xai.viz.tokens import merge_wordpieces

__all__ = ["RANDOM", "WandbSink", "summary_for", "top_tokens"]

#: Name of the ``Random`` baseline explainer (its registered name; gains are "vs random").
RANDOM = "random"


def summary_for(parsed: ParsedKey | None, higher_is_better: bool, random: str = RANDOM) -> str:
    """The W&B run-summary of a key: its best epoch where "best" means something, else its last value.

    Scores and gains of real methods are faithfulness results: the summary keeps their best epoch (``max`` when
    higher is better, else ``min``). The ``Random`` baseline's own scores, any agreement between two methods,
    stability and the skipped/degenerate counts are diagnostics with no "best" (a higher agreement with random is
    not better, the fewest skipped samples is not a result): their summary is the last value.

    Args:
        parsed: the key as :meth:`~lightning_xai.keys.LogKeys.parse` reads it (None: not one of the monitor's).
        higher_is_better: the metric's direction, as the monitor reports it.
        random: the name of the random baseline explainer.

    Returns:
        ``"max"``, ``"min"`` or ``"last"``.

    Example:
        >>> from lightning_xai.keys import LogKeys
        >>> keys = LogKeys()
        >>> summary_for(keys.parse("xai/grad_sam/deletion_auc"), higher_is_better=False)
        'min'
        >>> summary_for(keys.parse("xai/grad_sam/deletion_auc_gain_vs_random"), higher_is_better=True)
        'max'
        >>> [summary_for(keys.parse(k), True) for k in ("xai/random/insertion_auc", "xai/agreement/a_vs_b",
        ...                                             "xai/a/stability", "xai/a/skipped_samples")]
        ['last', 'last', 'last', 'last']
    """
    if parsed is None or parsed.kind not in ("score", "gain") or parsed.method == random:
        return "last"
    return "max" if higher_is_better else "min"


def _words(sample: ProbeSample, method: str | None = None) -> tuple[list[str], np.ndarray]:
    """The sample's words (word pieces merged as the heatmaps merge them) and ``method``'s score per word."""
    tokens = sample.tokens or []
    values = (np.asarray(sample.maps[method], dtype=float).reshape(-1) if method is not None
              else np.zeros(len(tokens)))
    return merge_wordpieces(tokens, values)


def top_tokens(sample: ProbeSample, method: str, k: int = 5) -> str:
    """The ``k`` most relevant words of a text sample, most relevant first.

    Word pieces are merged into words and their scores summed first, as on the token heatmaps, so the table names
    the words the heatmaps colour (``jetblue``, not ``jet, ##bl, ##ue``).

    Example:
        >>> import numpy as np
        >>> sample = ProbeSample(0, None, None, None, "pos", tokens=["jet", "##bl", "##ue", "is", "late"],
        ...                      maps={"m": np.array([0.2, 0.2, 0.2, 0.0, 0.5])})
        >>> top_tokens(sample, "m", k=2)
        'jetblue, late'
    """
    if sample.tokens is None or method not in sample.maps:
        return ""
    words, scores = _words(sample, method)
    order = np.argsort(-scores, kind="stable")[:k]
    return ", ".join(words[i] for i in order)


def _display(image: np.ndarray) -> np.ndarray:
    """A model-input image ``[C, H, W]`` (normalised, any dtype) as a viewable ``[H, W, C]`` uint8 picture."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    scaled = (array - low) / (high - low) if high > low else np.full_like(array, 0.5)
    return (np.nan_to_num(scaled) * 255).round().astype(np.uint8)


class WandbSink(Sink):
    """Writes to a Lightning ``WandbLogger`` of either package (works offline: ``WANDB_MODE=offline``)."""

    logger_class = "WandbLogger"

    def log_epoch(self, report: EpochReport) -> None:
        """Images, HTML heatmaps and the probe table in one ``log`` call at the trainer's global step."""
        import wandb

        keys = report.keys
        run = self.logger.experiment
        for key in self.new_keys(report.higher_is_better):
            run.define_metric(key, summary=summary_for(keys.parse(key), report.higher_is_better[key]))
        captions = {sample.index: sample.caption() for sample in report.samples}
        payload: dict[str, Any] = {}
        for heatmap in report.heatmaps:
            tag = keys.heatmap(heatmap.method, heatmap.sample, heatmap.view)
            payload[tag] = wandb.Image(heatmap.rgb, caption=captions.get(heatmap.sample, tag))
            if heatmap.html is not None and heatmap.method is not None and heatmap.view == "map":
                payload[keys.tokens(heatmap.method, heatmap.sample)] = wandb.Html(heatmap.html, data_is_not_path=True)
        payload[keys.probe_table()] = self._probe_table(report)
        self.logger.log_metrics(payload, step=report.step)

    @staticmethod
    def _probe_table(report: EpochReport) -> Any:
        """The probe table: per sample its words (or image), label and prediction, then per method.

        Each method gets its most relevant words (texts) and its heatmap inline: a coloured-HTML cell for texts,
        the overlay image for images.
        """
        import wandb

        methods = report.methods()
        texts = any(sample.tokens is not None for sample in report.samples)
        columns = ["sample", "input", "label", "prediction", "probability", "explained"]
        for method in methods:
            columns += [f"{method} top words", f"{method} heatmap"] if texts else [f"{method} heatmap"]
        rows = []
        for sample in report.samples:
            if sample.tokens is not None:
                shown: Any = " ".join(_words(sample)[0])
            else:
                shown = wandb.Image(_display(sample.image)) if sample.image is not None else ""
            row = [sample.index, shown, sample.label, sample.prediction, sample.probability, sample.explained]
            for method in methods:
                heatmap = report.heatmap(method, sample.index)
                if texts:
                    row.append(top_tokens(sample, method))
                if heatmap is None:  # this method lost the sample (error, or it failed to render)
                    row.append(None)
                elif heatmap.html is not None:
                    row.append(wandb.Html(heatmap.html, data_is_not_path=True))
                else:
                    row.append(wandb.Image(heatmap.rgb))
            rows.append(row)
        return wandb.Table(columns=columns, data=rows, allow_mixed_types=True)
