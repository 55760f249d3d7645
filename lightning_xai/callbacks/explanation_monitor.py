"""Explanation Monitor: explanation quality as a validation-time signal.

Explains a FIXED probe set of validation samples at the end of every scheduled validation, scores the maps with
faithfulness metrics, logs the scores as scalars (``xai/<explainer>/<metric>``) and heatmaps to the loggers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_xai.adapters import AdaptedBatch, as_adapted, default_batch_adapter
from lightning_xai.capture import AttentionCapture, eval_mode, resolve_capture
from lightning_xai.errors import LightningXAIError
from lightning_xai.explain import Target, explain, logits_of
from lightning_xai.explainers import Explainer, GradSAM
from lightning_xai.metrics import DeletionAUC
from lightning_xai.modalities import Modality, TextModality, VisionModality, select
from lightning_xai.sinks import Sink, sinks_for
from lightning_xai.types import Explanation, ModelInputs

try:  # One class that both `lightning.pytorch.Trainer` and `pytorch_lightning.Trainer` accept as a callback.
    from lightning.pytorch import Callback as _LightningCallback
except ImportError:  # pragma: no cover - lightning is a dependency
    _LightningCallback = None  # type: ignore[assignment,misc]
try:
    from pytorch_lightning import Callback as _PLCallback
except ImportError:  # pragma: no cover - pytorch_lightning is optional
    _PLCallback = None  # type: ignore[assignment,misc]
_CALLBACK_BASES: tuple[type, ...] = tuple(b for b in (_LightningCallback, _PLCallback) if b is not None)

ErrorPolicy = Literal["warn", "raise"]


def default_model_getter(pl_module: nn.Module) -> nn.Module:
    """The outermost HF ``PreTrainedModel`` inside the LightningModule (e.g. ``self.model``)."""
    from transformers import PreTrainedModel

    for module in pl_module.modules():
        if isinstance(module, PreTrainedModel):
            return module
    return pl_module


def _metric_name(metric: Metric) -> str:
    name = getattr(metric, "name", None)
    if isinstance(name, str):
        return name
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(metric).__name__).lstrip("_")
    return snake


@contextmanager
def _preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore the global torch RNG streams afterwards, so monitoring never changes what training draws next."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class ExplanationMonitor(*_CALLBACK_BASES):  # type: ignore[misc]
    """Track explanation quality during validation: maps, faithfulness scalars and heatmaps.

    The probe set is the first ``num_samples`` samples of the first validation dataloader, collected once (during the
    first validation that is not the sanity check) and kept on the CPU, so the SAME samples are explained every
    epoch even if the loader shuffles. At the end of each scheduled validation every explainer runs on the probe
    set (one shared forward per chunk), every metric scores every explainer, and

    * scalars ``{log_prefix}{explainer}/{metric}`` are logged with ``pl_module.log`` (usable by ``ModelCheckpoint``
      and ``EarlyStopping``) and kept in :attr:`history`;
    * heatmaps of the first ``num_heatmaps`` probe samples go to every supported logger on global rank zero
      (``{log_prefix}{explainer}/heatmap/sample_NN``): token heatmaps for text, overlays for images.

    Monitoring changes nothing about training: the explanation passes use ``torch.autograd.grad`` w.r.t. attention
    only (no parameter ``.grad``), restore the attention backend and every module's train mode, and the global RNG
    state is restored afterwards. It works under ``trainer.fit`` and under ``trainer.validate()`` with the default
    ``inference_mode=True``.

    Args:
        explainers: methods to run (default: ``[GradSAM()]``). Names must be unique.
        metrics: faithfulness metrics, cloned per explainer (default: ``[DeletionAUC()]``).
        num_samples: size of the probe set (per process under DDP: each rank explains its own shard).
        every_n_epochs: explain every n-th epoch during ``fit`` (always under ``validate``).
        target: class to explain: ``"predicted"`` (default), ``"label"`` or a fixed class index.
        num_heatmaps: how many probe samples get heatmaps (0 disables images).
        batch_size: probe samples per explanation pass.
        batch_adapter: ``batch -> AdaptedBatch`` (or an ``(inputs_dict, labels)`` pair) for batch formats the
            default adapter does not understand (see :func:`lightning_xai.adapters.default_batch_adapter`).
        model_getter: ``pl_module -> HF model`` to explain (default: the outermost ``PreTrainedModel`` inside).
        tokenizer: HF tokenizer for text models (default: ``datamodule.tokenizer`` or ``pl_module.tokenizer``).
        log_prefix: prefix of every logged key.
        on_error: ``"warn"`` (default): a failing explainer/metric is reported once and skipped, training goes on;
            ``"raise"``: the error surfaces with its context.

    Example::

        from lightning.pytorch import Trainer
        from lightning.pytorch.loggers import TensorBoardLogger
        from lightning_xai import ExplanationMonitor
        from lightning_xai.explainers import GradSAM, Random

        monitor = ExplanationMonitor(explainers=[GradSAM(), Random()], num_samples=32)
        trainer = Trainer(callbacks=[monitor], logger=TensorBoardLogger("runs"))
        trainer.fit(module, datamodule)  # then: tensorboard --logdir runs

    Construction checks the arguments at once:

    >>> ExplanationMonitor(on_error="ignore")
    Traceback (most recent call last):
    ...
    ValueError: on_error must be one of 'warn', 'raise'; got 'ignore'
    """

    def __init__(
        self,
        explainers: Sequence[Explainer] | None = None,
        metrics: Sequence[Metric] | None = None,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        target: Target = "predicted",
        num_heatmaps: int = 8,
        batch_size: int = 32,
        batch_adapter: Callable[[Any], AdaptedBatch | Any] | None = None,
        model_getter: Callable[[Any], nn.Module] | None = None,
        tokenizer: Any | None = None,
        log_prefix: str = "xai/",
        on_error: ErrorPolicy = "warn",
    ) -> None:
        super().__init__()
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be one of 'warn', 'raise'; got {on_error!r}")
        for arg, value, minimum in (
            ("num_samples", num_samples, 1),
            ("every_n_epochs", every_n_epochs, 1),
            ("batch_size", batch_size, 1),
            ("num_heatmaps", num_heatmaps, 0),
        ):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")
        if not (target in ("predicted", "label") or (isinstance(target, int) and not isinstance(target, bool))):
            raise ValueError(f"target must be 'predicted', 'label' or a class index; got {target!r}")
        self.explainers: list[Explainer] = list(explainers) if explainers is not None else [GradSAM()]
        self.metrics: list[Metric] = list(metrics) if metrics is not None else [DeletionAUC()]
        if not self.explainers:
            raise ValueError("explainers must name at least one explainer, e.g. [GradSAM()]")
        for explainer in self.explainers:
            if not isinstance(explainer, Explainer):
                raise TypeError(f"explainers must be lightning_xai Explainer instances; got {type(explainer).__name__}")
        for metric in self.metrics:
            if not isinstance(metric, Metric):
                raise TypeError(f"metrics must be torchmetrics Metric instances; got {type(metric).__name__}")
        names = [e.name for e in self.explainers]
        if len(set(names)) != len(names):
            raise ValueError(f"explainer names must be unique; got {names}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.num_heatmaps = num_heatmaps
        self.batch_size = batch_size
        self.batch_adapter = batch_adapter
        self.model_getter = model_getter
        self.tokenizer = tokenizer
        self.log_prefix = log_prefix
        self.on_error: ErrorPolicy = on_error
        #: epoch -> {logged key: value}, for every scheduled validation so far.
        self.history: dict[int, dict[str, float]] = {}

        self._probe_inputs: list[ModelInputs] = []
        self._probe_labels: list[Tensor | None] = []
        self._probe_count = 0
        self._model: nn.Module | None = None
        self._capture: AttentionCapture | None = None
        self._modality: Modality | None = None
        self._input_keys: set[str] | None = None
        self._scores: dict[tuple[str, str], Metric] = {}
        self._sinks: list[Sink] = []
        self._warned: set[tuple[str, str]] = set()
        self._disabled_reason: str | None = None

    # ------------------------------------------------------------------------------------------------ Lightning

    @property
    def state_key(self) -> str:
        """Distinct per configuration, so several monitors can share one checkpoint."""
        return self._generate_state_key(
            explainers=[e.name for e in self.explainers], metrics=[_metric_name(m) for m in self.metrics]
        )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Resolve the model, its capture family, the modality and the sinks; fail fast on what cannot work."""
        model = (self.model_getter or default_model_getter)(pl_module)
        self._capture = resolve_capture(model)
        self._model = model
        self._modality = self._build_modality(model, trainer, pl_module)
        self._input_keys = _forward_parameters(model)
        self._scores = {
            (e.name, _metric_name(m)): m.clone() for e in self.explainers for m in self.metrics
        }
        self._sinks = sinks_for(trainer.loggers) if trainer.is_global_zero else []
        if self.num_heatmaps and trainer.is_global_zero and not self._sinks and trainer.loggers:
            self._warn_once(
                "sinks",
                "no heatmap sink for the configured loggers "
                f"({', '.join(type(lg).__name__ for lg in trainer.loggers)}); scalars are still logged. "
                "Heatmaps need a TensorBoardLogger.",
            )

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Collect probe samples from the first dataloader until ``num_samples`` are held (once per run)."""
        if trainer.sanity_checking or dataloader_idx != 0 or self._disabled_reason is not None:
            return
        if self._probe_count >= self.num_samples:
            return
        try:
            adapted = as_adapted(self.batch_adapter(batch)) if self.batch_adapter else default_batch_adapter(batch)
        except LightningXAIError as error:
            self._disable(str(error), error)
            return
        take = min(self.num_samples - self._probe_count, _rows(adapted.inputs))
        keep = self._input_keys
        inputs = {k: v[:take].detach().to("cpu", copy=True) for k, v in adapted.inputs.items() if not keep or k in keep}
        labels = None if adapted.labels is None else adapted.labels[:take].detach().to("cpu", copy=True)
        self._probe_inputs.append(inputs)
        self._probe_labels.append(labels)
        self._probe_count += take

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Explain the probe set, log the scores and the heatmaps."""
        if trainer.sanity_checking or self._disabled_reason is not None or not self._scheduled(trainer):
            return
        if self._model is None:  # setup() not called, e.g. when used outside a Trainer
            self.setup(trainer, pl_module, "validate")
        if self._probe_count == 0:
            self._warn_once("probe", "no validation samples were seen, nothing to explain")
            return
        with _preserved_rng(pl_module.device):
            values, heatmaps = self._explain_probe_set(pl_module.device)
        epoch = int(trainer.current_epoch)
        logged: dict[str, float] = {}
        for key, value in values.items():
            if torch.isnan(value):
                continue
            pl_module.log(key, value, prog_bar=False, logger=bool(trainer.loggers), on_epoch=True, on_step=False)
            logged[key] = float(value)
        self.history[epoch] = logged
        if heatmaps and trainer.is_global_zero:
            for sink in self._sinks:
                sink.log_images(heatmaps, step=int(trainer.global_step))

    def state_dict(self) -> dict[str, Any]:
        """The history of logged values (plain types)."""
        return {"history": {int(k): dict(v) for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history; unknown keys of newer versions are ignored."""
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}

    # ------------------------------------------------------------------------------------------------ internals

    def _scheduled(self, trainer: Any) -> bool:
        fitting = getattr(getattr(trainer, "state", None), "fn", None)
        if fitting is not None and str(getattr(fitting, "value", fitting)) != "fit":
            return True
        return (int(trainer.current_epoch) + 1) % self.every_n_epochs == 0

    def _build_modality(self, model: nn.Module, trainer: Any, pl_module: Any) -> Modality:
        if getattr(model, "main_input_name", "input_ids") == "pixel_values":
            patch = getattr(getattr(model, "config", None), "patch_size", None)
            if patch is None:
                raise LightningXAIError(
                    f"{type(model).__name__} has no config.patch_size: cannot map its tokens to image patches"
                )
            return VisionModality(patch_size=patch[0] if isinstance(patch, (tuple, list)) else int(patch))
        tokenizer = self.tokenizer
        if tokenizer is None:
            tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None:
            raise LightningXAIError(
                "ExplanationMonitor needs the tokenizer of a text model (to know special tokens and the mask token "
                "used to remove tokens). Pass ExplanationMonitor(tokenizer=...), or set a `tokenizer` attribute on "
                "your LightningModule or DataModule."
            )
        return TextModality.from_tokenizer(tokenizer)

    def _explain_probe_set(self, device: torch.device) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
        assert self._model is not None and self._modality is not None and self._capture is not None
        model, modality = self._model, self._modality
        probe = modality.collate(self._probe_inputs)
        labels = None if any(lb is None for lb in self._probe_labels) else torch.cat(self._probe_labels)  # type: ignore
        for metric in self._scores.values():
            metric.to(device)

        def forward(inputs: ModelInputs) -> Tensor:
            return logits_of(model(**inputs))

        heatmap_rows: dict[str, list[Explanation]] = {}
        heatmap_inputs: list[ModelInputs] = []
        total = _rows(probe)
        for start in range(0, total, self.batch_size):
            rows = slice(start, min(start + self.batch_size, total))
            chunk = {k: v.to(device) for k, v in select(probe, rows).items()}
            chunk_labels = None if labels is None else labels[rows].to(device)
            errors: dict[str, BaseException] = {}
            try:
                maps = explain(
                    model,
                    chunk,
                    self.explainers,
                    modality=modality,
                    target=self.target,
                    labels=chunk_labels,
                    capture=self._capture,
                    errors=errors,
                )
            except Exception as error:  # the shared forward itself failed: every method loses this chunk
                self._handle_error("the explanation forward", error)
                continue
            for name, error in errors.items():
                self._handle_error(f"explainer {name!r}", error)
            with eval_mode(model), torch.no_grad():
                for name, explanation in maps.items():
                    for (explainer_name, metric_name), metric in self._scores.items():
                        if explainer_name != name:
                            continue
                        try:
                            metric.update(forward, chunk, explanation, modality)
                        except Exception as error:
                            self._handle_error(f"metric {metric_name!r} on {name!r}", error)
            if start < self.num_heatmaps:
                keep = min(self.num_heatmaps - start, rows.stop - start)
                heatmap_inputs.append({k: v[:keep].cpu() for k, v in chunk.items()})
                for name, explanation in maps.items():
                    heatmap_rows.setdefault(name, []).append(_head(explanation, keep))

        values: dict[str, Tensor] = {}
        for (explainer_name, metric_name), metric in self._scores.items():
            try:
                if getattr(metric, "_update_count", 1) == 0 and not _is_distributed():
                    continue
                values[f"{self.log_prefix}{explainer_name}/{metric_name}"] = metric.compute().detach().float()
            except Exception as error:
                self._handle_error(f"metric {metric_name!r} on {explainer_name!r}", error)
            finally:
                metric.reset()
        images = self._render(heatmap_inputs, heatmap_rows) if heatmap_inputs else {}
        return values, images

    def _render(self, inputs_parts: list[ModelInputs], rows: dict[str, list[Explanation]]) -> dict[str, np.ndarray]:
        from lightning_xai.viz import render_image_overlay, render_token_heatmap

        assert self._modality is not None and self._model is not None
        inputs = self._modality.collate(inputs_parts)
        label_parts = [lb for lb in self._probe_labels if lb is not None]
        labels = torch.cat(label_parts) if len(label_parts) == len(self._probe_labels) and label_parts else None
        names = _label_names(self._model)
        images: dict[str, np.ndarray] = {}
        for method, parts in rows.items():
            explanation = _concat(parts)
            for i in range(explanation.relevance.shape[0]):
                title = f"{method} · sample {i}"
                caption = _caption(explanation, i, labels, names)
                try:
                    if isinstance(self._modality, VisionModality):
                        single = {k: v[i : i + 1] for k, v in inputs.items()}
                        grid = self._modality.patch_map(explanation.relevance[i : i + 1], single)[0]
                        image = render_image_overlay(
                            single["pixel_values"][0].float().numpy(),
                            grid.numpy(),
                            title=title,
                            caption=caption,
                            signed=explanation.signed,
                        )
                    else:
                        assert isinstance(self._modality, TextModality)
                        content = explanation.content_mask[i]
                        tokens = self._modality.tokens(inputs["input_ids"][i][content])
                        scores = explanation.relevance[i][content].numpy()
                        image = render_token_heatmap(
                            tokens, scores, title=title, caption=caption, signed=explanation.signed
                        )
                except Exception as error:
                    self._handle_error(f"rendering the {method!r} heatmap", error)
                    continue
                images[f"{self.log_prefix}{method}/heatmap/sample_{i:02d}"] = image
        return images

    def _handle_error(self, where: str, error: BaseException) -> None:
        if self.on_error == "raise":
            raise LightningXAIError(f"ExplanationMonitor: {where} failed: {type(error).__name__}: {error}") from error
        self._warn_once(
            where + type(error).__name__,
            f"{where} failed and was skipped ({type(error).__name__}: {error}). Training continues; "
            "pass on_error='raise' to get the full traceback.",
        )

    def _disable(self, reason: str, error: BaseException) -> None:
        if self.on_error == "raise":
            raise error
        self._disabled_reason = reason
        self._warn_once("disabled", f"ExplanationMonitor is disabled for this run: {reason}")

    def _warn_once(self, key: str, message: str) -> None:
        if (key, message) in self._warned:
            return
        self._warned.add((key, message))
        from lightning_utilities.core.rank_zero import rank_zero_warn

        rank_zero_warn(message if message.startswith("ExplanationMonitor") else f"ExplanationMonitor: {message}")


def _rows(inputs: ModelInputs) -> int:
    return next(iter(inputs.values())).shape[0]


def _forward_parameters(model: nn.Module) -> set[str] | None:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _head(explanation: Explanation, n: int) -> Explanation:
    return Explanation(
        explanation.method,
        explanation.relevance[:n].cpu(),
        explanation.valid_mask[:n].cpu(),
        explanation.special_mask[:n].cpu(),
        explanation.target[:n].cpu(),
        explanation.signed,
        None if explanation.logits is None else explanation.logits[:n].cpu(),
    )


def _concat(parts: list[Explanation]) -> Explanation:
    # text chunks may differ in width: right-pad with zero relevance / invalid positions
    width = max(p.relevance.shape[1] for p in parts)

    def pad(t: Tensor, value: float | bool) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    first = parts[0]
    logits = None if any(p.logits is None for p in parts) else torch.cat([p.logits for p in parts])  # type: ignore
    return Explanation(
        first.method,
        torch.cat([pad(p.relevance, 0.0) for p in parts]),
        torch.cat([pad(p.valid_mask, False) for p in parts]),
        torch.cat([pad(p.special_mask, True) for p in parts]),
        torch.cat([p.target for p in parts]),
        first.signed,
        logits,
    )


def _label_names(model: nn.Module) -> dict[int, str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


def _caption(explanation: Explanation, i: int, labels: Tensor | None, names: dict[int, str]) -> str:
    def name(index: int) -> str:
        return names.get(index, str(index))

    parts = []
    if labels is not None and i < labels.shape[0]:
        parts.append(f"label: {name(int(labels[i]))}")
    if explanation.logits is not None:
        probs = explanation.logits[i].softmax(-1)
        pred = int(probs.argmax())
        parts.append(f"pred: {name(pred)} (p={float(probs[pred]):.2f})")
    parts.append(f"explained: {name(int(explanation.target[i]))}")
    return " · ".join(parts)

