"""A modality maps model tokens to inputs: which tokens are real/special, and how to remove tokens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_xai.types import ModelInputs

if TYPE_CHECKING:
    from lightning_xai.types import Explanation


class Modality(ABC):
    """Token bookkeeping and perturbation for one input modality."""

    #: ``"text"`` or ``"vision"``.
    name: str

    @abstractmethod
    def token_masks(self, inputs: ModelInputs, num_tokens: int) -> tuple[Tensor, Tensor]:
        """Return ``(valid_mask, special_mask)``, both ``[B, num_tokens]`` bool.

        ``special_mask`` includes padding, so ``valid & ~special`` are the content tokens.
        """

    @abstractmethod
    def remove(self, inputs: ModelInputs, removed: Tensor) -> ModelInputs:
        """Return a perturbed copy of ``inputs`` where tokens with ``removed[b, n]`` True are replaced."""

    @abstractmethod
    def collate(self, parts: Sequence[ModelInputs]) -> ModelInputs:
        """Concatenate several input batches along the batch axis (padding text to a common length)."""

    @abstractmethod
    def num_tokens(self, inputs: ModelInputs) -> int:
        """Tokens per row of the model's attention for ``inputs`` (bounds the memory of an explanation pass)."""

    @abstractmethod
    def sample_view(self, inputs: ModelInputs, row: int, maps: Mapping[str, Explanation]) -> dict[str, Any]:
        """What dashboards show of sample ``row``: ``{"tokens": [...]}`` or ``{"image": [C, H, W]}``, and ``"maps"``.

        ``"maps"`` holds every method's relevance in the same layout (text: one value per content token; vision:
        the patch grid), as numpy arrays.
        """

    def lengths(self, inputs: ModelInputs) -> Tensor | None:
        """Per-row number of positions a forward really needs (text: up to the last real token), or None."""
        return None

    def trim(self, inputs: ModelInputs, length: int) -> ModelInputs:
        """Drop trailing positions beyond ``length`` (no-op for fixed-size inputs)."""
        return inputs

    def removed_lengths(self, inputs: ModelInputs, removed: Tensor) -> Tensor | None:
        """:meth:`lengths` of ``remove(inputs, removed)`` (computed without building it)."""
        return self.lengths(inputs)

    def variant(self, removal: str) -> Modality:
        """A copy of this modality that removes tokens in another way (text: ``TextRemoval``; vision: baseline)."""
        raise ValueError(f"{type(self).__name__} has no removal variant {removal!r}")


def batch_size(inputs: ModelInputs) -> int:
    """Number of rows of a batch of model inputs."""
    return next(iter(inputs.values())).shape[0]


def select(inputs: ModelInputs, index: Tensor | slice) -> ModelInputs:
    """Rows ``index`` of every tensor in ``inputs``."""
    return {key: value[index] for key, value in inputs.items()}
