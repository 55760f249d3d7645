"""Tokenizer conventions: recognising sub-word pieces and merging them into words, with their scores.

Nothing here draws: the renderers (:mod:`~lightning_xai.viz.text`, :mod:`~lightning_xai.viz.html`) call
:func:`merge_wordpieces` before laying words out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "BYTE_BPE_MARK",
    "SENTENCEPIECE_MARK",
    "WORDPIECE_MARK",
    "Aggregation",
    "check_scores",
    "merge_wordpieces",
]

#: How the scores of the pieces of one word combine.
Aggregation = Literal["sum", "mean", "max"]

WORDPIECE_MARK = "##"  # BERT's WordPiece: a "##" piece continues the previous word
BYTE_BPE_MARK = "\u0120"  # "Ġ": GPT-2 / RoBERTa byte-level BPE encodes a leading space as this
SENTENCEPIECE_MARK = "\u2581"  # "▁": SentencePiece's word-start marker


def check_scores(tokens: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """``scores`` as a float64 array, checked to be 1-D with one entry per token.

    Raises:
        ValueError: If the shape does not match ``tokens``.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] != len(tokens):
        raise ValueError(f"scores must be 1-D with one entry per token, got shape {values.shape} for {len(tokens)}")
    return values


def merge_wordpieces(
    tokens: Sequence[str],
    scores: np.ndarray,
    *,
    aggregation: Aggregation = "sum",
) -> tuple[list[str], np.ndarray]:
    """Merge sub-word pieces into whole words and aggregate their scores.

    The tokenizer convention is detected from the pieces themselves, in this order:

    * WordPiece (BERT) if any token starts with ``##``: a ``##`` piece continues the previous word
      (``##`` is stripped).
    * Byte-level BPE (GPT-2, RoBERTa) elif any token starts with ``Ġ``: a ``Ġ`` piece starts a new word
      (``Ġ`` is stripped), any other piece continues the previous word. The first token always starts a word.
    * SentencePiece (T5, ALBERT, XLM-R) elif any token starts with ``▁``: same rule as byte-level BPE.
    * Otherwise every token is its own word (no merging).

    Scores of the pieces of one word are combined with ``aggregation``: ``"sum"`` (default, because
    attribution relevance is additive: a word's relevance is the total of its pieces'), ``"mean"`` (average
    per piece, insensitive to how many pieces a word was split into) or ``"max"`` (strongest piece).

    Args:
        tokens: Sub-word tokens of one text, special and padding tokens already removed.
        scores: One score per token, shape ``[len(tokens)]``.
        aggregation: How to combine the scores of the pieces of one word: ``"sum"``, ``"mean"`` or ``"max"``.

    Returns:
        The words and a float64 array with one aggregated score per word.

    Raises:
        ValueError: If ``scores`` is not 1-D with one entry per token, or ``aggregation`` is unknown.

    Example:
        >>> import numpy as np
        >>> words, word_scores = merge_wordpieces(["the", "play", "##ing"], np.array([0.1, 0.5, 0.25]))
        >>> words
        ['the', 'playing']
        >>> word_scores.tolist()
        [0.1, 0.75]
        >>> merge_wordpieces(["Ġthe", "Ġplay", "ing"], np.array([1.0, 2.0, 4.0]), aggregation="max")[0]
        ['the', 'playing']
    """
    values = check_scores(tokens, scores)
    reducers: dict[str, Callable[[np.ndarray], float]] = {"sum": np.sum, "mean": np.mean, "max": np.max}
    if aggregation not in reducers:
        raise ValueError(f"aggregation must be one of {sorted(reducers)}, got {aggregation!r}")
    reduce = reducers[aggregation]

    toks = [str(t) for t in tokens]
    if any(t.startswith(WORDPIECE_MARK) for t in toks):
        starts = [not t.startswith(WORDPIECE_MARK) for t in toks]
        pieces = [t[len(WORDPIECE_MARK) :] if t.startswith(WORDPIECE_MARK) else t for t in toks]
    else:
        mark = next((m for m in (BYTE_BPE_MARK, SENTENCEPIECE_MARK) if any(t.startswith(m) for t in toks)), None)
        if mark is None:
            return toks, values.copy()
        starts = [t.startswith(mark) for t in toks]
        pieces = [t[len(mark) :] if t.startswith(mark) else t for t in toks]
    if starts:
        starts[0] = True  # a leading continuation piece (truncated text) still has to start a word

    words: list[str] = []
    groups: list[list[int]] = []
    for i, (piece, is_start) in enumerate(zip(pieces, starts, strict=True)):
        if is_start:
            words.append(piece)
            groups.append([i])
        else:
            words[-1] += piece
            groups[-1].append(i)
    word_scores = np.array([float(reduce(values[g])) for g in groups], dtype=np.float64)
    return words, word_scores
