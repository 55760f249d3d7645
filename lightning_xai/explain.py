"""The historical import path of the explanation pass (now :mod:`lightning_xai.explanation_pass`).

``lightning_xai.explain`` is the function :func:`~lightning_xai.explanation_pass.explain` (the package re-exports
it); ``from lightning_xai.explain import explain, Target, ...`` keeps working through this module.
"""

from lightning_xai.explanation_pass import (
    Target,
    explain,
    gradients_enabled,
    recorded_input_embeddings,
    resolve_target,
)
from lightning_xai.types import logits_of

__all__ = ["Target", "explain", "gradients_enabled", "logits_of", "recorded_input_embeddings", "resolve_target"]
