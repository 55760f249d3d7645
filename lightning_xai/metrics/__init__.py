"""Faithfulness metrics: torchmetrics ``Metric`` classes with a functional twin in the same file."""

from lightning_xai.metrics._perturbation import perturbation_curves, trapezoid_auc
from lightning_xai.metrics.deletion import DeletionAUC, deletion_auc

__all__ = ["DeletionAUC", "deletion_auc", "perturbation_curves", "trapezoid_auc"]
