"""The probe set: the fixed samples explained at every validation, so that maps are comparable over time."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.adapters import AdaptedBatch
from lightning_xai.modalities.base import Modality, batch_size
from lightning_xai.types import ModelInputs


@dataclass(frozen=True)
class ProbeData:
    """The collated probe set (CPU).

    Attributes:
        inputs: model inputs of every probe sample, padded to one width (text).
        labels: ``[P]`` labels when every collected batch had them, else None.
        rationale: ``[P, N]`` bool ground-truth rationale masks padded with False to the token width, when every
            collected batch had them, else None.
    """

    inputs: ModelInputs
    labels: Tensor | None
    rationale: Tensor | None

    def __len__(self) -> int:
        return batch_size(self.inputs) if self.inputs else 0


class ProbeSet:
    """The first ``num_samples`` samples seen, copied to the CPU once and kept (also in checkpoints).

    Samples are added batch by batch (:meth:`add`) until the set holds ``num_samples`` or is closed
    (:meth:`close`, after the first validation pass: a validation set smaller than ``num_samples`` is then never
    appended again). Only the inputs the model's ``forward`` accepts are kept.

    Args:
        num_samples: most samples held.
        input_keys: the input names the model's ``forward`` accepts (None: keep every input).

    Example:
        >>> import torch
        >>> from lightning_xai.adapters import AdaptedBatch
        >>> from lightning_xai.modalities import VisionModality
        >>> probe = ProbeSet(num_samples=3)
        >>> probe.add(AdaptedBatch({"pixel_values": torch.zeros(2, 3, 4, 4)}, torch.tensor([0, 1])))
        2
        >>> probe.add(AdaptedBatch({"pixel_values": torch.ones(2, 3, 4, 4)}, torch.tensor([1, 0])))
        1
        >>> data = probe.collate(VisionModality(patch_size=2))
        >>> len(data), data.labels.tolist(), probe.full
        (3, [0, 1, 1], True)
    """

    def __init__(self, num_samples: int, input_keys: set[str] | None = None) -> None:
        self.num_samples = num_samples
        self.input_keys = input_keys
        self.inputs: list[ModelInputs] = []
        self.labels: list[Tensor | None] = []
        self.rationales: list[Tensor | None] = []
        self.count = 0
        self.closed = False

    @property
    def full(self) -> bool:
        """True once no more samples are taken (``num_samples`` held, or closed)."""
        return self.closed or self.count >= self.num_samples

    def add(self, batch: AdaptedBatch) -> int:
        """Copy up to the missing number of rows of ``batch`` to the CPU; returns how many were taken."""
        if self.full:
            return 0
        take = min(self.num_samples - self.count, batch_size(batch.inputs))
        keep = self.input_keys
        self.inputs.append({k: _cpu(v[:take]) for k, v in batch.inputs.items() if not keep or k in keep})
        self.labels.append(None if batch.labels is None else _cpu(batch.labels[:take]))
        self.rationales.append(None if batch.rationale is None else _cpu(batch.rationale[:take]))
        self.count += take
        return take

    def close(self) -> None:
        """Take no more samples."""
        self.closed = True

    def collate(self, modality: Modality) -> ProbeData:
        """All parts as one batch (text padded to the widest part)."""
        if not self.inputs:
            return ProbeData({}, None, None)
        inputs = modality.collate(self.inputs)
        labels = None if any(part is None for part in self.labels) else torch.cat(self.labels)  # type: ignore[arg-type]
        rationale = None
        if not any(part is None for part in self.rationales):
            width = modality.num_tokens(inputs)
            rationale = torch.cat(
                [torch.nn.functional.pad(p.bool(), (0, width - p.shape[1]), value=False) for p in self.rationales]  # type: ignore[union-attr]
            )
        return ProbeData(inputs, labels, rationale)

    def state_dict(self) -> dict[str, Any]:
        """The collected samples (CPU tensors)."""
        return {
            "probe_inputs": [dict(part) for part in self.inputs],
            "probe_labels": list(self.labels),
            "probe_rationales": list(self.rationales),
            "probe_count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore the samples of :meth:`state_dict` and close the set; False (nothing restored) if it holds none."""
        parts = state.get("probe_inputs") or []
        if not parts:
            return False
        self.inputs = [dict(part) for part in parts]
        self.labels = list(state.get("probe_labels", [None] * len(parts)))
        self.rationales = list(state.get("probe_rationales", [None] * len(parts)))
        self.count = int(state.get("probe_count", sum(batch_size(p) for p in parts)))
        self.closed = True
        return True


def forward_parameters(model: nn.Module) -> set[str] | None:
    """The keyword inputs ``model.forward`` accepts: the probe keeps only those (None: it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _cpu(tensor: Tensor) -> Tensor:
    return tensor.detach().to("cpu", copy=True)
