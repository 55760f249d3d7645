"""Every logged key and every file path of a monitored run, formatted and parsed in ONE place.

The monitor, the sinks, the CLI and the static report import these helpers instead of formatting strings and
parsing them back. Keys (with the default prefix ``"xai/"``):

====================================  ========================================================================
``xai/<method>/<metric>``             a metric of a method's maps (``xai/grad_sam/deletion_auc``)
``xai/<method>/<metric>_gain_vs_random``  the metric's gain over the ``Random`` baseline (> 0: better than chance)
``xai/<method>/stability``            Spearman of the method's maps with the previous validation's
``xai/agreement/<a>_vs_<b>``          Spearman between two methods' maps of the same samples
``xai/<method>/skipped_samples``      probe samples a method lost to errors at this validation
``xai/<method>/degenerate_samples``   probe samples whose map was all zero or one-hot (not scored)
``xai/<method>/completion_tokens_skipped``    causal LMs: heatmap samples whose per-token maps were lost to errors
``xai/<method>/completion_tokens_truncated``  causal LMs: heatmap samples whose completion was longer than the cap
``xai/<method>/heatmap/sample_NN``    a rendered heatmap (``xai/compare/heatmap/sample_NN``: every method)
``xai/<method>/completion_tokens/sample_NN``  causal LMs: one row per completion token over the prompt tokens
``xai/<method>/tokens/sample_NN``     a token heatmap as HTML (W&B)
``xai/<method>/relevance``            histogram of every content-token relevance of the probe set
``xai/probe_samples``                 the table of probe samples (W&B)
====================================  ========================================================================

On a custom-scalars dashboard (:meth:`LogKeys.dashboard`) the scalars fall into four categories: ``explanation
quality`` (a chart per metric, a line per method), ``gain vs random`` (a chart per metric), ``agreement and
stability`` and ``health`` (skipped and degenerate counts). Dashboards that match tags by regular expression get
:func:`exact_tag_regex`, so ``deletion_auc`` never also matches ``deletion_auc_gain_vs_random``.

Files below the files sink's directory: ``explanations.jsonl``, ``epoch_NNN/<method>/sample_NN.(png|html)``,
``evolution/<method>/sample_NN.png``; a causal LM's per-completion-token matrices go to
``epoch_NNN/<method>/completion_tokens/sample_NN.png`` and ``evolution/<method>/completion_tokens/sample_NN.png``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Pseudo-method of the comparison grid (every method side by side for one sample).
COMPARE = "compare"
#: Pseudo-method of the agreement keys.
AGREEMENT = "agreement"
GAIN_SUFFIX = "_gain_vs_random"
STABILITY = "stability"
SKIPPED = "skipped_samples"
DEGENERATE = "degenerate_samples"
#: A causal LM's per-completion-token view: its media keys, files folder and health counts.
COMPLETION_TOKENS = "completion_tokens"
TOKENS_SKIPPED = "completion_tokens_skipped"
TOKENS_TRUNCATED = "completion_tokens_truncated"
#: What a rendered image shows: one map per sample (``"map"``) or a causal LM's per-completion-token matrix.
View = Literal["map", "completion_tokens"]
#: File name of the per-epoch record of the files sink.
JSONL_NAME = "explanations.jsonl"
#: Categories of a custom-scalars dashboard (see :meth:`LogKeys.dashboard`), in the order they are shown.
QUALITY_CATEGORY = "explanation quality"
GAIN_CATEGORY = "gain vs random"
RELATION_CATEGORY = "agreement and stability"
HEALTH_CATEGORY = "health"
DASHBOARD_CATEGORIES = (QUALITY_CATEGORY, GAIN_CATEGORY, RELATION_CATEGORY, HEALTH_CATEGORY)

KeyKind = Literal["score", "gain", "stability", "agreement", "skipped", "degenerate", "tokens_skipped",
                  "tokens_truncated"]
#: The per-method health counts: key suffix -> (its kind, what it counts). Every reader of the keys (dashboard,
#: report, CLI summary) takes them from here, so a new count cannot be charted or tabled as a score by mistake.
HEALTH_COUNTS: dict[str, tuple[KeyKind, str]] = {
    DEGENERATE: ("degenerate", "all-zero or one-hot maps, not scored"),
    SKIPPED: ("skipped", "lost to errors"),
    TOKENS_SKIPPED: ("tokens_skipped", "heatmap samples whose per-completion-token maps were lost to errors"),
    TOKENS_TRUNCATED: ("tokens_truncated", "heatmap samples whose completion was cut to the cap"),
}
#: The kinds of :data:`HEALTH_COUNTS`.
COUNT_KINDS: frozenset[str] = frozenset(kind for kind, _ in HEALTH_COUNTS.values())


@dataclass(frozen=True)
class ParsedKey:
    """What a scalar key means.

    Attributes:
        kind: ``"score"``, ``"gain"``, ``"stability"``, ``"agreement"``, ``"skipped"``, ``"degenerate"``,
            ``"tokens_skipped"`` or ``"tokens_truncated"`` (a causal LM's per-completion-token view).
        method: the method (for ``"agreement"``: the first of the pair).
        metric: the metric (``"score"``/``"gain"``), ``"stability"``, ``"skipped_samples"``,
            ``"degenerate_samples"``, or for
            ``"agreement"`` the second method.
    """

    kind: KeyKind
    method: str
    metric: str


@dataclass(frozen=True)
class LogKeys:
    """Key formatting and parsing under one prefix.

    Example:
        >>> keys = LogKeys("xai/")
        >>> keys.score("grad_sam", "deletion_auc"), keys.heatmap("grad_sam", 3)
        ('xai/grad_sam/deletion_auc', 'xai/grad_sam/heatmap/sample_03')
        >>> keys.parse(keys.gain("grad_sam", "deletion_auc"))
        ParsedKey(kind='gain', method='grad_sam', metric='deletion_auc')
        >>> keys.parse(keys.agreement("grad_sam", "random"))
        ParsedKey(kind='agreement', method='grad_sam', metric='random')
    """

    prefix: str = "xai/"

    # ------------------------------------------------------------------------------------------- scalars

    def score(self, method: str, metric: str) -> str:
        """``<prefix><method>/<metric>``."""
        return f"{self.prefix}{method}/{metric}"

    def gain(self, method: str, metric: str) -> str:
        """``<prefix><method>/<metric>_gain_vs_random``."""
        return self.score(method, metric + GAIN_SUFFIX)

    def stability(self, method: str) -> str:
        """``<prefix><method>/stability``."""
        return self.score(method, STABILITY)

    def agreement(self, first: str, second: str) -> str:
        """``<prefix>agreement/<first>_vs_<second>``."""
        return f"{self.prefix}{AGREEMENT}/{first}_vs_{second}"

    def skipped(self, method: str) -> str:
        """``<prefix><method>/skipped_samples``."""
        return self.score(method, SKIPPED)

    def degenerate(self, method: str) -> str:
        """``<prefix><method>/degenerate_samples``."""
        return self.score(method, DEGENERATE)

    def tokens_skipped(self, method: str) -> str:
        """``<prefix><method>/completion_tokens_skipped``: heatmap samples whose per-token maps were lost."""
        return self.score(method, TOKENS_SKIPPED)

    def tokens_truncated(self, method: str) -> str:
        """``<prefix><method>/completion_tokens_truncated``: heatmap samples whose completion was cut to the cap."""
        return self.score(method, TOKENS_TRUNCATED)

    def parse(self, key: str) -> ParsedKey | None:
        """The meaning of a scalar key, or None for a key that is not one of this prefix's scalars.

        Agreement pairs are split at the first ``_vs_`` (method names are snake_case registry names).
        """
        if not key.startswith(self.prefix):
            return None
        method, slash, rest = key[len(self.prefix) :].partition("/")
        if not slash or not method or not rest or "/" in rest:
            return None
        if method == AGREEMENT:
            first, vs, second = rest.partition("_vs_")
            return ParsedKey("agreement", first, second) if vs and first and second else None
        if rest == STABILITY:
            return ParsedKey("stability", method, rest)
        if rest in HEALTH_COUNTS:
            return ParsedKey(HEALTH_COUNTS[rest][0], method, rest)
        if rest.endswith(GAIN_SUFFIX):
            return ParsedKey("gain", method, rest[: -len(GAIN_SUFFIX)])
        return ParsedKey("score", method, rest)

    def chart(self, key: str) -> tuple[str, str] | None:
        """``(chart, line)`` of a scalar on a dashboard: one chart per metric with a line per method.

        Agreement pairs get a chart each (line ``"agreement"``); None for keys that are not this prefix's.

        Example:
            >>> keys = LogKeys()
            >>> keys.chart("xai/grad_sam/deletion_auc"), keys.chart("xai/agreement/grad_sam_vs_random")
            (('deletion_auc', 'grad_sam'), ('grad_sam_vs_random', 'agreement'))
        """
        parsed = self.parse(key)
        if parsed is None:
            return None
        if parsed.kind == "agreement":
            return f"{parsed.method}_vs_{parsed.metric}", AGREEMENT
        if parsed.kind == "gain":
            return parsed.metric + GAIN_SUFFIX, parsed.method
        return parsed.metric, parsed.method

    def dashboard(self, key: str) -> tuple[str, str] | None:
        """``(category, chart)`` of a scalar on a custom-scalars dashboard; None for keys that are not this prefix's.

        One chart per metric holds every method's score of it, and nothing else: gains over ``Random`` get their
        own chart per metric (category ``gain vs random``); stability and every agreement pair share the
        ``agreement and stability`` category (one ``stability`` chart, one ``agreement`` chart); skipped and
        degenerate counts (and the per-completion-token view's skipped and truncated counts) go to ``health``.

        Example:
            >>> keys = LogKeys()
            >>> keys.dashboard("xai/grad_sam/deletion_auc"), keys.dashboard("xai/grad_sam/deletion_auc_gain_vs_random")
            (('explanation quality', 'deletion_auc'), ('gain vs random', 'deletion_auc_gain_vs_random'))
            >>> keys.dashboard("xai/agreement/grad_sam_vs_random"), keys.dashboard("xai/random/skipped_samples")
            (('agreement and stability', 'agreement'), ('health', 'skipped_samples'))
        """
        parsed = self.parse(key)
        if parsed is None:
            return None
        if parsed.kind == "score":
            return QUALITY_CATEGORY, parsed.metric
        if parsed.kind == "gain":
            return GAIN_CATEGORY, parsed.metric + GAIN_SUFFIX
        if parsed.kind == "agreement":
            return RELATION_CATEGORY, AGREEMENT
        if parsed.kind == "stability":
            return RELATION_CATEGORY, STABILITY
        return HEALTH_CATEGORY, parsed.metric

    # ------------------------------------------------------------------------------------------- media

    def heatmap(self, method: str | None, sample: int, view: View = "map") -> str:
        """``<prefix><method>/heatmap/sample_NN`` (``method=None``: the comparison grid of every method).

        ``view="completion_tokens"``: ``<prefix><method>/completion_tokens/sample_NN``, a causal LM's matrix of one
        map per completion token.

        Example:
            >>> LogKeys().heatmap("attn_lrp", 1, view="completion_tokens")
            'xai/attn_lrp/completion_tokens/sample_01'
        """
        folder = "heatmap" if view == "map" else COMPLETION_TOKENS
        return f"{self.prefix}{method or COMPARE}/{folder}/sample_{sample:02d}"

    def tokens(self, method: str, sample: int) -> str:
        """``<prefix><method>/tokens/sample_NN``: a token heatmap as HTML."""
        return f"{self.prefix}{method}/tokens/sample_{sample:02d}"

    def relevance(self, method: str) -> str:
        """``<prefix><method>/relevance``: histogram of the probe set's relevance."""
        return f"{self.prefix}{method}/relevance"

    def probe_table(self) -> str:
        """``<prefix>probe_samples``."""
        return f"{self.prefix}probe_samples"


def exact_tag_regex(tag: str) -> str:
    """A regular expression matching ``tag`` and nothing else (TensorBoard's Multiline charts take regexes).

    Unanchored, ``xai/grad_sam/deletion_auc`` would also match ``xai/grad_sam/deletion_auc_gain_vs_random``.

    Example:
        >>> exact_tag_regex("xai/grad_sam/deletion_auc")
        '^xai/grad_sam/deletion_auc$'
        >>> import re
        >>> bool(re.match(exact_tag_regex("xai/m.v2/x"), "xai/mXv2/x"))
        False
    """
    return f"^{re.escape(tag)}$"


# ------------------------------------------------------------------------------------------------ files


def safe_name(name: str) -> str:
    """A file-system-safe version of a method name.

    Example:
        >>> safe_name("grad sam/v2")
        'grad_sam_v2'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def sample_file(sample: int, ext: str) -> str:
    """``sample_NN.<ext>``."""
    return f"sample_{sample:02d}.{ext}"


def _method_folder(method: str | None, view: View) -> str:
    folder = safe_name(method or COMPARE)
    return folder if view == "map" else f"{folder}/{COMPLETION_TOKENS}"


def heatmap_path(
    root: str | Path, epoch: int, method: str | None, sample: int, ext: str = "png", view: View = "map"
) -> Path:
    """``<root>/epoch_NNN/<method>/sample_NN.<ext>`` (``method=None``: the comparison grid).

    ``view="completion_tokens"``: ``<root>/epoch_NNN/<method>/completion_tokens/sample_NN.<ext>``.

    Example:
        >>> heatmap_path("xai", 3, "grad_sam", 1).as_posix()
        'xai/epoch_003/grad_sam/sample_01.png'
        >>> heatmap_path("xai", 3, "attn_lrp", 1, view="completion_tokens").as_posix()
        'xai/epoch_003/attn_lrp/completion_tokens/sample_01.png'
    """
    return Path(root) / f"epoch_{epoch:03d}" / _method_folder(method, view) / sample_file(sample, ext)


def evolution_path(root: str | Path, method: str | None, sample: int, view: View = "map") -> Path:
    """``<root>/evolution/<method>/sample_NN.png``: one sample's heatmaps across epochs (or its matrices).

    The files sink draws there at most ``EVOLUTION_MAX_FRAMES`` epochs, spread evenly from the first to the latest.
    """
    return Path(root) / "evolution" / _method_folder(method, view) / sample_file(sample, "png")


def heatmap_epoch(root: str | Path, path: str | Path) -> int:
    """The epoch of a heatmap file under ``root``: its first folder, ``epoch_NNN`` (a method may be named epoch_...).

    Example:
        >>> heatmap_epoch("xai", heatmap_path("xai", 1200, "epoch_probe", 0))
        1200
    """
    return int(Path(path).relative_to(root).parts[0].rpartition("_")[2])


def epoch_heatmaps(root: str | Path, method: str | None, sample: int, view: View = "map") -> list[Path]:
    """Every epoch's PNG of one sample and method (and view) under ``root``, oldest first (by epoch number).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for epoch in (999, 1000, 101):
        ...     heatmap_path(root, epoch, "grad_sam", 0).parent.mkdir(parents=True)
        ...     heatmap_path(root, epoch, "grad_sam", 0).touch()
        >>> [heatmap_epoch(root, path) for path in epoch_heatmaps(root, "grad_sam", 0)]  # epoch_1000 < epoch_101
        [101, 999, 1000]
    """
    pattern = f"epoch_*/{_method_folder(method, view)}/{sample_file(sample, 'png')}"
    return sorted(Path(root).glob(pattern), key=lambda path: heatmap_epoch(root, path))
