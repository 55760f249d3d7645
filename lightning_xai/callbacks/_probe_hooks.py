"""What the monitoring callbacks share: probe collection, the epoch schedule, the tokenizer lookup, disabling (private).

:class:`~lightning_xai.callbacks.ExplanationMonitor` and :class:`~lightning_xai.callbacks.ConceptMonitor` both keep a
:class:`~lightning_xai.probe.ProbeSet` filled from the first validation dataloader, run every ``every_n_epochs``-th
epoch during ``fit`` (every validation otherwise) and, on a bad batch or model, either raise (``on_error="raise"``)
or switch themselves off with one warning.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.trainer.states import TrainerFn

from lightning_xai.adapters import AdaptedBatch, as_adapted, default_batch_adapter
from lightning_xai.errors import LightningXAIError


class ProbeHooks:
    """Mixin of the monitoring callbacks (listed before Lightning's ``Callback`` among the bases).

    Expects ``probe``, ``batch_adapter``, ``every_n_epochs``, ``on_error``, ``policy``, ``tokenizer`` and
    ``_disabled_reason`` on the instance.
    """

    probe: Any
    batch_adapter: Any
    every_n_epochs: int
    on_error: str
    policy: Any
    tokenizer: Any
    _disabled_reason: str | None

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Collect probe samples from the first dataloader until ``num_samples`` are held (once per run)."""
        if trainer.sanity_checking or dataloader_idx != 0 or self._disabled_reason is not None or self.probe.full:
            return
        try:
            adapted = as_adapted(self.batch_adapter(batch)) if self.batch_adapter else default_batch_adapter(batch)
            adapted = self._adapt_batch(adapted)
        except LightningXAIError as error:
            self._disable(str(error), error)
            return
        self.probe.add(adapted)

    def _adapt_batch(self, adapted: AdaptedBatch) -> AdaptedBatch:
        """Hook: what the model family makes of an adapted batch (default: unchanged)."""
        return adapted

    def _scheduled(self, trainer: Any) -> bool:
        """Every validation outside ``fit``; every ``every_n_epochs``-th epoch during ``fit``."""
        if getattr(getattr(trainer, "state", None), "fn", None) != TrainerFn.FITTING:
            return True
        return (int(trainer.current_epoch) + 1) % self.every_n_epochs == 0

    def _tokenizer(self, trainer: Any, pl_module: Any) -> Any | None:
        """``tokenizer=``, else ``datamodule.tokenizer``, else ``pl_module.tokenizer``."""
        for source in (self, getattr(trainer, "datamodule", None), pl_module):
            if getattr(source, "tokenizer", None) is not None:
                return source.tokenizer
        return None

    def _disable(self, reason: str, error: BaseException) -> None:
        """Raise ``error`` (``on_error="raise"``), else switch the callback off for the run with one warning."""
        if self.on_error == "raise":
            raise error
        self._disabled_reason = reason
        self.policy.warn_once("disabled", f"{type(self).__name__} is disabled for this run: {reason}")
