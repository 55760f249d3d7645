"""Moved: the sentiment data module now lives in :mod:`lightning_xai.recipes.data`.

:class:`SentimentDataModule`, :func:`read_sentiment_csv` and :data:`SENTIMENT_LABELS` are in
:mod:`lightning_xai.recipes.data.text_sources`; :class:`PadCollator`, :class:`LengthGroupedSampler` and
:class:`EncodedDataset` (formerly ``_Encoded``) in :mod:`lightning_xai.recipes.data.text`; :func:`balanced_split` in
:mod:`lightning_xai.recipes.data.splits`. This module re-exports them so that old imports keep working.
"""

from lightning_xai.recipes.data.splits import balanced_split
from lightning_xai.recipes.data.text import BOOL_KEYS, EncodedDataset, LengthGroupedSampler, PadCollator
from lightning_xai.recipes.data.text_sources import SENTIMENT_LABELS, SentimentDataModule, read_sentiment_csv

_Encoded = EncodedDataset  # the old private name

__all__ = [
    "BOOL_KEYS",
    "SENTIMENT_LABELS",
    "EncodedDataset",
    "LengthGroupedSampler",
    "PadCollator",
    "SentimentDataModule",
    "balanced_split",
    "read_sentiment_csv",
]
