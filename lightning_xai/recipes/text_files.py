"""Moved: the file and Hugging Face text data modules now live in :mod:`lightning_xai.recipes.data`.

:class:`TextFileDataModule`, :class:`HFTextDataModule` and :func:`read_records` are in
:mod:`lightning_xai.recipes.data.text_sources`; their base :class:`TextClassificationDataModule` in
:mod:`lightning_xai.recipes.data.text`. This module re-exports them so that old imports keep working.
"""

from lightning_xai.recipes.data.splits import stratified_split
from lightning_xai.recipes.data.text import TextClassificationDataModule
from lightning_xai.recipes.data.text_sources import HFTextDataModule, TextFileDataModule, read_records

__all__ = ["HFTextDataModule", "TextClassificationDataModule", "TextFileDataModule", "read_records", "stratified_split"]
