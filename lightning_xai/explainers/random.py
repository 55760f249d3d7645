"""Random relevance: the sanity baseline every method must beat (Adebayo et al., NeurIPS 2018 spirit)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lightning_xai.explainers.base import Explainer, ForwardPass


class Random(Explainer):
    """Uniform random relevance in ``[0, 1)`` per token, from a private generator.

    The global RNG is never touched (training stays bit-identical). Draws continue across calls, so each
    epoch gets a fresh random map; ``seed`` makes the whole sequence reproducible.

    Args:
        seed: seed of the private generator.

    Example:
        >>> import torch
        >>> from lightning_xai.explainers.base import ForwardPass
        >>> fp = ForwardPass({}, torch.zeros(2, 3), [], torch.ones(2, 4, dtype=torch.bool),
        ...                  torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
        >>> Random(seed=0).explain(fp).shape
        torch.Size([2, 4])
    """

    name: ClassVar[str] = "random"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def explain(self, forward: ForwardPass) -> Tensor:
        """Random map with the shape of the pass's token masks."""
        values = torch.rand(forward.valid_mask.shape, generator=self._generator)
        return values.to(forward.valid_mask.device)
