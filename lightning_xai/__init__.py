"""lightning_xai: explanation quality as a monitored signal while fine-tuning transformers.

Add :class:`ExplanationMonitor` to a Lightning ``Trainer``; during validation it explains a fixed probe set with
the chosen explainers, scores the maps with faithfulness metrics and logs scalars and heatmaps.
"""

# The historical module path ``lightning_xai.explain`` is loaded FIRST, so that the function bound below wins
# the package attribute (a later first import of that module would otherwise replace the function by the module).
from lightning_xai import explain as _explain_module  # noqa: F401
from lightning_xai.adapters import AdaptedBatch
from lightning_xai.callbacks import ConceptMonitor, ExplanationMonitor
from lightning_xai.explanation_pass import explain
from lightning_xai.types import Explanation

__version__ = "0.1.0"

__all__ = ["AdaptedBatch", "ConceptMonitor", "Explanation", "ExplanationMonitor", "__version__", "explain"]
