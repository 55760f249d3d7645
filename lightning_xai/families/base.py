"""The model family: everything that differs between transformer families, in one place per family.

Explainers, metrics and the monitor never inspect class names; they ask the model's family:

* how attention is captured for one pass (:attr:`ModelFamily.capture_class`);
* which token row carries the prediction (:meth:`ModelFamily.prediction_rows`: the ``[CLS]`` row of an encoder,
  a decoder's last real token), as an index per sample;
* how any layer's tokens are read out through the model's OWN head (:meth:`ModelFamily.read_out`, LeGrad);
* the LRP reading points and the table {module type -> rule kind} (:attr:`ModelFamily.lrp_rules`);
* the modality (text, or vision with its patch grid and prefix tokens: :meth:`ModelFamily.build_modality`);
* what the family cannot provide (:meth:`ModelFamily.missing_capabilities`), so that a method needing it is refused
  at setup with the method, the family, the reason and what to do (:meth:`ModelFamily.check`) instead of
  producing a silent wrong map.

A family is one file defining a :class:`ModelFamily` subclass plus one ``register_family`` line in
``lightning_xai/families/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import transformers.activations as hf_activations
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from lightning_xai.capture.base import AttentionCapture, AttentionRecord
from lightning_xai.capture.hf import HFAttentionCapture
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.types import ModelInputs

if TYPE_CHECKING:
    from lightning_xai.adapters import AdaptedBatch
    from lightning_xai.modalities.base import Modality

#: What explainers may need from a family (``Explainer.needs``), and what each means.
CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "attentions": "post-softmax attention maps [B, H, N, N] over the model's one token axis",
        "attention_gradients": "post-softmax attention maps (per window where the model attends in windows, with "
        "where each window lies on the token grid) and the explained logit's gradients w.r.t. them",
        "attention_outputs": "a pass on the model's sdpa attention keeping each call's q, k, v and output over one "
        "token axis (the maps rebuilt in blocks of rows, never all at once)",
        "prediction_row": "the token row that carries the prediction (the [CLS] row, a decoder's last token)",
        "hidden_states": "the output tokens of every transformer layer",
        "head_readout": "reading any layer's tokens out through the model's own final norm and head",
        "input_embeddings": "input (word or patch) embeddings on the model's token axis",
        "lrp_rules": "an LRP rule for every parametrised module type and a relevance reading point",
        "own_pass": "extra forward passes of the model with scoped patches",
    }
)

#: How LRP treats a module type: ``"layer_norm"`` (LN-rule: the standard deviation is a constant), ``"linear"``
#: (LRP-0 / epsilon / gamma; ``nn.Linear``, ``nn.Conv*`` and HF's ``Conv1D``), ``"activation"`` (identity rule for
#: element-wise activations), ``"norm_identity"`` (a normalisation whose output is its input times a factor,
#: e.g. RMSNorm: identity rule with the factor constant, for CP-LRP and AttnLRP alike), ``"gated_mlp"`` (the
#: element-wise product of a gated MLP: uniform rule for AttnLRP, no relevance through the gate for CP-LRP),
#: ``"functional_activation"`` (a module whose own forward calls element-wise activations as functions, e.g.
#: RoBERTa's classification head ``torch.tanh``: the identity rule is applied to those calls, only while that
#: module runs), ``"none"`` (no rule needed: embeddings, whose output is where relevance is read).
LRPRule = Literal["layer_norm", "linear", "activation", "norm_identity", "gated_mlp", "functional_activation", "none"]

#: Activation modules of ``torch.nn`` that the identity rule covers.
TORCH_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.GELU, nn.ReLU, nn.Tanh, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.ELU)


def _hf_activation_modules() -> tuple[type[nn.Module], ...]:
    """Element-wise activation modules of ``transformers.activations`` (``LinearActivation`` is the identity)."""
    return tuple(
        cls
        for cls in vars(hf_activations).values()
        if isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and cls.__module__ == hf_activations.__name__
        and cls is not getattr(hf_activations, "LinearActivation", None)
    )


#: The rule table shared by the families (BERT, RoBERTa, DistilBERT, ViT, DeiT, GPT-2; decoders add RMSNorm and
#: gated MLPs by structure): every parametrised module type they contain, plus the element-wise activations.
ENCODER_LRP_RULES: Mapping[type[nn.Module], LRPRule] = MappingProxyType(
    {
        nn.LayerNorm: "layer_norm",
        nn.Linear: "linear",
        nn.Conv1d: "linear",
        nn.Conv2d: "linear",
        Conv1D: "linear",  # GPT-2's projections
        nn.Embedding: "none",
        **dict.fromkeys(TORCH_ACTIVATIONS + _hf_activation_modules(), "activation"),
    }
)


class ModelFamily(ABC):
    """One transformer family, bound to one model instance.

    Subclasses set the class attributes (:attr:`model_classes` among them), implement :meth:`read_out` and
    :meth:`build_modality`,
    and override the other methods where the family differs from an encoder with a ``[CLS]`` token at row 0.

    Args:
        model: the model to explain (an instance :meth:`matches` accepted).
    """

    #: Registry name, used in messages (``"bert"``).
    name: ClassVar[str]
    #: The model classes (task heads) the family describes; subclasses match too (see :meth:`matches`).
    model_classes: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: Model classes the family covers, listed in "unsupported model" errors.
    examples: ClassVar[str]
    #: ``"text"`` or ``"vision"``.
    modality: ClassVar[str]
    #: Capabilities (keys of :data:`CAPABILITIES`) the family can never provide -> why.
    unsupported: ClassVar[Mapping[str, str]] = MappingProxyType({})
    #: LRP: module type -> rule kind (looked up along each module's class hierarchy).
    lrp_rules: ClassVar[Mapping[type[nn.Module], LRPRule]] = ENCODER_LRP_RULES
    #: How attention is recorded for one pass.
    capture_class: ClassVar[type[AttentionCapture]] = HFAttentionCapture
    #: The output every pass explains whatever target is asked (a causal LM's completion), or None (any class).
    explained_class: ClassVar[int | None] = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    # ---------------------------------------------------------------------------------------------- identification

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True when this family describes ``model``: an instance of one of :attr:`model_classes`."""
        return isinstance(model, cls.model_classes)

    # ---------------------------------------------------------------------------------------------- forward pass

    def capture(self) -> AttentionCapture:
        """The attention capture of this model (a scoped recording context for one pass)."""
        return self.capture_class(self.model)

    def prediction_rows(self, inputs: ModelInputs, valid_mask: Tensor) -> Tensor:
        """``[B]`` long: the token row whose output the head reads (default: row 0, the ``[CLS]``/class token).

        A family whose prediction is read from several rows (a causal LM's completion) returns ``[B, N]`` float
        weights over the rows instead; the attention-row methods then read the weighted mean of those rows.

        Args:
            inputs: the batch's model inputs.
            valid_mask: ``[B, N]`` real (non-padding) tokens of the batch.
        """
        return torch.zeros(valid_mask.shape[0], dtype=torch.long, device=valid_mask.device)

    def token_count(self, inputs: ModelInputs, record: AttentionRecord) -> int:
        """Tokens on the model's token axis in this pass: the recorded attention's by default.

        A family whose attention maps are not over one token axis (Swin's windows) counts them otherwise.
        """
        if record.attentions:
            return int(record.attentions[0].shape[-1])
        return int(record.calls[0].key.shape[-2])  # a pass on sdpa (AttentionCapture.stream): no maps

    @abstractmethod
    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """Logits ``[B, C]`` from any layer's tokens ``[B, N, D]``, through the model's own final norm and head.

        Applied to the last layer's output it reproduces the model's logits. No dropout (deterministic whatever
        the train mode). ``rows`` are :meth:`prediction_rows`.
        """

    def layer_logits(self, hidden: Tensor, rows: Tensor, inputs: ModelInputs) -> Tensor:
        """:meth:`read_out`, given the pass's inputs too (LeGrad calls this).

        A family whose read-out needs the inputs (a causal LM's completion tokens) overrides it.
        """
        return self.read_out(hidden, rows)

    # ---------------------------------------------------------------------------------------------- batches

    def adapt_batch(self, batch: AdaptedBatch) -> AdaptedBatch:
        """The adapted batch as this model takes it (default: unchanged; a causal LM's labels become an input)."""
        return batch

    def skipped_rows(self, inputs: ModelInputs) -> tuple[Tensor, str] | None:
        """``([B] bool, reason)``: samples with nothing to explain (they are counted as skipped), or None."""
        return None

    def explained_target(self, target: Any) -> Any:
        """The target a pass explains: ``target``, or :attr:`explained_class` where the family fixes one.

        A class index other than the fixed one is refused (``"predicted"`` and ``"label"`` mean the fixed one).
        """
        fixed = self.explained_class
        if fixed is None:
            return target
        if isinstance(target, int) and not isinstance(target, bool) and target != fixed:
            raise LightningXAIError(
                f"A {type(self.model).__name__} (model family {self.name!r}) always explains output {fixed}; "
                f"target={target} cannot be explained: leave target at 'predicted'."
            )
        return fixed

    # ---------------------------------------------------------------------------------------------- LRP

    def lrp_target(self) -> AbstractContextManager[Any]:
        """A context inside which the model outputs what LRP explains (default: its logits, unchanged)."""
        return nullcontext()

    @property
    def lrp_explains_logits(self) -> bool:
        """Whether LRP explains the model's own logits: :meth:`lrp_target` is the default no-op.

        Then an LRP pass also yields those logits and ``explain()`` may skip its shared forward (a causal LM's LRP
        explains other logits than its scorer returns).
        """
        return type(self).lrp_target is ModelFamily.lrp_target

    def embeddings_output(self) -> nn.Module:
        """The module whose output is the encoder's input token sequence (LRP ``read_at="embeddings_output"``)."""
        base = getattr(self.model, "base_model", self.model)
        embeddings = getattr(base, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            raise LightningXAIError(
                f"The {self.name} family found no embeddings module in {type(self.model).__name__}: "
                "use read_at='word_embeddings'."
            )
        return embeddings

    def word_embeddings(self) -> nn.Module:
        """``model.get_input_embeddings()``: word embeddings for text, patch embeddings for vision."""
        get = getattr(self.model, "get_input_embeddings", None)
        module = get() if callable(get) else None
        if not isinstance(module, nn.Module):
            raise LightningXAIError(f"{type(self.model).__name__} has no get_input_embeddings()")
        return module

    def lrp_rule(self, module: nn.Module) -> LRPRule | None:
        """The rule kind of ``module`` from :attr:`lrp_rules` (its class or the nearest base class), else None."""
        for cls in type(module).__mro__:
            rule = self.lrp_rules.get(cls)
            if rule is not None:
                return rule
        return None

    def modules_without_lrp_rule(self) -> list[type[nn.Module]]:
        """Types of the modules with their own parameters that :attr:`lrp_rules` does not cover.

        Such a module (say an RMSNorm) would silently get a plain gradient, so LRP is refused for the model.
        """
        missing: dict[type[nn.Module], None] = {}
        for module in self.model.modules():
            has_parameters = next(module.parameters(recurse=False), None) is not None
            if has_parameters and self.lrp_rule(module) is None and not _is_container(module):
                missing[type(module)] = None
        return list(missing)

    # ---------------------------------------------------------------------------------------------- modality

    @abstractmethod
    def build_modality(self, tokenizer: Any | None = None, removal: str | float | None = None) -> Modality:
        """The token bookkeeping of this model's inputs (text needs the tokenizer).

        Args:
            tokenizer: the text model's tokenizer.
            removal: how the perturbation metrics remove tokens by default (None: the family's default; text:
                ``TextRemoval``, vision: a baseline).
        """

    def removal_caveat(self, removal: str | float | None) -> str | None:
        """What perturbation metrics cannot measure with ``removal`` on this family (None: nothing to say).

        Warned once at setup (:func:`~lightning_xai.run.runnable`) for every metric that removes tokens this way.
        """
        return None

    # ---------------------------------------------------------------------------------------------- refusals

    def missing_capabilities(self) -> dict[str, str]:
        """Capabilities this model instance cannot provide -> why (the class's :attr:`unsupported` and more)."""
        missing = dict(self.unsupported)
        if "attention_outputs" not in missing:
            streaming = self.capture_class.streaming_refusal(self.model)
            if streaming is not None:
                missing["attention_outputs"] = streaming
        if "lrp_rules" not in missing:
            uncovered = self.modules_without_lrp_rule()
            if uncovered:
                names = ", ".join(sorted(cls.__name__ for cls in uncovered))
                missing["lrp_rules"] = f"no LRP rule is defined for the module types {names}"
        return missing

    def refusal(self, method: str, needs: Iterable[str]) -> str | None:
        """Why ``method`` (needing ``needs``) cannot run on this model, or None when it can."""
        missing = self.missing_capabilities()
        reasons = [f"it needs {CAPABILITIES.get(need, need)}, but {missing[need]}" for need in needs if need in missing]
        if not reasons:
            return None
        return (
            f"{method!r} cannot explain a {type(self.model).__name__} (model family {self.name!r}): "
            + "; ".join(reasons)
            + ". What to do: drop this method for this model (the other methods still run), or describe the "
            "missing piece in the family file lightning_xai/families/" + f"{self.name}.py."
        )

    def check(self, explainers: Iterable[Any]) -> None:
        """Raise :class:`~lightning_xai.errors.UnsupportedMethodError` for every explainer this model cannot serve.

        Each explainer is asked for ``requirements()`` (its ``needs``); all refusals are reported together.
        """
        refusals = [
            reason
            for explainer in explainers
            if (reason := self.refusal(explainer.name, explainer.requirements())) is not None
        ]
        if refusals:
            raise UnsupportedMethodError("\n".join(refusals))


def _is_container(module: nn.Module) -> bool:
    """Modules whose own parameters are tokens or positions added to the sequence (ViT's ``cls_token``), not a map.

    Such parameters enter the network additively below the reading point (their relevance is absorbed there), so
    they need no propagation rule: recognised by having sub-modules as well as their own parameters.
    """
    return next(module.children(), None) is not None
