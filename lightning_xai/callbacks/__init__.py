"""Lightning callbacks."""

from lightning_xai.callbacks.explanation_monitor import ExplanationMonitor

__all__ = ["ExplanationMonitor"]
