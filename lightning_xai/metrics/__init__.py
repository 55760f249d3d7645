"""Faithfulness and plausibility metrics: torchmetrics ``Metric`` classes with a functional twin in the same file.

Every perturbation metric goes through one engine (:func:`forward_removals`); :func:`evaluate_suite` runs several
metrics on several methods' maps of a batch with every common forward shared.
"""

from lightning_xai.metrics._base import PerturbationMetric, SampleMeanMetric, evaluate_suite
from lightning_xai.metrics._perturbation import (
    EmbeddingForward,
    forward_removals,
    perturbation_curves,
    perturbation_curves_multi,
    trapezoid_auc,
)
from lightning_xai.metrics.agreement import MapAgreement, map_agreement, rank_correlation, topk_overlap
from lightning_xai.metrics.ali import AUAC, AUMSE, AUPC, au_mse, auac, aupc
from lightning_xai.metrics.aopc import (
    AOPCComprehensiveness,
    AOPCSufficiency,
    aopc_comprehensiveness,
    aopc_sufficiency,
)
from lightning_xai.metrics.area_between import AreaBetweenCurves, area_between_curves
from lightning_xai.metrics.deletion import DeletionAUC, deletion_auc
from lightning_xai.metrics.gain import RandomNormalisedGain, random_normalised_gain
from lightning_xai.metrics.insertion import InsertionAUC, insertion_auc
from lightning_xai.metrics.log_odds import LogOdds, log_odds
from lightning_xai.metrics.loo import LeaveOneOutTau, kendall_tau, leave_one_out_tau
from lightning_xai.metrics.plausibility import Plausibility, auprc, plausibility, token_f1, token_iou
from lightning_xai.metrics.road import ROAD, road

__all__ = [
    "AOPCComprehensiveness", "AOPCSufficiency", "AUAC", "AUMSE", "AUPC", "AreaBetweenCurves", "DeletionAUC",
    "EmbeddingForward", "InsertionAUC", "LeaveOneOutTau", "LogOdds", "MapAgreement", "PerturbationMetric",
    "Plausibility", "ROAD", "RandomNormalisedGain", "SampleMeanMetric", "aopc_comprehensiveness", "aopc_sufficiency",
    "area_between_curves", "au_mse", "auac", "aupc", "auprc", "deletion_auc", "evaluate_suite", "forward_removals",
    "insertion_auc", "kendall_tau", "leave_one_out_tau", "log_odds", "map_agreement", "perturbation_curves",
    "perturbation_curves_multi", "plausibility", "random_normalised_gain", "rank_correlation", "road", "token_f1",
    "token_iou", "topk_overlap", "trapezoid_auc",
]
