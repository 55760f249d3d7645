"""Explanation Monitor: explanation quality as a validation-time signal.

Explains a FIXED probe set of validation samples at the end of every scheduled validation, scores the maps with
faithfulness metrics, logs the scores as scalars (``xai/<explainer>/<metric>``) and heatmaps to the loggers.
"""

from __future__ import annotations

import inspect
import os
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
from lightning_xai.explainers import Explainer, GradSAM, Random
from lightning_xai.metrics import DeletionAUC, PerturbationMetric, evaluate_suite
from lightning_xai.metrics.agreement import rank_correlation
from lightning_xai.metrics.gain import random_normalised_gain
from lightning_xai.modalities import Modality, TextModality, VisionModality, select
from lightning_xai.sinks import EpochReport, FilesSink, ProbeSample, Sink, sinks_for
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
        write_files: also write PNG/HTML heatmaps and a JSON line per epoch (scores + maps) on rank zero, whatever
            the loggers (read by ``lightning-xai report``).
        files_dir: where those files go (default: ``<trainer.log_dir>/xai``).
        token_budget: upper bound on ``rows x tokens^2`` of one explanation chunk. The recorded attention and its
            gradient hold ``layers x rows x heads x tokens^2`` floats, so long inputs get fewer rows per chunk
            (default: 32 rows of 128 tokens; 2 rows of 512 tokens). ``batch_size`` still caps the rows. The
            perturbation forwards of the metrics are bounded by each metric's ``max_batch_size`` and ``max_tokens``.

    The probe set is collected once, from the first validation pass (dataloader 0), and kept in the checkpoint.
    Under DDP every rank explains its own shard and the scalars are all-reduced; sharded training (FSDP,
    ``fully_shard``, DeepSpeed ZeRO-3) is refused at ``setup`` with what to do instead.

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
        write_files: bool = True,
        files_dir: str | None = None,
        token_budget: int = 32 * 128 * 128,
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
        self.write_files = write_files
        self.files_dir = files_dir
        if not isinstance(token_budget, int) or token_budget < 1:
            raise ValueError(f"token_budget must be an integer >= 1; got {token_budget!r}")
        self.token_budget = token_budget
        #: epoch -> {logged key: value}, for every scheduled validation so far.
        self.history: dict[int, dict[str, float]] = {}

        self._probe_inputs: list[ModelInputs] = []
        self._probe_labels: list[Tensor | None] = []
        self._probe_rationales: list[Tensor | None] = []
        #: method -> (relevance [P, N], content mask [P, N]) of the previous scheduled validation, for stability.
        self._previous_maps: dict[str, tuple[Tensor, Tensor]] = {}
        self._probe_count = 0
        # the probe set is what the first validation pass yields (up to num_samples); closed after it, so a
        # validation set smaller than num_samples is not appended again every epoch
        self._probe_closed = False
        self._suite_limits: tuple[int, int | None] | None = None  # shared metric pass: rows, tokens (halved on OOM)
        self._model: nn.Module | None = None
        self._capture: AttentionCapture | None = None
        self._modality: Modality | None = None
        self._input_keys: set[str] | None = None
        self._scores: dict[tuple[str, str], Metric] = {}
        self._sinks: list[Sink] = []
        self._warned: set[tuple[str, str]] = set()
        self._higher_is_better: dict[str, bool] = {}
        self._skipped: dict[str, int] = {}
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
        sharded = _sharded_reason(trainer, model)
        if sharded is not None:
            raise LightningXAIError(_SHARDED_MESSAGE.format(reason=sharded))
        self._capture = resolve_capture(model)
        self._model = model
        self._modality = self._build_modality(model, trainer, pl_module)
        self._input_keys = _forward_parameters(model)
        self._scores = {
            (e.name, _metric_name(m)): m.clone() for e in self.explainers for m in self.metrics
        }
        # `trainer.log_dir` broadcasts from rank 0: every rank must evaluate it, or the collectives mismatch
        log_dir = self.files_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "xai")
        self._sinks = sinks_for(trainer.loggers) if trainer.is_global_zero else []
        if self.write_files and trainer.is_global_zero:
            self._sinks.append(FilesSink(log_dir))

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Collect probe samples from the first dataloader until ``num_samples`` are held (once per run)."""
        if trainer.sanity_checking or dataloader_idx != 0 or self._disabled_reason is not None:
            return
        if self._probe_closed or self._probe_count >= self.num_samples:
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
        rationale = None if adapted.rationale is None else adapted.rationale[:take].detach().to("cpu", copy=True)
        self._probe_inputs.append(inputs)
        self._probe_labels.append(labels)
        self._probe_rationales.append(rationale)
        self._probe_count += take

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Explain the probe set, log the scores and the heatmaps."""
        if trainer.sanity_checking or self._disabled_reason is not None:
            return
        self._probe_closed = True
        if not self._scheduled(trainer):
            return
        if self._model is None:  # setup() not called, e.g. when used outside a Trainer
            self.setup(trainer, pl_module, "validate")
        sharded = _sharded_reason(None, self._model)  # sharded after setup, e.g. fully_shard in configure_model
        if sharded is not None:  # the same on every rank, so every rank stops here: no collective is left waiting
            message = _SHARDED_MESSAGE.format(reason=sharded)
            self._disable(message, LightningXAIError(message))
            return
        if self._probe_count == 0:
            self._warn_once("probe", "no validation samples were seen on this process, nothing to explain")
            if not _is_distributed():
                return
        self._skipped = {}
        with _preserved_rng(pl_module.device), _precision_context(trainer):
            values, samples, relevance = self._explain_probe_set(pl_module.device, trainer.is_global_zero)
        release_free_memory()
        epoch = int(trainer.current_epoch)
        logged: dict[str, float] = {}
        for method, count in self._skipped.items():
            values[f"{self.log_prefix}{method}/skipped_samples"] = torch.tensor(float(count))
        for key, value in values.items():
            if torch.isnan(value):
                continue
            pl_module.log(key, value, prog_bar=False, logger=bool(trainer.loggers), on_epoch=True, on_step=False)
            logged[key] = float(value)
        self.history[epoch] = logged
        if trainer.is_global_zero and self._sinks:
            report = EpochReport(
                epoch=epoch,
                step=int(trainer.global_step),
                prefix=self.log_prefix,
                scalars=logged,
                higher_is_better={key: self._higher_is_better.get(key, False) for key in logged},
                samples=samples,
                images=self._render(samples),
                relevance=relevance,
            )
            for sink in self._sinks:
                try:
                    sink.log_epoch(report)
                except Exception as error:
                    self._handle_error(f"the {type(sink).__name__}", error)

    def state_dict(self) -> dict[str, Any]:
        """History of logged values and the probe set (CPU tensors), so a resumed run explains the same samples."""
        return {
            "history": {int(k): dict(v) for k, v in self.history.items()},
            "probe_inputs": [dict(part) for part in self._probe_inputs],
            "probe_labels": list(self._probe_labels),
            "probe_rationales": list(self._probe_rationales),
            "probe_count": self._probe_count,
            "previous_maps": {name: (rel.clone(), mask.clone()) for name, (rel, mask) in self._previous_maps.items()},
            "world_size": _world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore history and probe set; keys missing from older checkpoints keep their defaults.

        The probe set is restored only when the checkpoint was written by a single process and this run is single
        process too: under DDP the checkpoint holds rank 0's shard only, so every rank collects its own shard again
        (the distributed sampler gives each rank the same samples as before when the loader does not shuffle).
        """
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}
        if state_dict.get("probe_inputs") and state_dict.get("world_size", 1) == 1 and _world_size() == 1:
            self._probe_inputs = [dict(part) for part in state_dict["probe_inputs"]]
            self._probe_labels = list(state_dict.get("probe_labels", [None] * len(self._probe_inputs)))
            self._probe_count = int(state_dict.get("probe_count", sum(_rows(p) for p in self._probe_inputs)))
            self._probe_closed = True
            self._probe_rationales = list(state_dict.get("probe_rationales", [None] * len(self._probe_inputs)))
            self._previous_maps = dict(state_dict.get("previous_maps", {}))

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

    def _explain_probe_set(
        self, device: torch.device, keep_maps: bool
    ) -> tuple[dict[str, Tensor], list[ProbeSample], dict[str, np.ndarray]]:
        assert self._model is not None and self._modality is not None and self._capture is not None
        model, modality = self._model, self._modality
        probe = modality.collate(self._probe_inputs) if self._probe_inputs else {}
        labels = None if any(lb is None for lb in self._probe_labels) else torch.cat(self._probe_labels)  # type: ignore
        rationales = _pad_rationales(self._probe_rationales, probe)
        current_maps: dict[str, list[Explanation]] = {}
        for metric in self._scores.values():
            metric.to(device)

        def forward(inputs: ModelInputs) -> Tensor:
            return logits_of(model(**inputs))

        samples: list[ProbeSample] = []
        relevance: dict[str, list[np.ndarray]] = {}
        total = _rows(probe) if probe else 0
        width = _token_width(probe, modality) if probe else 1
        start, size = 0, max(1, min(self.batch_size, self.token_budget // (width * width)))
        while start < total:
            rows = slice(start, min(start + size, total))
            chunk = {k: v.to(device) for k, v in select(probe, rows).items()}
            chunk_labels = None if labels is None else labels[rows].to(device)
            chunk_rationale = None if rationales is None else rationales[rows].to(device)
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
                oom = next((e for e in errors.values() if _is_out_of_memory(e)), None)
                if oom is not None:
                    raise oom
            except Exception as error:
                if _is_out_of_memory(error) and size > 1:  # halve the chunk and retry the same rows
                    size = max(1, size // 2)
                    self._warn_once("oom", f"out of memory explaining {rows.stop - rows.start} samples at once; "
                                    f"retrying with chunks of {size}")
                    continue
                self._handle_error("the explanation forward", error)  # every method loses this chunk
                self._count_skipped([e.name for e in self.explainers], rows.stop - rows.start)
                start = rows.stop
                continue
            for name, error in errors.items():
                self._handle_error(f"explainer {name!r}", error)
                self._count_skipped([name], rows.stop - rows.start)
            with eval_mode(model), torch.no_grad():
                self._update_scores(forward, chunk, maps, chunk_rationale)
                for name, explanation in maps.items():
                    current_maps.setdefault(name, []).append(explanation)
            if keep_maps and maps:
                for name, explanation in maps.items():
                    relevance.setdefault(name, []).append(explanation.relevance[explanation.content_mask].cpu().numpy())
                samples.extend(self._probe_samples(start, chunk, chunk_labels, maps))
            start = rows.stop

        values: dict[str, Tensor] = {}
        for (explainer_name, metric_name), metric in self._scores.items():
            key = f"{self.log_prefix}{explainer_name}/{metric_name}"
            self._higher_is_better[key] = bool(getattr(metric, "higher_is_better", False))
            try:
                if getattr(metric, "_update_count", 1) == 0 and not _is_distributed():
                    continue
                values[key] = metric.compute().detach().float()
            except Exception as error:
                self._handle_error(f"metric {metric_name!r} on {explainer_name!r}", error)
            finally:
                metric.reset()
        values.update(self._gains(values))
        values.update(self._map_relations(current_maps))
        return values, samples, {name: np.concatenate(parts) for name, parts in relevance.items()}

    def _gains(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """``<metric>_gain_vs_random`` of every method when a ``Random`` explainer runs: > 0 is better than chance."""
        random_names = [e.name for e in self.explainers if isinstance(e, Random)]
        if not random_names:
            return {}
        baseline_prefix = f"{self.log_prefix}{random_names[0]}/"
        gains: dict[str, Tensor] = {}
        for key, value in values.items():
            method, _, metric = key[len(self.log_prefix) :].partition("/")
            baseline = values.get(baseline_prefix + metric)
            if method == random_names[0] or baseline is None or key not in self._higher_is_better:
                continue
            gains[f"{key}_gain_vs_random"] = random_normalised_gain(value, baseline, self._higher_is_better[key])
        self._higher_is_better.update(dict.fromkeys(gains, True))
        return gains

    def _map_relations(self, maps: dict[str, list[Explanation]]) -> dict[str, Tensor]:
        """Stability (Spearman with the previous validation's map of the same samples) and agreement between methods.

        Means over probe samples; under DDP the per-rank sums and counts are all-reduced, so every rank logs the
        same value as a single process on the union of the shards.
        """
        full = {name: (torch.cat([e.relevance.cpu() for e in parts]), torch.cat([e.content_mask.cpu() for e in parts]))
                for name, parts in maps.items()}
        names = [e.name for e in self.explainers]
        pending: dict[str, tuple[Tensor, Tensor]] = {}
        for name in names:
            previous = self._previous_maps.get(name)
            if name in full and previous is not None and previous[0].shape == full[name][0].shape:
                pending[f"{self.log_prefix}{name}/stability"] = (full[name][0], previous[0])
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if a in full and b in full:
                    pending[f"{self.log_prefix}agreement/{a}_vs_{b}"] = (full[a][0], full[b][0])
        results: dict[str, Tensor] = {}
        keys = sorted(pending) if not _is_distributed() else sorted(self._relation_keys(names))
        for key in keys:
            if key in pending:
                first, second = pending[key]
                mask = next(iter(full.values()))[1]
                rho = rank_correlation(first, second, mask)
                rho = rho[~torch.isnan(rho)]
                totals = torch.tensor([float(rho.sum()), float(rho.numel())], dtype=torch.float64)
            else:
                totals = torch.zeros(2, dtype=torch.float64)
            if _is_distributed():  # every rank reduces the same keys in the same order
                totals = totals.to(_collective_device())
                torch.distributed.all_reduce(totals)
                totals = totals.cpu()
            if totals[1] > 0:
                results[key] = (totals[0] / totals[1]).float()
        self._previous_maps = {name: full[name] for name in full}
        self._higher_is_better.update(dict.fromkeys(results, True))
        return results

    def _relation_keys(self, names: list[str]) -> set[str]:
        """Keys every rank reduces: stability once a previous epoch exists anywhere, all method pairs."""
        keys = {f"{self.log_prefix}agreement/{a}_vs_{b}" for i, a in enumerate(names) for b in names[i + 1 :]}
        if self.history:
            keys |= {f"{self.log_prefix}{name}/stability" for name in names}
        return keys

    def _update_scores(
        self, forward: Any, chunk: ModelInputs, maps: dict[str, Explanation], rationale: Tensor | None
    ) -> None:
        """Score every method's maps of one chunk with every metric.

        The perturbation metrics run together in ONE deduplicated engine pass per removal mode
        (:func:`~lightning_xai.metrics.evaluate_suite`), so the forwards that methods and metrics have in common (the
        unperturbed rows, everything removed, equal masks) run once; the others are updated one by one. If the shared
        pass fails for another reason than memory, every metric is retried on its own so the failure is reported
        against the metric that caused it while the others still log.
        """
        shared = [m for m in self.metrics if isinstance(m, PerturbationMetric)]
        done: set[int] = set()
        if shared and maps and self._update_shared(shared, forward, chunk, maps):
            done = {id(m) for m in shared}
        for template in self.metrics:
            if id(template) in done:
                continue
            metric_name = _metric_name(template)
            for method, explanation in maps.items():
                metric = self._scores.get((method, metric_name))
                if metric is not None:
                    self._update_metric(metric, metric_name, method, forward, chunk, explanation, rationale)

    def _update_shared(
        self, templates: list[PerturbationMetric], forward: Any, chunk: ModelInputs, maps: dict[str, Explanation]
    ) -> bool:
        """One :func:`evaluate_suite` pass for all perturbation metrics; halves its chunks on out-of-memory."""
        assert self._modality is not None
        if self._suite_limits is None:
            tokens = [m.max_tokens for m in templates if m.max_tokens is not None]
            self._suite_limits = (min(m.max_batch_size for m in templates), min(tokens) if tokens else None)
        while True:
            rows, tokens = self._suite_limits
            try:
                values = evaluate_suite(forward, chunk, maps, self._modality, templates, max_batch_size=rows,
                                        max_tokens=tokens)
                break
            except Exception as error:
                if _is_out_of_memory(error) and (rows > 1 or (tokens or 1) > 1):
                    self._suite_limits = _halved(rows, tokens)
                    self._warn_once("oom-metric", "out of memory in the perturbation forwards; retrying with "
                                    f"max_batch_size={self._suite_limits[0]}, max_tokens={self._suite_limits[1]}")
                    continue
                return False
        for template, per_method in zip(templates, values, strict=True):
            metric_name = _metric_name(template)
            for method, method_values in per_method.items():
                metric = self._scores.get((method, metric_name))
                if metric is not None:
                    metric.update(forward, chunk, maps[method], self._modality, values=method_values)
        return True

    def _update_metric(
        self,
        metric: Metric,
        metric_name: str,
        method: str,
        forward: Any,
        chunk: ModelInputs,
        explanation: Explanation,
        rationale: Tensor | None = None,
    ) -> None:
        """``metric.update`` that halves the metric's ``max_batch_size`` and retries on out-of-memory.

        Metrics whose ``update`` takes ``rationale`` (plausibility) get the batch's ground-truth rationale masks.
        """
        extra = {"rationale": rationale} if _accepts(metric.update, "rationale") else {}
        while True:
            try:
                metric.update(forward, chunk, explanation, self._modality, **extra)
                return
            except Exception as error:
                limit = getattr(metric, "max_batch_size", None)
                if _is_out_of_memory(error) and isinstance(limit, int) and limit > 1:
                    tokens = getattr(metric, "max_tokens", None)
                    metric.max_batch_size, tokens = _halved(limit, tokens if isinstance(tokens, int) else None)
                    if tokens is not None:  # the token bound halves with the rows
                        metric.max_tokens = tokens
                    self._warn_once("oom-metric", f"out of memory in metric {metric_name!r}; retrying with "
                                    f"max_batch_size={metric.max_batch_size}, max_tokens={tokens}")
                    continue
                self._handle_error(f"metric {metric_name!r} on {method!r}", error)
                self._count_skipped([f"{method}/{metric_name}"], _rows(chunk))
                return

    def _count_skipped(self, names: list[str], rows: int) -> None:
        for name in names:
            self._skipped[name] = self._skipped.get(name, 0) + rows

    def _probe_samples(
        self, start: int, chunk: ModelInputs, labels: Tensor | None, maps: dict[str, Explanation]
    ) -> list[ProbeSample]:
        """Dashboard view of the chunk's rows that are among the first ``num_heatmaps`` probe samples."""
        assert self._modality is not None and self._model is not None
        names = _label_names(self._model)
        first = next(iter(maps.values()))
        count = max(0, min(self.num_heatmaps - start, first.relevance.shape[0]))
        samples = []
        for i in range(count):
            probs = None if first.logits is None else first.logits[i].softmax(-1)
            prediction = None if probs is None else int(probs.argmax())
            common: dict[str, Any] = dict(
                index=start + i,
                label=None if labels is None else names.get(int(labels[i]), str(int(labels[i]))),
                prediction=None if prediction is None else names.get(prediction, str(prediction)),
                probability=None if probs is None or prediction is None else float(probs[prediction]),
                explained=names.get(int(first.target[i]), str(int(first.target[i]))),
                signed={name: e.signed for name, e in maps.items()},
            )
            if isinstance(self._modality, VisionModality):
                single = {k: v[i : i + 1] for k, v in chunk.items()}
                grids = {n: self._modality.patch_map(e.relevance[i : i + 1], single)[0].cpu().numpy()
                         for n, e in maps.items()}
                image = single["pixel_values"][0].detach().float().cpu().numpy()
                samples.append(ProbeSample(**common, image=image, maps=grids))
            else:
                assert isinstance(self._modality, TextModality)
                content = first.content_mask[i]
                tokens = self._modality.tokens(chunk["input_ids"][i][content].cpu())
                scores = {n: e.relevance[i][e.content_mask[i]].cpu().numpy() for n, e in maps.items()}
                samples.append(ProbeSample(**common, tokens=tokens, maps=scores))
        return samples

    def _render(self, samples: list[ProbeSample]) -> dict[str, np.ndarray]:
        from lightning_xai.viz import compose_grid, render_image_overlay, render_token_heatmap

        images: dict[str, np.ndarray] = {}
        for sample in samples:
            for method, values in sample.maps.items():
                title = f"{method} · sample {sample.index}"
                signed = sample.signed.get(method, False)
                try:
                    if sample.image is not None:
                        image = render_image_overlay(sample.image, values, title=title, caption=sample.caption(),
                                                     signed=signed)
                    else:
                        image = render_token_heatmap(sample.tokens or [], values, title=title,
                                                     caption=sample.caption(), signed=signed)
                except Exception as error:
                    self._handle_error(f"rendering the {method!r} heatmap", error)
                    continue
                images[f"{self.log_prefix}{method}/heatmap/sample_{sample.index:02d}"] = image
            tags = [f"{self.log_prefix}{method}/heatmap/sample_{sample.index:02d}" for method in sample.maps]
            rendered = [images[tag] for tag in tags if tag in images]
            if len(rendered) > 1:  # every method side by side, for comparing them on one sample
                images[f"{self.log_prefix}compare/heatmap/sample_{sample.index:02d}"] = compose_grid(
                    rendered, columns=1 if sample.tokens is not None else None
                )
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


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def _pad_rationales(parts: list[Tensor | None], probe: ModelInputs) -> Tensor | None:
    """Probe rationale masks padded (False) to the probe's token width; None unless every batch had them."""
    if not parts or any(part is None for part in parts) or "input_ids" not in probe:
        return None
    width = probe["input_ids"].shape[1]
    return torch.cat([torch.nn.functional.pad(p.bool(), (0, width - p.shape[1]), value=False) for p in parts])


def _token_width(probe: ModelInputs, modality: Modality) -> int:
    """Tokens per row the attention will have (text: padded width; vision: patches + prefix)."""
    if isinstance(modality, VisionModality):
        rows, cols = modality.grid(probe)
        return rows * cols + 2  # at most two prefix tokens ([CLS], distillation)
    return int(next(iter(probe.values())).shape[1])


def _world_size() -> int:
    return torch.distributed.get_world_size() if _is_distributed() else 1


_SHARDED_MESSAGE = (
    "ExplanationMonitor does not support sharded training ({reason}). Explaining runs extra forward and backward "
    "passes through the model outside the training step: with sharded parameters every rank would have to run the "
    "very same passes (the monitor gives each rank its own probe samples, so the parameter all-gathers would "
    "deadlock), and a backward through sharded modules fires their gradient reduce-scatter hooks, which would write "
    "the parameters' .grad. Monitor a DDP run instead (strategy='ddp'), or explain a saved checkpoint after training "
    "with `lightning-xai explain`."
)


def _sharded_reason(trainer: Any, model: torch.nn.Module | None) -> str | None:
    """Why the run shards parameters (FSDP, FSDP2/DTensor, DeepSpeed ZeRO-3, ModelParallel), or None.

    Strategies are matched by class name, so both ``lightning.pytorch`` and ``pytorch_lightning`` are recognised.
    """
    strategy = getattr(trainer, "strategy", None)
    name = type(strategy).__name__
    if name in ("FSDPStrategy", "ModelParallelStrategy"):
        return f"strategy {name}"
    if name == "DeepSpeedStrategy" and bool(getattr(strategy, "zero_stage_3", False)):
        return "strategy DeepSpeedStrategy with ZeRO stage 3"
    if model is None:
        return None
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            return "the model is wrapped in FullyShardedDataParallel"
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        return "the model's parameters are DTensors (fully_shard / tensor parallel)"
    return None


def release_free_memory() -> bool:
    """Hand the heap memory freed by the explanation passes back to the OS (glibc ``malloc_trim``).

    glibc's allocator keeps freed blocks of the many mid-sized tensors an explanation allocates, so without this
    the training process would carry the monitor's high-water mark for the rest of the run. Nothing else changes
    (no numbers, no allocator settings). Returns whether memory was released; False where glibc is absent.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _halved(rows: int, tokens: int | None) -> tuple[int, int | None]:
    """Both bounds of a perturbation chunk (rows, rows x tokens) halved, never below 1, after out-of-memory."""
    return max(1, rows // 2), None if tokens is None else max(1, tokens // 2)


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


@contextmanager
def _precision_context(trainer: Any) -> Iterator[None]:
    """Explain under the trainer's precision (e.g. bf16 autocast for ``precision="bf16-mixed"``) like validation."""
    plugin = getattr(getattr(trainer, "strategy", None), "precision_plugin", None)
    context = getattr(plugin, "forward_context", None)
    if context is None:
        yield
        return
    with context():
        yield


def _label_names(model: nn.Module) -> dict[int, str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


