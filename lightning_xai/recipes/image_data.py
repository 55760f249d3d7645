"""Moved: the image data modules now live in :mod:`lightning_xai.recipes.data`.

:class:`DigitsDataModule`, :class:`FacesDataModule`, :class:`ImageFolderDataModule`, :class:`HFImageDataModule`
and :data:`IMAGE_EXTENSIONS` are in :mod:`lightning_xai.recipes.data.image_sources`; :func:`preprocess_images`,
:class:`RandomShift` and :func:`pil_to_tensor` in :mod:`lightning_xai.recipes.data.images`;
:func:`stratified_split` in :mod:`lightning_xai.recipes.data.splits`. This module re-exports them so that old
imports keep working.
"""

from lightning_xai.recipes.data.image_sources import (
    IMAGE_EXTENSIONS,
    DigitsDataModule,
    FacesDataModule,
    HFImageDataModule,
    ImageFolderDataModule,
)
from lightning_xai.recipes.data.images import RandomShift, pil_to_tensor, preprocess_images
from lightning_xai.recipes.data.splits import stratified_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "DigitsDataModule",
    "FacesDataModule",
    "HFImageDataModule",
    "ImageFolderDataModule",
    "RandomShift",
    "pil_to_tensor",
    "preprocess_images",
    "stratified_split",
]
