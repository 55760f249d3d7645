"""Explanation Monitor: explanation quality as a validation-time signal.

A thin Lightning adapter over the engine: it collects the probe set from validation batches
(:class:`~lightning_xai.probe.ProbeSet`), calls :func:`~lightning_xai.run.explain_probe_set` at the end of every
scheduled validation, logs the scalars with ``pl_module.log`` and hands one report to the sinks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from lightning_xai import _runtime as runtime
from lightning_xai import run as engine
from lightning_xai._distributed import inference_tensors_problem, sharded_message, sharding_refusal
from lightning_xai.adapters import AdaptedBatch, default_model_getter
from lightning_xai.callbacks._probe_hooks import ProbeHooks
from lightning_xai.completion_tokens import DEFAULT_MAX_TOKENS, DEFAULT_SAMPLES, add_completion_tokens
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers import Explainer, GradSAM, Random
from lightning_xai.explanation_pass import Target, check_target
from lightning_xai.families import ModelFamily, explainable_model, resolve_family
from lightning_xai.keys import LogKeys
from lightning_xai.metrics import DeletionAUC
from lightning_xai.modalities import Modality
from lightning_xai.probe import ProbeSet, forward_parameters
from lightning_xai.scoring import Scoreboard, metric_name
from lightning_xai.sinks import Sink, WandbSink, publish, sinks_for
from lightning_xai.sinks.background import BackgroundPublisher
from lightning_xai.sinks.files import FilesSink, files_directory, new_run_id
from lightning_xai.types import Explanation

try:  # One class that both `lightning.pytorch.Trainer` and `pytorch_lightning.Trainer` accept as a callback.
    from lightning.pytorch import Callback as _LightningCallback
except ImportError:  # pragma: no cover - lightning is a dependency
    _LightningCallback = None  # type: ignore[assignment,misc]
try:
    from pytorch_lightning import Callback as _PLCallback
except ImportError:  # pragma: no cover - pytorch_lightning is optional
    _PLCallback = None  # type: ignore[assignment,misc]
_CALLBACK_BASES: tuple[type, ...] = tuple(b for b in (_LightningCallback, _PLCallback) if b is not None)

class ExplanationMonitor(ProbeHooks, *_CALLBACK_BASES):  # type: ignore[misc]
    """Track explanation quality during validation: maps, faithfulness scalars and heatmaps.

    The probe set is the first ``num_samples`` samples of the first validation dataloader (after the sanity check),
    kept on the CPU: the SAME samples are explained every epoch even if the loader shuffles. At the end of each
    scheduled validation every explainer explains it (one shared forward per chunk), every metric scores every map, and

    * scalars ``{log_prefix}{explainer}/{metric}`` are logged with ``pl_module.log`` (usable by ``ModelCheckpoint``
      and ``EarlyStopping``) and kept in :attr:`history`, with each method's stability across validations, the
      agreement between methods and, when a ``Random`` explainer runs, each metric's gain over it;
    * heatmaps of the first ``num_heatmaps`` probe samples go to every supported logger on global rank zero
      (``{log_prefix}{explainer}/heatmap/sample_NN``): token heatmaps for text, overlays for images;
    * causal LMs only: for the first ``completion_token_samples`` of those samples, one map per completion token
      (the first ``completion_token_limit`` tokens), drawn as a matrix (rows: completion tokens, columns: prompt
      tokens, each row normalised by its largest absolute relevance;
      ``{log_prefix}{explainer}/completion_tokens/sample_NN``) and written raw to the files sink's JSON lines
      (see :mod:`lightning_xai.completion_tokens`).

    Monitoring changes nothing about training (no parameter ``.grad``; attention backend, train modes and the global
    RNG restored), under ``trainer.fit`` and ``trainer.validate()`` with its default ``inference_mode=True``.

    A method the model's family cannot serve (:mod:`lightning_xai.families`), or a metric the modality cannot use, is
    refused at ``setup`` with the reason and what to do: warned (the others run) or raised (``on_error="raise"``).

    Args:
        explainers: methods to run, instances or registered names (default: ``[GradSAM()]``); names must be unique.
        metrics: faithfulness metrics, instances or registered names, cloned per explainer (default:
            ``[DeletionAUC()]``); each is updated with
            ``update(explanation, context)`` (:class:`~lightning_xai.metrics.ScoringContext`).
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
        files_dir: where those files go (default: ``<trainer.log_dir>/xai`` for TensorBoard and CSV loggers, else a
            new ``<log dir>/xai/run_<id>``; nothing under ``fast_dev_run``). Runs never share a record.
        removal: how metrics remove tokens unless a metric says otherwise (None: the family's default: the mask token
            for encoders, the attention mask for decoders, which have no mask token; vision: a baseline).
        token_budget: most ``rows x tokens^2`` per explanation chunk (attention memory; default 32 rows of 128
            tokens, 2 of 512); ``rows x tokens`` when the pass streams the attention (``GradSAM(attention=
            "sdpa")`` with methods that need no map and run no pass of their own, e.g. gradient x input, Random;
            see :func:`lightning_xai.run.chunk_rows`).
            Metrics' perturbation forwards are bounded by their ``max_batch_size``/``max_tokens``.
        completion_token_samples: causal LMs: how many of the first heatmap samples also get one map per
            completion token (at most ``num_heatmaps``; 0 disables). Ignored for other models.
        completion_token_limit: causal LMs: most completion tokens explained per such sample (the first ones; a
            longer completion is warned about once and counted in ``completion_tokens_truncated``). Each token is
            one more explained row of its sample, in passes bounded by ``batch_size`` and ``token_budget``.
        publish_in_background: render the heatmaps and hand them to the sinks on a worker thread, so training goes
            on meanwhile (in order, one validation after the other; drained at ``teardown`` and on an exception,
            before Lightning closes the loggers; under ``on_error="raise"`` an error there is raised at the next
            validation's end or at ``teardown``). ``None`` (default): on when the model runs on an accelerator,
            whose host CPU is otherwise idle, and no W&B logger is attached; off on CPU, where rendering would
            compete with training for the same cores (measured on 2 cores: rendering beside the metric forwards
            made the epoch end slower, 11.8 s against 10.9 s one after the other). Scalars are always logged on
            the training thread.

    Under DDP and FSDP2 (``fully_shard``, e.g. ``ModelParallelStrategy``) every rank explains its own shard and
    torchmetrics reduces the metrics (FSDP2: the parameters are gathered once per validation, see
    ``docs/distributed.md``); FSDP1, DeepSpeed ZeRO-3 and tensor parallelism are refused with what to do instead.

    Example::

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
        explainers: Sequence[Explainer | str] | None = None,
        metrics: Sequence[Metric | str] | None = None,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        target: Target = "predicted",
        num_heatmaps: int = 8,
        batch_size: int = 32,
        batch_adapter: Callable[[Any], AdaptedBatch | Any] | None = None,
        model_getter: Callable[[Any], nn.Module] | None = None,
        tokenizer: Any | None = None,
        log_prefix: str = "xai/",
        on_error: runtime.OnError = "warn",
        write_files: bool = True,
        files_dir: str | None = None,
        token_budget: int = engine.DEFAULT_TOKEN_BUDGET,
        removal: str | float | None = None,
        completion_token_samples: int = DEFAULT_SAMPLES,
        completion_token_limit: int = DEFAULT_MAX_TOKENS,
        publish_in_background: bool | None = None,
    ) -> None:
        super().__init__()
        self.policy = runtime.ErrorPolicy(on_error)
        for arg, value, minimum in (
            ("num_samples", num_samples, 1),
            ("every_n_epochs", every_n_epochs, 1),
            ("batch_size", batch_size, 1),
            ("num_heatmaps", num_heatmaps, 0),
            ("token_budget", token_budget, 1),
            ("completion_token_samples", completion_token_samples, 0),
            ("completion_token_limit", completion_token_limit, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")
        if publish_in_background not in (None, True, False):
            raise ValueError(f"publish_in_background must be True, False or None (auto); got {publish_in_background!r}")
        check_target(target)
        self.explainers, self.metrics = engine.validate_methods(
            [GradSAM()] if explainers is None else explainers, [DeletionAUC()] if metrics is None else metrics
        )
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.num_heatmaps = num_heatmaps
        self.batch_size = batch_size
        self.batch_adapter = batch_adapter
        self.model_getter = model_getter
        self.tokenizer = tokenizer
        self.log_prefix = log_prefix
        self.keys = LogKeys(log_prefix)
        self.on_error: runtime.OnError = on_error
        self.write_files = write_files
        self.files_dir = files_dir
        self.token_budget = token_budget
        self.removal = removal
        self.completion_token_samples = completion_token_samples
        self.completion_token_limit = completion_token_limit
        self.publish_in_background = publish_in_background
        self._publisher = BackgroundPublisher()
        #: epoch -> {logged key: value}, for every scheduled validation so far.
        self.history: dict[int, dict[str, float]] = {}
        #: Written on every record of this run (kept in checkpoints: a resumed run continues its own record).
        self.run_id = new_run_id()
        self.probe = ProbeSet(num_samples)
        #: method -> its maps of the probe set at the previous scheduled validation (stability).
        self._previous_maps: dict[str, Explanation] = {}
        self._model: nn.Module | None = None
        self._family: ModelFamily | None = None
        self._modality: Modality | None = None
        self._active: list[Explainer] = []
        self._active_metrics: list[Metric] = []
        self._scoreboard: Scoreboard | None = None
        self._sinks: list[Sink] = []
        self._disabled_reason: str | None = None

    @property
    def output_directory(self) -> Path | None:
        """This run's files folder (``explanations.jsonl``, heatmaps); None before setup, with files off, off rank 0."""
        return next((sink.directory for sink in self._sinks if isinstance(sink, FilesSink)), None)

    @property
    def state_key(self) -> str:
        """Distinct per configuration, so several monitors can share one checkpoint."""
        return self._generate_state_key(
            explainers=[e.name for e in self.explainers], metrics=[metric_name(m) for m in self.metrics]
        )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Resolve the model's family and modality, refuse what cannot work, and open the sinks."""
        # a causal LM is explained through its CompletionScorer (the completion of each SFT sample)
        model = explainable_model((self.model_getter or default_model_getter)(pl_module))
        sharded = sharding_refusal(getattr(trainer, "strategy", None), model, serves_fsdp2=True)
        if sharded is not None:  # FSDP2 (fully_shard, ModelParallelStrategy) is served; FSDP1, ZeRO-3, TP are not
            raise LightningXAIError(sharded_message("ExplanationMonitor", sharded, serves_fsdp2=True))
        family = resolve_family(model)
        check_target(self.target, model)
        family.explained_target(self.target)  # a family that always explains one output refuses another here
        modality = family.build_modality(self._tokenizer(trainer, pl_module), self.removal)
        self._model, self._family, self._modality = model, family, modality
        self._active, self._active_metrics = engine.runnable(
            family, modality, self.explainers, self.metrics, self.policy
        )
        self.probe.input_keys = forward_parameters(model)
        random = next((e.name for e in self._active if isinstance(e, Random)), None)
        self._scoreboard = Scoreboard(
            [e.name for e in self._active], self._active_metrics, self.keys, self.policy, random
        )
        # `trainer.log_dir` broadcasts from rank 0: every rank must evaluate it, or the collectives mismatch
        log_dir = trainer.log_dir or trainer.default_root_dir
        versioned = bool(trainer.loggers) and type(trainer.loggers[0]).__name__ in ("TensorBoardLogger", "CSVLogger")
        files_dir = files_directory(self.files_dir, log_dir, versioned, bool(getattr(trainer, "fast_dev_run", 0)),
                                    self.run_id) if self.write_files else None
        self._sinks = sinks_for(trainer.loggers, files_dir, self.run_id) if trainer.is_global_zero else []

    def _adapt_batch(self, adapted: AdaptedBatch) -> AdaptedBatch:
        """The family's view of the batch (a causal LM moves its labels into the inputs)."""
        return self._family.adapt_batch(adapted) if self._family is not None else adapted

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Explain the probe set, log the scores and the heatmaps."""
        if trainer.sanity_checking or self._disabled_reason is not None:
            return
        self._publisher.raise_finished_errors()  # a failed earlier publication surfaces now, not at the end
        self.probe.close()
        if not self._scheduled(trainer):
            return
        if self._scoreboard is None:  # setup() not called, e.g. when used outside a Trainer
            self.setup(trainer, pl_module, "validate")
        assert self._model is not None and self._family is not None and self._modality is not None
        # sharded after setup (in configure_model): FSDP2 on a 1-D mesh is served, tensor parallelism is not
        sharded = sharding_refusal(None, self._model, serves_fsdp2=True)
        message = None if sharded is None else sharded_message("ExplanationMonitor", sharded, serves_fsdp2=True)
        message = message or inference_tensors_problem(self._model)  # FSDP2 gathered under inference_mode
        if message is not None:  # the same on every rank, so every rank stops here: no collective is left waiting
            self._disable(message, LightningXAIError(message))
            return
        distributed = trainer.world_size > 1
        if self.probe.count == 0:
            self.policy.warn_once("probe", "no validation samples were seen on this process, nothing to explain")
            if not distributed:
                return
        probe = self.probe.collate(self._modality)
        with runtime.preserved_rng(pl_module.device), runtime.precision_context(trainer.strategy):
            result = engine.explain_probe_set(
                self._model, probe, self._active, self._scoreboard,
                family=self._family, modality=self._modality, device=pl_module.device, target=self.target,
                batch_size=self.batch_size, token_budget=self.token_budget, num_heatmaps=self.num_heatmaps,
                keep_samples=trainer.is_global_zero, previous_maps=self._previous_maps, policy=self.policy,
                distributed=distributed,
            )
            add_completion_tokens(  # causal LMs: one map per completion token of the first heatmap samples
                result, self._model, probe, self._active, family=self._family, modality=self._modality,
                keys=self.keys, num_samples=self.completion_token_samples, max_tokens=self.completion_token_limit,
                device=pl_module.device, batch_size=self.batch_size, token_budget=self.token_budget,
                policy=self.policy,
            )
        runtime.release_free_memory()
        self._previous_maps = result.maps
        logged = self._log(trainer, pl_module, result)
        if trainer.is_global_zero and self._sinks:
            where = dict(epoch=int(trainer.current_epoch), step=runtime.logging_step(trainer), keys=self.keys,
                         policy=self.policy)
            if self._in_background(pl_module):
                self._publisher.submit(publish, self._sinks, result, dict(logged), **where)
            else:
                publish(self._sinks, result, logged, **where)

    def _in_background(self, pl_module: Any) -> bool:
        """Whether this validation's heatmaps are published on the worker thread (see ``publish_in_background``)."""
        if self.publish_in_background is not None:
            return self.publish_in_background
        device = getattr(pl_module, "device", None)
        on_accelerator = device is not None and torch.device(device).type != "cpu"
        return on_accelerator and not any(isinstance(sink, WandbSink) for sink in self._sinks)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Wait for the heatmaps still being published (before Lightning closes the loggers)."""
        self._publisher.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Finish publishing what was computed (the loggers close next); a publishing error is warned, not raised."""
        try:
            self._publisher.close()
        except Exception as error:  # the run's own exception is the one to surface
            self.policy.warn_once("publish", f"publishing the heatmaps failed too: {type(error).__name__}: {error}")

    def state_dict(self) -> dict[str, Any]:
        """History of logged values and the probe set (CPU tensors), so a resumed run explains the same samples."""
        return {
            "history": {int(k): dict(v) for k, v in self.history.items()},
            "run_id": self.run_id,
            **self.probe.state_dict(),
            "previous_maps": engine.maps_state(self._previous_maps),
            "world_size": runtime.world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore history and probe set; keys missing from older checkpoints keep their defaults.

        The probe set is restored only when the checkpoint was written by a single process and this run is single
        process too: under DDP the checkpoint holds rank 0's shard only, so every rank collects its own shard again
        (the distributed sampler gives each rank the same samples as before when the loader does not shuffle).
        """
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}
        self.run_id = state_dict.get("run_id", self.run_id)
        for sink in self._sinks:  # restored after setup: the files sink continues this run's own record
            if hasattr(sink, "run_id"):
                sink.run_id = self.run_id
        if state_dict.get("world_size", 1) != 1 or runtime.world_size() != 1:
            return
        if self.probe.load_state_dict(state_dict):
            self._previous_maps = engine.maps_from_state(state_dict.get("previous_maps", {}))

    def _log(self, trainer: Any, pl_module: Any, result: engine.EpochResult) -> dict[str, float]:
        """``pl_module.log`` every finite value (skipped-sample counts included); record them in :attr:`history`."""
        logged: dict[str, float] = {}
        for key, value in result.values.items():
            if torch.isnan(value):
                continue
            pl_module.log(key, value, prog_bar=False, logger=bool(trainer.loggers), on_epoch=True, on_step=False)
            logged[key] = float(value)
        self.history[int(trainer.current_epoch)] = logged
        return logged


# default_model_getter: its historical import path.
__all__ = ["ExplanationMonitor", "default_model_getter"]
