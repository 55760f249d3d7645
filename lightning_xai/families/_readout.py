"""Small helpers shared by the families' read-outs."""

from __future__ import annotations

import torch
from torch import Tensor


def token_at(hidden: Tensor, rows: Tensor) -> Tensor:
    """``hidden[b, rows[b]]`` for every sample: the prediction token's vector ``[B, D]`` of ``[B, N, D]`` tokens.

    Example:
        >>> import torch
        >>> token_at(torch.arange(12.0).view(2, 3, 2), torch.tensor([0, 2])).tolist()
        [[0.0, 1.0], [10.0, 11.0]]
    """
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), rows.to(hidden.device)]
