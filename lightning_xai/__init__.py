"""lightning_xai: explanation quality as a monitored signal while fine-tuning transformers.

Add :class:`ExplanationMonitor` to a Lightning ``Trainer``; during validation it explains a fixed probe set with
the chosen explainers, scores the maps with faithfulness metrics and logs scalars and heatmaps.
"""

from lightning_xai.adapters import AdaptedBatch
from lightning_xai.callbacks import ExplanationMonitor
from lightning_xai.explain import explain
from lightning_xai.types import Explanation

__version__ = "0.1.0"

__all__ = ["AdaptedBatch", "Explanation", "ExplanationMonitor", "__version__", "explain"]
