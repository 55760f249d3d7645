"""The recipes' data modules and their building blocks.

* :mod:`~lightning_xai.recipes.data.splits`: the train/val/test loader trio (:class:`SplitLoaders`), reproducible
  stratified and class-balanced splits, Hugging Face ``datasets`` splits by name.
* :mod:`~lightning_xai.recipes.data.text`: tokenized examples, the padding collator, the length-grouped sampler
  and :class:`TextClassificationDataModule`, the base of every text data module.
* :mod:`~lightning_xai.recipes.data.text_sources`: text from files (:class:`TextFileDataModule`), from HF
  ``datasets`` (:class:`HFTextDataModule`) and from the bundled tweet corpus (:class:`SentimentDataModule`).
* :mod:`~lightning_xai.recipes.data.images`: image preprocessing, shift augmentation, image datasets and
  :class:`ImageDataModule`, the base of every image data module.
* :mod:`~lightning_xai.recipes.data.image_sources`: bundled digits and faces, image folders and HF ``datasets``
  images.
"""

from lightning_xai.recipes.data.image_sources import (
    IMAGE_EXTENSIONS,
    DigitsDataModule,
    FacesDataModule,
    HFImageDataModule,
    ImageFolderDataModule,
)
from lightning_xai.recipes.data.images import (
    ImageDataModule,
    LazyImages,
    RandomShift,
    TensorImages,
    pil_to_tensor,
    preprocess_images,
)
from lightning_xai.recipes.data.splits import (
    SplitLoaders,
    balanced_split,
    hf_splits,
    load_hf_dataset,
    stratified_split,
)
from lightning_xai.recipes.data.text import (
    BOOL_KEYS,
    ENCODED_KEYS,
    EncodedDataset,
    LengthGroupedSampler,
    PadCollator,
    RawSplits,
    TextClassificationDataModule,
    int_label,
)
from lightning_xai.recipes.data.text_sources import (
    SENTIMENT_LABELS,
    HFTextDataModule,
    SentimentDataModule,
    TextFileDataModule,
    read_records,
    read_sentiment_csv,
)

__all__ = [
    "BOOL_KEYS",
    "ENCODED_KEYS",
    "IMAGE_EXTENSIONS",
    "SENTIMENT_LABELS",
    "DigitsDataModule",
    "EncodedDataset",
    "FacesDataModule",
    "HFImageDataModule",
    "HFTextDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "LazyImages",
    "LengthGroupedSampler",
    "PadCollator",
    "RandomShift",
    "RawSplits",
    "SentimentDataModule",
    "SplitLoaders",
    "TensorImages",
    "TextClassificationDataModule",
    "TextFileDataModule",
    "balanced_split",
    "hf_splits",
    "int_label",
    "load_hf_dataset",
    "pil_to_tensor",
    "preprocess_images",
    "read_records",
    "read_sentiment_csv",
    "stratified_split",
]
