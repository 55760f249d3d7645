"""Concept-level explanations: attention-weighted token-level TCAV (Eggen et al. 2025, method 2).

* :mod:`~lightning_xai.concepts.cav`: concept activation vectors from every real token's block output;
* :mod:`~lightning_xai.concepts.ttcav`: token directional derivatives, attention weighting, scores;
* :mod:`~lightning_xai.concepts.stats`: Student's t-distribution and the t-tests (no scipy).

:class:`~lightning_xai.callbacks.ConceptMonitor` tracks the scores epoch by epoch during fine-tuning.
"""

from lightning_xai.concepts.cav import TokenActivations, concept_cavs, fit_cavs, random_cavs
from lightning_xai.concepts.stats import TTestResult, one_sample_t_test, student_t_cdf, two_sample_t_test
from lightning_xai.concepts.ttcav import (
    ConceptVectors,
    TokenSensitivity,
    TTCAVScore,
    attention_weighted,
    fit_concept_vectors,
    layer_activations,
    positive_fraction,
    token_sensitivities,
    ttcav_scores,
)

__all__ = [
    "ConceptVectors",
    "TTCAVScore",
    "TTestResult",
    "TokenActivations",
    "TokenSensitivity",
    "attention_weighted",
    "concept_cavs",
    "fit_cavs",
    "fit_concept_vectors",
    "layer_activations",
    "one_sample_t_test",
    "positive_fraction",
    "random_cavs",
    "student_t_cdf",
    "token_sensitivities",
    "ttcav_scores",
    "two_sample_t_test",
]
