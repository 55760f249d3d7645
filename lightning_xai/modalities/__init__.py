"""Input modalities: text (token ids) and vision (patch grids)."""

from lightning_xai.modalities.base import Modality, batch_size, select
from lightning_xai.modalities.text import TextModality
from lightning_xai.modalities.vision import VisionModality

__all__ = ["Modality", "TextModality", "VisionModality", "batch_size", "select"]
