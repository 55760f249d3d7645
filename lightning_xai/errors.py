"""Exceptions with messages that say what to do."""


class LightningXAIError(RuntimeError):
    """Base class of every error raised by lightning_xai."""


class UnsupportedModelError(LightningXAIError, TypeError):
    """The model cannot be explained: no capture family supports it."""


class BatchFormatError(LightningXAIError, TypeError):
    """A validation batch has a structure the batch adapter does not understand."""


class ModelOutputError(LightningXAIError, TypeError):
    """A model output has no logits where the explainers and metrics look for them."""


class NonFiniteExplanationError(LightningXAIError, ValueError):
    """An explainer produced NaN or infinite relevance."""


class UnsupportedMethodError(LightningXAIError, TypeError):
    """A method cannot be defined for this model family (or modality): refused at setup, never a silent map."""


class UnstreamableAttentionError(LightningXAIError):
    """An attention call uses something (soft-capping, sinks, a position bias) a pass on sdpa does not keep."""
