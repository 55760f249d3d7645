"""Lightning callbacks."""

from lightning_xai.callbacks.concept_monitor import ConceptMonitor
from lightning_xai.callbacks.explanation_monitor import ExplanationMonitor

__all__ = ["ConceptMonitor", "ExplanationMonitor"]
