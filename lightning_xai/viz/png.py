"""Write and encode RGB arrays as PNG (matplotlib's bundled writer: no extra dependency)."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
from matplotlib.image import imsave


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an ``[H, W, 3]`` uint8 array.

    Example:
        >>> import numpy as np
        >>> png_bytes(np.zeros((2, 2, 3), dtype=np.uint8))[1:4]
        b'PNG'
    """
    buffer = io.BytesIO()
    imsave(buffer, np.ascontiguousarray(image), format="png")
    return buffer.getvalue()


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` uint8 array to ``path``."""
    with open(path, "wb") as handle:
        handle.write(png_bytes(image))


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
