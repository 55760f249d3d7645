"""TensorBoard: heatmaps as images (the text plugin sanitises HTML, so token heatmaps are rendered PNGs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_xai.sinks.base import Sink, logger_class_names


class TensorBoardSink(Sink):
    """Writes images with ``SummaryWriter.add_image`` to a Lightning ``TensorBoardLogger``."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        """Lightning's ``TensorBoardLogger`` (either package)."""
        return "TensorBoardLogger" in logger_class_names(logger)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        """One ``add_image`` per tag, HWC."""
        writer = self.logger.experiment
        for tag, image in images.items():
            writer.add_image(tag, image, global_step=step, dataformats="HWC")
        writer.flush()
