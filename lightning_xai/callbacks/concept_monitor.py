"""Concept Monitor: attention-weighted TCAV (TTCAV) tracked epoch by epoch while fine-tuning.

A sibling of :class:`~lightning_xai.callbacks.ExplanationMonitor` on the same engine pieces (probe set, model
family, batch adapters, RNG and precision handling): at the end of each scheduled validation it refits the CAVs
(the representation changes during training) and scores every (concept, class, layer) on a fixed probe set
(Eggen et al. 2025, method 2; :mod:`lightning_xai.concepts.ttcav`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lightning_xai import _runtime as runtime
from lightning_xai._distributed import sharded_message, sharding_refusal
from lightning_xai.adapters import AdaptedBatch, default_model_getter
from lightning_xai.callbacks._probe_hooks import ProbeHooks
from lightning_xai.callbacks.explanation_monitor import _CALLBACK_BASES
from lightning_xai.concepts.ttcav import (
    ConceptVectors,
    TTCAVScore,
    check_family,
    fit_concept_vectors,
    token_sensitivities,
    ttcav_scores,
)
from lightning_xai.errors import LightningXAIError
from lightning_xai.families import ModelFamily, resolve_family
from lightning_xai.keys import LogKeys
from lightning_xai.modalities import Modality
from lightning_xai.probe import ProbeSet, forward_parameters
from lightning_xai.records import EpochReport, ProbeSample
from lightning_xai.run import label_names
from lightning_xai.sinks import Sink, sinks_for
from lightning_xai.types import Explanation, ModelInputs, logits_of
from lightning_xai.viz.render import render_sample

__all__ = ["ConceptMonitor", "ConceptSet", "ConceptSource"]

#: A concept set: sentences or word lists (text models), or images ``[n, C, H, W]`` in the model's input space
#: (vision models).
ConceptSet = Sequence[str] | Sequence[Sequence[str]] | Tensor


@runtime_checkable
class ConceptSource(Protocol):
    """Builds concept sets on demand: what a YAML recipe passes as ``concepts`` where tensors cannot be written.

    Any object with these two methods will do (e.g. :class:`lightning_xai.recipes.DigitConcepts`, which
    jsonargparse / LightningCLI instantiate from ``class_path`` / ``init_args``). :class:`ConceptMonitor` calls both
    once, at construction, and checks what they return like sets given directly.

    Example:
        >>> class Two:
        ...     def concept_sets(self):
        ...         return {"a": ["a b", "a c"], "b": ["b c", "b d"]}
        ...     def negative_set(self):
        ...         return None
        >>> isinstance(Two(), ConceptSource), ConceptMonitor(Two()).concept_names
        (True, ['a', 'b'])
    """

    def concept_sets(self) -> Mapping[str, ConceptSet]:
        """Concept name -> its examples (as :class:`ConceptMonitor`'s ``concepts``)."""
        ...

    def negative_set(self) -> ConceptSet | None:
        """The negative/random set, used when the monitor is given no ``negatives``; None: none."""
        ...


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _describe(examples: object) -> str:
    if isinstance(examples, Tensor):
        return f"a tensor of shape {tuple(examples.shape)}"
    return f"a {type(examples).__name__}"


def _check_set(name: str, examples: object) -> str:
    """The set's kind (``"text"`` or ``"vision"``); a clear error for an empty or one-example set."""
    if isinstance(examples, Tensor):
        if examples.dim() != 4 or not examples.is_floating_point():
            raise ValueError(
                f"concept set {name!r}: images must be a float tensor [n, channels, height, width]; got "
                f"{_describe(examples)} of dtype {examples.dtype}"
            )
        count, kind = int(examples.shape[0]), "vision"
    elif isinstance(examples, Sequence) and not isinstance(examples, str):
        words = all(isinstance(e, Sequence) and not isinstance(e, str) for e in examples) and len(examples) > 0
        if words:  # word lists: every item a list of str
            if not all(isinstance(w, str) for e in examples for w in e):
                raise ValueError(f"concept set {name!r}: a word list must hold words (str)")
            if any(not any(w.strip() for w in e) for e in examples):
                raise ValueError(f"concept set {name!r}: holds an empty word list")
        elif not all(isinstance(e, str) for e in examples):
            raise ValueError(f"concept set {name!r}: a text set must be a list of sentences (str) or of word lists")
        elif any(not e.strip() for e in examples):
            raise ValueError(f"concept set {name!r}: holds an empty sentence")
        count, kind = len(examples), "text"
    else:
        raise ValueError(
            f"concept set {name!r} must be a list of sentences (text models) or an image tensor [n, C, H, W] "
            f"(vision models); got {_describe(examples)}"
        )
    if count == 0:
        raise ValueError(f"concept set {name!r} is empty: a CAV needs examples of the concept")
    if count == 1:
        raise ValueError(f"concept set {name!r} has one example: a CAV needs at least 2 (the paper uses 120)")
    return kind


class ConceptMonitor(ProbeHooks, *_CALLBACK_BASES):  # type: ignore[misc]
    """Track attention-weighted TCAV scores (TTCAV, Eggen et al. 2025) during validation.

    At the end of every scheduled validation the CAVs of every concept are refitted on the current model (from the
    block outputs of every real token of the concept's examples, against ``negatives`` or, without them, against
    the other concepts), with ``num_random_cavs`` random CAVs per layer, and the probe set (the first
    ``num_samples`` validation samples, the same every epoch) is scored for each sample's class. Logged with
    ``pl_module.log`` and kept in :attr:`history`:

    * ``{log_prefix}ttcav/<concept>/<class>/layer_<l>``: the mean over the concept's CAVs of the fraction of
      class samples whose token-mean of ``D = a · S'`` is positive (0.5: no directional sensitivity);
    * ``.../layer_<l>/p_value``: two-sided one-sample t-test of the CAVs' scores against 0.5 (not logged when every
      CAV scores the same: the authors' test is then undefined);
    * ``.../layer_<l>/p_value_random``: two-sided two-sample t-test against the random CAVs' scores (TCAV's);
    * ``{log_prefix}ttcav/cost/seconds``: the wall time of the epoch's TTCAV work (CAV fits and scoring);
    * heatmaps of ``D`` (mean over a concept's CAVs, the sample's own class) for the first ``num_heatmaps`` probe
      samples to TensorBoard / W&B: ``{log_prefix}ttcav/<concept>/layer_<l>/heatmap/sample_NN``.

    Monitoring changes nothing about training: passes run in eval mode with the attention backend, train modes and
    hooks restored, gradients by ``torch.autograd.grad`` (no parameter ``.grad``), the global RNG restored.

    Args:
        concepts: concept name -> its examples: sentences or word lists (tokenized as pre-split words) for text
            models, images ``[n, C, H, W]`` (already preprocessed like the model's inputs) for vision models; at
            least 2 examples each. Names may hold letters, digits, ``_``, ``-`` and ``.``. Or a
            :class:`ConceptSource` that builds them (how a YAML recipe gives image sets, e.g.
            :class:`lightning_xai.recipes.DigitConcepts`); its ``negative_set()`` is used when ``negatives`` is None.
        negatives: a random/negative set of the same kind; None: the source's negative set, else relative CAVs
            against the other concepts (then at least two concepts are needed).
        layers: block indices to score (0-based, negative from the end); None: every block.
        classes: classes to report; None: every class present in the probe set.
        num_samples: probe samples (from the first validation dataloader).
        num_cavs: CAVs per concept and layer (50 in the paper; fewer keep monitoring cheap).
        num_random_cavs: random CAVs per layer for the two-sample test (0: no such test).
        num_heatmaps: probe samples whose ``D`` maps are logged as images (0: none).
        heatmap_layers: the layers with heatmaps (None: every scored layer). A layer whose maps are 0 on every
            content token (the last block of an encoder read at its prediction row) is not drawn, with a warning.
        every_n_epochs: score every n-th epoch during ``fit`` (always under ``validate``).
        target: each probe sample is scored for its ``"label"`` (the authors: images of the target class) or its
            ``"predicted"`` class.
        batch_size: examples per forward (and backward).
        max_length: tokens kept per concept sentence.
        seed: seed of the CAVs' negative draws (private generators).
        batch_adapter: ``batch -> AdaptedBatch`` for batch formats the default adapter does not understand.
        model_getter: ``pl_module -> HF model`` (default: the outermost ``PreTrainedModel`` inside).
        tokenizer: the text model's tokenizer (default: ``datamodule.tokenizer`` or ``pl_module.tokenizer``).
        log_prefix: prefix of every logged key.
        on_error: ``"warn"``: a failing epoch is reported once and training goes on; ``"raise"``: it surfaces.

    Under DDP every rank scores its own probe shard and rank zero's values are logged (warned at ``setup``).
    Sharded training (FSDP, DeepSpeed ZeRO-3) is refused at ``setup``.

    Example:
        >>> monitor = ConceptMonitor({"zx": ["a zx b", "zx c d"], "plain": ["a b", "c d"]}, num_cavs=5)
        >>> monitor.concept_names
        ['zx', 'plain']
        >>> ConceptMonitor({"zx": ["only one"]}, negatives=["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: concept set 'zx' has one example: a CAV needs at least 2 (the paper uses 120)
    """

    def __init__(
        self,
        concepts: Mapping[str, ConceptSet] | ConceptSource,
        negatives: ConceptSet | None = None,
        layers: Sequence[int] | None = None,
        classes: Sequence[int] | None = None,
        num_samples: int = 64,
        num_cavs: int = 10,
        num_random_cavs: int = 10,
        num_heatmaps: int = 2,
        heatmap_layers: Sequence[int] | None = None,
        every_n_epochs: int = 1,
        target: Literal["label", "predicted"] = "label",
        batch_size: int = 32,
        max_length: int = 128,
        seed: int = 0,
        batch_adapter: Callable[[Any], AdaptedBatch | Any] | None = None,
        model_getter: Callable[[Any], nn.Module] | None = None,
        tokenizer: Any | None = None,
        log_prefix: str = "xai/",
        on_error: runtime.OnError = "warn",
    ) -> None:
        super().__init__()
        self.policy = runtime.ErrorPolicy(on_error, owner="ConceptMonitor")
        for arg, value, minimum in (
            ("num_samples", num_samples, 1),
            ("num_cavs", num_cavs, 1),
            ("num_random_cavs", num_random_cavs, 0),
            ("num_heatmaps", num_heatmaps, 0),
            ("every_n_epochs", every_n_epochs, 1),
            ("batch_size", batch_size, 1),
            ("max_length", max_length, 2),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")
        if target not in ("label", "predicted"):
            raise ValueError(f"target must be 'label' or 'predicted'; got {target!r}")
        self.source: ConceptSource | None = None
        if not isinstance(concepts, Mapping) and isinstance(concepts, ConceptSource):
            self.source = concepts
            concepts = concepts.concept_sets()
            if negatives is None:
                negatives = self.source.negative_set()
            if not isinstance(concepts, Mapping):
                raise ValueError(
                    f"{type(self.source).__name__}.concept_sets() must return a mapping {{concept name: examples}}; "
                    f"got {_describe(concepts)}"
                )
        if not isinstance(concepts, Mapping) or not concepts:
            raise ValueError(
                "concepts must be a non-empty mapping {concept name: examples} or a ConceptSource (an object with "
                f"concept_sets() and negative_set()); got {_describe(concepts)}"
            )
        kinds = set()
        for name, examples in concepts.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"concept name {name!r}: use letters, digits, '_', '-' and '.' (it is a log key)")
            kinds.add(_check_set(name, examples))
        if negatives is not None:
            kinds.add(_check_set("negatives", negatives))
        elif len(concepts) < 2:
            raise ValueError(
                "one concept without negatives: pass negatives=... (a random set), or two concepts or more for "
                "relative CAVs"
            )
        if len(kinds) > 1:
            raise ValueError("concept sets mix sentences and images: every set must be of the model's modality")
        self.concepts = dict(concepts)
        self.negatives = negatives
        self.kind = kinds.pop()
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.classes = None if classes is None else [int(k) for k in classes]
        self.num_samples = num_samples
        self.num_cavs = num_cavs
        self.num_random_cavs = num_random_cavs
        self.num_heatmaps = num_heatmaps
        self.heatmap_layers = None if heatmap_layers is None else [int(layer) for layer in heatmap_layers]
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.batch_adapter = batch_adapter
        self.model_getter = model_getter
        self.tokenizer = tokenizer
        self.log_prefix = log_prefix
        self.on_error: runtime.OnError = on_error
        #: epoch -> {logged key: value}.
        self.history: dict[int, dict[str, float]] = {}
        #: The scores of the last scored validation.
        self.last_scores: list[TTCAVScore] = []
        self.probe = ProbeSet(num_samples)
        self._model: nn.Module | None = None
        self._family: ModelFamily | None = None
        self._modality: Modality | None = None
        self._concept_inputs: dict[str, ModelInputs] = {}
        self._negative_inputs: ModelInputs | None = None
        self._heatmap_layers: list[int] | None = None
        self._sinks: list[Sink] = []
        #: The CAVs of the last scored validation.
        self.last_vectors: ConceptVectors | None = None
        self._disabled_reason: str | None = None

    @property
    def concept_names(self) -> list[str]:
        """The concepts, in order."""
        return list(self.concepts)

    @property
    def state_key(self) -> str:
        """Distinct per concept configuration, so several monitors can share one checkpoint."""
        return self._generate_state_key(concepts=self.concept_names, layers=self.layers)

    def key(self, concept: str, class_index: int, layer: int, suffix: str = "") -> str:
        """The logged key of one (concept, class, layer): ``{log_prefix}ttcav/<concept>/<class>/layer_<l>``.

        Example:
            >>> ConceptMonitor({"a": ["x y", "y"], "b": ["z", "w"]}).key("a", 1, 3, "p_value")
            'xai/ttcav/a/1/layer_3/p_value'
        """
        base = f"{self.log_prefix}ttcav/{concept}/{class_index}/layer_{layer}"
        return f"{base}/{suffix}" if suffix else base

    # ------------------------------------------------------------------------------------------------ setup

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Resolve the model's family, check it serves TTCAV and that the concept sets fit the model; encode them."""
        model = (self.model_getter or default_model_getter)(pl_module)
        sharded = sharding_refusal(getattr(trainer, "strategy", None), model, serves_fsdp2=False)
        if sharded is not None:  # its concept passes do not run under gathered parameters: no sharding is served
            raise LightningXAIError(sharded_message("ConceptMonitor", sharded, serves_fsdp2=False))
        family = resolve_family(model)
        check_family(family)
        if family.modality != self.kind:
            given = "sentences" if self.kind == "text" else "images"
            raise ValueError(
                f"the concept sets are {given}, but {type(model).__name__} is a {family.modality} model: pass "
                + ("lists of sentences" if family.modality == "text" else "image tensors [n, C, H, W]")
            )
        tokenizer = self._tokenizer(trainer, pl_module)
        if family.modality == "text" and tokenizer is None:
            raise LightningXAIError(
                "ConceptMonitor needs the text model's tokenizer to encode the concept sentences: pass tokenizer=..., "
                "or give the datamodule or the LightningModule a `tokenizer` attribute."
            )
        modality = family.build_modality(tokenizer)
        keys = forward_parameters(model)
        encode = self._encoder(model, tokenizer, keys)
        self._concept_inputs = {name: encode(name, examples) for name, examples in self.concepts.items()}
        self._negative_inputs = None if self.negatives is None else encode("negatives", self.negatives)
        self._model, self._family, self._modality = model, family, modality
        self.probe.input_keys = keys
        if self.heatmap_layers is not None:
            count = int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)
            self._heatmap_layers = [layer % count if count else layer for layer in self.heatmap_layers]
        if runtime.world_size() > 1:  # said once, so nobody reads a shard's scores as the whole probe set's
            self.policy.warn_once(
                "shard",
                f"ConceptMonitor under {runtime.world_size()} processes scores each rank's own probe shard and logs "
                "rank zero's: the TTCAV scores and p-values come from rank zero's samples only. For scores over the "
                "whole probe set, run trainer.validate(...) on one device with this monitor.",
            )
        # images go to the loggers' sinks (TensorBoard, W&B) on rank zero; no files: they belong to one monitor
        self._sinks = sinks_for(trainer.loggers) if getattr(trainer, "is_global_zero", True) else []

    def _encoder(self, model: nn.Module, tokenizer: Any, keys: set[str] | None) -> Callable[[str, Any], ModelInputs]:
        config = getattr(model, "config", None)
        config = getattr(config, "vision_config", None) or config  # CLIP-style models keep the image size there

        def encode(name: str, examples: Any) -> ModelInputs:
            if isinstance(examples, Tensor):
                channels = getattr(config, "num_channels", None)
                size = getattr(config, "image_size", None)
                size = (size, size) if isinstance(size, int) else tuple(size) if size is not None else None
                shape = tuple(examples.shape[1:])
                if (channels is not None and shape[0] != channels) or (size is not None and shape[1:] != size):
                    raise ValueError(
                        f"concept set {name!r}: images of shape {shape} do not fit {type(model).__name__}, which "
                        f"takes [{channels}, {size[0] if size else '?'}, {size[1] if size else '?'}]: preprocess "
                        "them like the model's inputs"
                    )
                return {"pixel_values": examples.detach().float().cpu()}
            words = not isinstance(examples[0], str)  # word lists: the tokenizer's pre-split words
            encoded = tokenizer(
                [list(e) for e in examples] if words else list(examples), is_split_into_words=words, padding=True,
                truncation=True, max_length=self.max_length, return_tensors="pt",
            )  # fmt: skip
            return {k: v for k, v in encoded.items() if isinstance(v, Tensor) and (keys is None or k in keys)}

        return encode

    # ------------------------------------------------------------------------------------------------ hooks

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Refit the CAVs, score the probe set, log the scores and p-values."""
        if trainer.sanity_checking or self._disabled_reason is not None:
            return
        self.probe.close()
        if not self._scheduled(trainer):
            return
        if self._model is None:  # setup() not called, e.g. when used outside a Trainer
            self.setup(trainer, pl_module, "validate")
        if self.probe.count == 0:
            self.policy.warn_once("probe", "no validation samples were seen on this process, nothing to score")
            return
        started = time.perf_counter()
        epoch = int(trainer.current_epoch)
        samples: list[ProbeSample] = []
        try:
            with runtime.preserved_rng(pl_module.device), runtime.precision_context(trainer.strategy):
                scores = self.compute()
                seconds = time.perf_counter() - started
                if self.num_heatmaps and self._sinks and self.last_vectors is not None:
                    samples = self.heatmap_samples(self.last_vectors)
        except Exception as error:  # noqa: BLE001 - reported through the policy (warn once, or raise)
            self.policy.handle("TTCAV", error)
            return
        finally:
            runtime.release_free_memory()
        self.last_scores = scores
        if samples:
            self._publish(samples, epoch, runtime.logging_step(trainer))
        values = {self.log_prefix + "ttcav/cost/seconds": seconds}
        for item in scores:
            values[self.key(item.concept, item.class_index, item.layer)] = item.score
            values[self.key(item.concept, item.class_index, item.layer, "p_value")] = item.p_value
            values[self.key(item.concept, item.class_index, item.layer, "p_value_random")] = item.p_value_random
        logged = {}
        for key, value in values.items():
            if math.isnan(value):
                continue
            pl_module.log(key, value, logger=bool(trainer.loggers), on_epoch=True, on_step=False, rank_zero_only=True)
            logged[key] = float(value)
        self.history[epoch] = logged

    def compute(self) -> list[TTCAVScore]:
        """Fit the CAVs on the current model and score the probe set (after ``setup`` and a validation pass)."""
        assert self._model is not None and self._family is not None and self._modality is not None
        model, family, modality = self._model, self._family, self._modality
        vectors = fit_concept_vectors(
            model, self._concept_inputs, self._negative_inputs, self.layers, num_cavs=self.num_cavs,
            num_random_cavs=self.num_random_cavs, seed=self.seed, family=family, modality=modality,
            batch_size=self.batch_size,
        )  # fmt: skip
        self.last_vectors = vectors
        probe = self.probe.collate(modality)
        classes = self._classes(model, probe.inputs, probe.labels)
        keep = torch.ones_like(classes, dtype=torch.bool)
        if self.classes is not None:
            keep = torch.isin(classes, torch.tensor(self.classes))
        if not bool(keep.any()):
            return []
        inputs = {k: v[keep] for k, v in probe.inputs.items()}
        return ttcav_scores(
            model, inputs, classes[keep], vectors, family=family, modality=modality, batch_size=self.batch_size
        )

    def heatmap_samples(self, vectors: ConceptVectors) -> list[ProbeSample]:
        """The first ``num_heatmaps`` probe samples with their maps of ``D`` per concept and heatmap layer.

        Each map is ``D`` (the attention-weighted, rescaled token directional derivatives) for the sample's own
        class, averaged over the concept's CAVs, on the content tokens (text) or the patch grid (vision: prefix
        tokens dropped, as the authors' heatmaps drop ``[CLS]``). Map names: ``<concept>/layer_<l>``.
        """
        assert self._model is not None and self._family is not None and self._modality is not None
        modality, names = self._modality, list(vectors.concepts)
        probe = self.probe.collate(modality)
        count = min(self.num_heatmaps, self.probe.count)
        inputs = {k: v[:count] for k, v in probe.inputs.items()}
        labels = None if probe.labels is None else probe.labels[:count]
        classes = self._classes(self._model, inputs, labels)
        layers = [layer for layer in vectors.layers if self._heatmap_layers is None or layer in self._heatmap_layers]
        if not layers:
            return []
        stacked = {layer: torch.cat([vectors.concepts[name][layer] for name in names]) for layer in layers}
        sensitivity = token_sensitivities(
            self._model, inputs, stacked, classes, family=self._family, modality=modality
        )  # fmt: skip
        maps: dict[str, Explanation] = {}
        for layer in layers:
            item = sensitivity[layer]
            weighted = item.weighted.cpu()
            _valid, special = modality.token_masks(inputs, weighted.shape[-1])
            offset = 0
            content = item.valid.cpu() & ~special.cpu()
            for name in names:
                size = vectors.concepts[name][layer].shape[0]
                relevance = weighted[:, offset : offset + size].mean(1)
                offset += size
                method = f"{name}/layer_{layer}"
                if not bool((relevance.abs() * content).amax() > 0):  # a blank image would read as "no sensitivity"
                    self.policy.warn_once(
                        f"blank heatmap {method}",
                        f"TTCAV heatmaps of '{name}' at layer {layer} are not drawn: D is 0 on every content token "
                        "of every heatmap sample (at the last block only the prediction row reaches the head, so the "
                        "other tokens' directional derivatives are 0). Pick an earlier block in heatmap_layers.",
                    )
                    continue
                maps[method] = Explanation(method, relevance, item.valid.cpu(), special.cpu(), classes, signed=True)
        if not maps:
            return []
        label_name = label_names(self._model)
        return [
            ProbeSample(
                index=row,
                label=None if labels is None else label_name.get(int(labels[row]), str(int(labels[row]))),
                prediction=None,
                probability=None,
                explained=label_name.get(int(classes[row]), str(int(classes[row]))),
                signed=dict.fromkeys(maps, True),
                **modality.sample_view(inputs, row, maps),
            )
            for row in range(count)
        ]

    def _publish(self, samples: list[ProbeSample], epoch: int, step: int) -> None:
        """Render every map once and hand them to the loggers' sinks (tags ``<prefix>ttcav/<map>/heatmap/...``)."""
        keys = LogKeys(self.log_prefix + "ttcav/")
        heatmaps = []
        for sample in samples:
            for method in sample.maps:
                try:
                    heatmaps.append(render_sample(sample, method, epoch))
                except Exception as error:  # noqa: BLE001 - one failing heatmap never stops the others
                    self.policy.handle(f"rendering the {method!r} heatmap", error)
        report = EpochReport(epoch, step, {}, {}, samples, heatmaps, keys=keys)
        for sink in self._sinks:
            try:
                sink.log_epoch(report)
            except Exception as error:  # noqa: BLE001
                self.policy.handle(f"sink {type(sink).__name__}", error)

    def _classes(self, model: nn.Module, inputs: ModelInputs, labels: Tensor | None) -> Tensor:
        """Each probe sample's class: its label, or (``target="predicted"``, or no labels) its prediction."""
        if self.target == "label" and labels is not None:
            return labels.reshape(-1).long().cpu()
        if self.target == "label":
            self.policy.warn_once(
                "labels", "target='label' but the probe batches carry no labels: scoring each sample's prediction"
            )
        device = next(model.parameters()).device
        predicted = []
        size = int(next(iter(inputs.values())).shape[0])
        with torch.no_grad():
            for start in range(0, size, self.batch_size):
                chunk = {k: v[start : start + self.batch_size].to(device) for k, v in inputs.items()}
                with self._family.capture().record():  # type: ignore[union-attr]  # eval mode, restored
                    predicted.append(logits_of(model(**chunk)).argmax(-1).cpu())
        return torch.cat(predicted)

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """History of logged values and the probe set (CPU tensors), so a resumed run scores the same samples."""
        return {"history": {int(k): dict(v) for k, v in self.history.items()}, **self.probe.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore history and probe set (the probe set only in single-process runs)."""
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}
        if runtime.world_size() == 1:
            self.probe.load_state_dict(state_dict)
