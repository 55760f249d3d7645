r"""Layer-wise relevance propagation for transformers, as "gradient x input on a modified backward".

Two methods, one mechanism (Arras et al. 2025, arXiv:2502.15886: every rule below is an LRP rule rewritten so
that relevance at ANY tensor ``t`` equals ``t * dy_c/dt`` computed through a graph whose backward is modified):

* **CP-LRP** (Ali et al., "XAI for Transformers: Better Explanations through Conservative Propagation",
  ICML 2022, "LRP (AH+LN)"): attention probabilities are constants (AH-rule: ``q`` and ``k`` detached, so no
  relevance reaches queries and keys, and ``y_j = sum_i x_i p_ij`` is linear in the values); LayerNorm's standard
  deviation is a constant (LN-rule, the centering ``x - mean(x)`` stays linear and differentiable); linear layers
  LRP-0, or LRP-gamma with the forward-value-preserving trick ``z_g * (z / z_g).detach()`` where ``z_g`` uses
  ``W + gamma W^+`` and ``b + gamma b^+``.
* **AttnLRP** (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers",
  ICML 2024): identity rule (Eq. 9) on element-wise activations -- backward multiplies by ``f(x)/(x + eps)``
  instead of ``f'(x)``; identity rule on LayerNorm (sigma detached, as CP-LRP); uniform rule (Eq. 7, Prop. 3.3)
  on the two bilinear attention matmuls ``Q K^T`` and ``A V``: half of each product's relevance to each factor,
  which in gradient form is ``dq / 4``, ``dk / 4`` (they sit behind both products) and ``dv / 2``; the softmax
  keeps its ordinary gradient, whose gradient x input IS the rule of Prop. 3.1,
  ``R_i = x_i (R_i^out - s_i sum_j R_j^out)``; epsilon-rule ``R_x = x * W^T (R_z / (z + eps sign z))`` on linear
  layers; optional gamma rule on linear layers (recommended for ViTs).

Relevance per token = sum over the hidden dimension of ``e * dy_c/de`` at the reading point ``e`` (signed).

Each rule is ONE custom ``torch.autograd.Function`` (:mod:`lightning_xai.explainers._lrp_rules`) applied by a
forward hook on a module INSTANCE to that module's own output: the forward value is the module's, bit for bit, and
the backward runs the rule only -- no surrogate second graph, so the pass costs about one forward and one backward.
The linear rule is skipped when it is the identity (``epsilon = 0`` and ``gamma = 0``: plain gradient x input is
then exactly LRP-0). Attention rules live in registered attention functions selected with
``set_attn_implementation``; activations a module calls as functions (RoBERTa's head ``torch.tanh``) get the
identity rule from a ``TorchFunctionMode`` entered only inside the modules the family's rule table marks
``"functional_activation"``, never around the transformer layers.

Everything is **scoped and reversible**: hooks are removed, instance attributes deleted and every config's attention
implementation and every module's train/eval flag restored in ``finally``. No class, module global or parameter
is modified; the backward is ``torch.autograd.grad`` w.r.t. a detached copy of the reading point, so no parameter
``.grad`` is touched. See ``docs/methods/lrp.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lightning_xai.capture.base import AttentionCapture, eager_forward, eval_mode, first_tensor, with_first
from lightning_xai.capture.hf import (
    attention_implementation,
    configured_attention,
    eager_attention_for,
    register_attention_function,
)
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.explainers._lrp_rules import (
    IDENTITY_EPSILON,
    PassBuffers,
    ScaleGradient,
    detach_input_hook,
    functional_identity_rule_inside,
    halve_input_hook,
    identity_hook,
    layer_norm_rule,
    linear_hook,
)
from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.families import ModelFamily, resolve_family
from lightning_xai.types import logits_of

ReadAt = Literal["word_embeddings", "embeddings_output"]
Rule = Literal["cp_lrp", "attn_lrp"]
ActivationRule = Literal["identity", "gradient"]
Attention = Literal["auto", "eager", "sdpa"]

__all__ = [
    "ATTN_LRP_IMPLEMENTATION",
    "CP_LRP_IMPLEMENTATION",
    "IDENTITY_EPSILON",
    "AttnLRP",
    "ConservativeLRP",
    "attn_lrp",
    "cp_lrp",
    "lrp",
    "lrp_attention",
    "lrp_rules",
]

#: Attention-implementation keys of the two rule-carrying attention functions (the model's eager attention).
CP_LRP_IMPLEMENTATION = "lightning_xai_cp_lrp"
ATTN_LRP_IMPLEMENTATION = "lightning_xai_attn_lrp"
#: The same rules around ``torch.nn.functional.scaled_dot_product_attention`` (``attention="sdpa"``).
CP_LRP_SDPA_IMPLEMENTATION = "lightning_xai_cp_lrp_sdpa"
ATTN_LRP_SDPA_IMPLEMENTATION = "lightning_xai_attn_lrp_sdpa"


# ------------------------------------------------------------------------------------------------ attention rules


def _cp_lrp_rule(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AH-rule (Ali et al. 2022, Sec. 3.2): ``q`` and ``k`` detached, so the probabilities are constants."""
    return query.detach(), key.detach(), value


def _attn_lrp_rule(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Uniform rule on ``Q K^T`` and ``A V`` (Achtibat et al. 2024, Eq. 7): q, k gradients / 4, v gradient / 2.

    The softmax between the two products keeps its own gradient (its gradient x input is Prop. 3.1).
    """
    return ScaleGradient.apply(query, 0.25), ScaleGradient.apply(key, 0.25), ScaleGradient.apply(value, 0.5)


#: The attention modules that ran a rule-carrying attention function in the active :func:`lrp` pass.
_RULE_CALLS: ContextVar[list[str] | None] = ContextVar("lightning_xai_lrp_rule_calls", default=None)


def _attention_function(
    rule: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]], sdpa: bool
) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """An attention-interface function applying ``rule`` to ``q, k, v``, then the model's eager attention or sdpa."""

    def attention(
        module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, *args, **kwargs
    ) -> tuple[Tensor, Tensor | None]:
        calls = _RULE_CALLS.get()
        if calls is not None:
            calls.append(type(module).__name__)
        function = sdpa_attention_forward if sdpa else eager_attention_for(module)
        return function(module, *rule(query, key, value), attention_mask, *args, **kwargs)

    attention.__doc__ = f"{rule.__doc__}\n\nThen {'sdpa' if sdpa else 'the model' + chr(39) + 's own eager attention'}."
    return attention


register_attention_function(CP_LRP_IMPLEMENTATION, _attention_function(_cp_lrp_rule, sdpa=False))
register_attention_function(ATTN_LRP_IMPLEMENTATION, _attention_function(_attn_lrp_rule, sdpa=False))
for _key, _rule in ((CP_LRP_SDPA_IMPLEMENTATION, _cp_lrp_rule), (ATTN_LRP_SDPA_IMPLEMENTATION, _attn_lrp_rule)):
    AttentionInterface.register(_key, _attention_function(_rule, sdpa=True))
    AttentionMaskInterface.register(_key, sdpa_mask)  # without it transformers drops the padding mask

_IMPLEMENTATIONS: Mapping[tuple[Rule, Attention], str] = {
    ("cp_lrp", "eager"): CP_LRP_IMPLEMENTATION,
    ("attn_lrp", "eager"): ATTN_LRP_IMPLEMENTATION,
    ("cp_lrp", "sdpa"): CP_LRP_SDPA_IMPLEMENTATION,
    ("attn_lrp", "sdpa"): ATTN_LRP_SDPA_IMPLEMENTATION,
}


def lrp_attention(
    model: nn.Module, attention: Attention = "auto", family: ModelFamily | None = None
) -> Literal["eager", "sdpa"]:
    """The attention an LRP pass of ``model`` runs on: ``attention``, or for ``"auto"`` the model's own.

    ``"auto"`` keeps the attention the model is configured with, as lxt does (it patches whichever attention
    function the model calls): ``"sdpa"`` when the model runs on sdpa (or another fused kernel) and its family can
    run its attention through ``scaled_dot_product_attention`` (no soft-capping, sinks or position bias that sdpa
    drops: the ``attention_outputs`` capability), else ``"eager"``. So the patched forward equals the model's own
    forward, and the pass keeps no ``T x T`` probabilities wherever the model itself keeps none.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> model = tiny_bert()
        >>> lrp_attention(model), lrp_attention(model, "eager")
        ('sdpa', 'eager')
        >>> model.set_attn_implementation("eager")
        >>> lrp_attention(model)
        'eager'
    """
    if attention not in ("auto", "eager", "sdpa"):
        raise ValueError(f"attention must be 'auto', 'eager' or 'sdpa', got {attention!r}")
    if attention == "eager":
        return attention
    configured = configured_attention(model)
    if attention == "auto" and (not configured or "eager" in configured):
        return "eager"
    family = family if family is not None else resolve_family(model)
    why = family.missing_capabilities().get("attention_outputs")
    if why is None:
        return "sdpa"
    if attention == "auto":
        return "eager"
    raise UnsupportedMethodError(
        f"LRP with attention='sdpa' cannot run on a {type(model).__name__} (model family {family.name!r}): {why}. "
        "What to do: use attention='auto' or 'eager' (the model's eager attention with the same rules)."
    )


@contextmanager
def lrp_rules(
    model: nn.Module,
    rule: Rule,
    *,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    activation_rule: ActivationRule = "identity",
    attention: Attention = "auto",
    family: ModelFamily | None = None,
) -> Iterator[None]:
    """Put ``model`` in eval mode with the LRP rules of ``rule`` for the forwards run inside; restore on exit.

    Which rule a module gets comes from its family's table (:attr:`ModelFamily.lrp_rules`, looked up by module
    type); a module with its own parameters that the table does not cover raises, as captum does, instead of
    silently getting a plain gradient.

    Args:
        model: a HF transformers model on the attention interface.
        rule: ``"cp_lrp"`` (AH + LN rules) or ``"attn_lrp"`` (uniform attention rule + LN identity rule).
        gamma: gamma of the LRP-gamma rule on every ``nn.Linear`` / ``nn.Conv1d/2d`` (0 = off).
        epsilon: epsilon of the epsilon-rule on the same layers (0 = LRP-0, plain gradient).
        activation_rule: ``"identity"`` (AttnLRP Eq. 9, standard LRP) or ``"gradient"`` (plain derivative, as in
            Ali et al.'s classifier head); forced to ``"identity"`` for ``"attn_lrp"``.
        attention: ``"auto"`` (the default: the attention the model is configured with, see
            :func:`lrp_attention`; the patched forward then equals the model's own forward), ``"eager"`` (the
            model's own eager attention function) or ``"sdpa"`` (``scaled_dot_product_attention``); both with the
            same rules on ``q, k, v`` and equal up to float rounding; sdpa keeps no ``T x T`` probabilities and is
            faster where sdpa is.
        family: the model's family (resolved when omitted).

    Raises:
        UnsupportedMethodError: a module of the model has parameters but no rule in the family's table.

    Example:
        >>> import torch
        >>> from lightning_xai.examples import tiny_bert
        >>> model, ids = tiny_bert(), torch.tensor([[2, 7, 9, 3]])
        >>> with torch.no_grad():
        ...     plain = model(input_ids=ids).logits
        >>> with torch.enable_grad(), lrp_rules(model, "attn_lrp", epsilon=1e-6, attention="sdpa"):
        ...     patched = model(input_ids=ids).logits
        >>> torch.allclose(patched, plain, atol=1e-6), model.config._attn_implementation
        (True, 'sdpa')
    """
    if rule not in ("cp_lrp", "attn_lrp"):
        raise ValueError(f"rule must be 'cp_lrp' or 'attn_lrp', got {rule!r}")
    family = family if family is not None else resolve_family(model)
    refusal = family.refusal(rule, ("lrp_rules",))
    if refusal is not None:
        raise UnsupportedMethodError(refusal)
    attention = lrp_attention(model, attention, family)
    identity = rule == "attn_lrp" or activation_rule == "identity"
    # epsilon = gamma = 0 is LRP-0, whose gradient form is the plain gradient: no rule, no cost
    buffers = PassBuffers()  # the rules' zero and work tensors, allocated once per shape for the pass
    linear = linear_hook(epsilon, gamma, buffers) if (gamma > 0 or epsilon > 0) else None
    identity_rule = identity_hook(buffers)
    forward_hooks: dict[str, Callable[..., Any] | None] = {
        "norm_identity": identity_rule,  # RMSNorm: x times a factor, the factor constant (both methods)
        "activation": identity_rule if identity else None,
        "linear": linear,
    }
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(eager_forward(model))  # the rules are hooks on the eager modules
        stack.enter_context(attention_implementation(model, _IMPLEMENTATIONS[rule, attention]))
        for module in model.modules():
            kind = family.lrp_rule(module)
            if kind == "gated_mlp":
                _gated_mlp_rule(module, rule, family, stack)
            elif kind == "layer_norm":
                layer_norm_rule(module, buffers, stack)
            elif kind == "functional_activation" and identity:
                functional_identity_rule_inside(module, stack)
            hook = None if kind is None else forward_hooks.get(kind)
            if hook is not None:
                stack.callback(module.register_forward_hook(hook).remove)
        yield


def _gated_mlp_rule(module: nn.Module, rule: Rule, family: ModelFamily, stack: ExitStack) -> None:
    """The rule of a gated MLP ``down_proj(act(gate) * up)`` (Achtibat et al. 2024, Eq. 7 on the product).

    AttnLRP halves the product's gradient (uniform rule: half the relevance to each factor, as lxt's gated MLP);
    CP-LRP stops it at the gate (the gate a constant, as lxt's CP-LRP gated MLP).
    """
    if rule == "attn_lrp":
        stack.callback(module.down_proj.register_forward_pre_hook(halve_input_hook).remove)
        return
    activation = next(child for child in module.children() if family.lrp_rule(child) == "activation")
    stack.callback(activation.register_forward_pre_hook(detach_input_hook).remove)


# ------------------------------------------------------------------------------------------------ reading point


def _reading_modules(family: ModelFamily, read_at: ReadAt) -> tuple[nn.Module, nn.Module]:
    """(module whose output is read, the embedding module whose output is the encoder's token sequence)."""
    if read_at == "embeddings_output":
        embeddings = family.embeddings_output()
        return embeddings, embeddings
    if read_at == "word_embeddings":
        return family.word_embeddings(), family.embeddings_output()
    raise ValueError(f"read_at must be 'word_embeddings' or 'embeddings_output', got {read_at!r}")


#: What :func:`lrp` explains: ``[B]`` classes, one class for every row, None (the arg-max of the pass), or a function
#: of the pass's detached logits ``[B, C]`` returning ``[B]`` classes.
LRPTarget = Tensor | int | Callable[[Tensor], Tensor] | None


def lrp(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    target: LRPTarget = None,
    *,
    rule: Rule,
    read_at: ReadAt = "embeddings_output",
    gamma: float = 0.0,
    epsilon: float = 0.0,
    activation_rule: ActivationRule = "identity",
    attention: Attention = "auto",
    family: ModelFamily | None = None,
    logits_out: list[Tensor] | None = None,
) -> Tensor:
    """Signed LRP relevance per token ``[B, N]`` (float32) from ONE patched forward and ONE ``autograd.grad``.

    Args:
        model: HF transformers classifier on the attention interface (BERT, RoBERTa, DistilBERT, ViT, DeiT).
        inputs: batched keyword inputs of its forward (no labels).
        target: ``[B]`` classes (or one class for every row); ``None`` explains the arg-max of this pass; a
            function maps this pass's logits ``[B, C]`` to ``[B]`` classes.
        rule: ``"cp_lrp"`` or ``"attn_lrp"`` (see the module docstring).
        read_at: ``"embeddings_output"`` (output of ``model.base_model.embeddings``: after position / type
            embeddings and the embedding LayerNorm, prefix tokens included; Ali et al.'s reading point) or
            ``"word_embeddings"`` (output of ``model.get_input_embeddings()``: word embeddings, or for ViT/DeiT the
            patch embeddings -- prefix tokens ([CLS], distillation) then get 0; lxt's reading point).
        gamma: LRP-gamma on linear layers (see :func:`lrp_rules`).
        epsilon: epsilon-rule stabiliser on linear layers (see :func:`lrp_rules`).
        activation_rule: ``"identity"`` or ``"gradient"`` (see :func:`lrp_rules`).
        attention: ``"auto"``, ``"eager"`` or ``"sdpa"`` (see :func:`lrp_rules`).
        family: the model's family: rule table and reading points (resolved when omitted).
        logits_out: when given, the detached logits ``[B, C]`` of the patched forward are appended to it. The rules
            change only the backward, so these are the model's own logits (bit for bit on the model's own attention,
            ``attention="auto"``): :func:`~lightning_xai.explain` takes the target from them instead of running a
            forward of its own when every method of a call runs its own pass.

    Returns:
        ``[B, N]`` float32, ``N`` the encoder's sequence length; sums to the explained logit up to the relevance
        absorbed by biases, position/type embeddings below the reading point, epsilon and (AttnLRP) the softmax.

    Raises:
        LightningXAIError: no attention layer called a rule-carrying attention function (the model's attention
            bypasses transformers' ``AttentionInterface``, so the attention rules would be silently missing), or the
            reading point did not run exactly once.

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, vocab_size=50)).train()
        >>> relevance = lrp(model, {"input_ids": torch.tensor([[2, 7, 9, 3]])}, 1, rule="attn_lrp")
        >>> relevance.shape, relevance.dtype, model.training, model.config._attn_implementation
        (torch.Size([1, 4]), torch.float32, True, 'sdpa')
        >>> logits = []  # the pass's own logits, and a target chosen from them
        >>> _ = lrp(model, {"input_ids": torch.tensor([[2, 7, 9, 3]])}, lambda z: z.argmin(-1), rule="cp_lrp",
        ...         logits_out=logits)
        >>> with torch.no_grad():
        ...     torch.equal(logits[0], model.eval()(input_ids=torch.tensor([[2, 7, 9, 3]])).logits)
        True
    """
    family = family if family is not None else resolve_family(model)
    read_module, embeddings_module = _reading_modules(family, read_at)
    read: list[Tensor] = []
    num_tokens: list[int] = []

    def read_hook(_module: nn.Module, _args: object, output: Any) -> Any:
        tensor = first_tensor(output)
        if tensor is None or not tensor.is_floating_point():
            raise LightningXAIError(f"Cannot read LRP relevance at a {type(output).__name__} output ({read_at})")
        if read:
            raise LightningXAIError(f"The {read_at} module ran twice in one forward; cannot read relevance there")
        leaf = tensor.detach().requires_grad_()
        read.append(leaf)
        return with_first(output, leaf)

    def count_hook(_module: nn.Module, _args: object, output: Any) -> None:
        tensor = first_tensor(output)
        if tensor is not None:
            num_tokens.append(tensor.shape[1])

    rule_calls: list[str] = []
    with torch.inference_mode(False), torch.enable_grad():
        cloned = {key: value.clone() if isinstance(value, Tensor) else value for key, value in inputs.items()}
        with ExitStack() as stack:
            stack.callback(read_module.register_forward_hook(read_hook).remove)
            stack.callback(embeddings_module.register_forward_hook(count_hook).remove)
            stack.enter_context(
                lrp_rules(
                    model, rule, gamma=gamma, epsilon=epsilon, activation_rule=activation_rule, attention=attention,
                    family=family,
                )
            )
            stack.enter_context(family.lrp_target())  # what LRP explains (a causal LM: its completion's logits)
            token = _RULE_CALLS.set(rule_calls)
            stack.callback(_RULE_CALLS.reset, token)
            logits = logits_of(model(**cloned))
        if not read:
            raise LightningXAIError(f"The {read_at} module did not run in the forward of {type(model).__name__}")
        if not rule_calls:
            raise LightningXAIError(
                f"No attention layer of {type(model).__name__} ran LRP's attention rule: its attention does not call "
                f"transformers' AttentionInterface, which LRP's rules on q, k, v rely on (model family "
                f"{family.name!r}). Describe its attention in lightning_xai/families/{family.name}.py or drop LRP."
            )
        detached = logits.detach()
        if logits_out is not None:
            logits_out.append(detached)
        if callable(target):
            target = target(detached)
        elif target is None:
            target = detached.argmax(dim=-1)
        target = torch.as_tensor(target, device=logits.device, dtype=torch.long).expand(logits.shape[0])
        score = logits.gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, read[0])
    relevance = (read[0].detach().float() * gradient.float()).sum(dim=-1)
    total = num_tokens[0] if num_tokens else relevance.shape[1]
    if total > relevance.shape[1]:  # patch embeddings: prefix tokens come first and get 0
        relevance = torch.cat([relevance.new_zeros(relevance.shape[0], total - relevance.shape[1]), relevance], 1)
    return relevance


def cp_lrp(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor | int | None = None,
    *,
    read_at: ReadAt = "embeddings_output",
    gamma: float = 0.0,
    epsilon: float = 0.0,
    activation_rule: ActivationRule = "identity",
    attention: Attention = "auto",
    family: ModelFamily | None = None,
) -> Tensor:
    """Conservative LRP ("AH+LN", Ali et al. ICML 2022) relevance ``[B, N]``; see :func:`lrp`."""
    return lrp(
        model, inputs, target, rule="cp_lrp", read_at=read_at, gamma=gamma, epsilon=epsilon,
        activation_rule=activation_rule, attention=attention, family=family,
    )


def attn_lrp(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor | int | None = None,
    *,
    read_at: ReadAt = "embeddings_output",
    gamma: float = 0.0,
    epsilon: float = 1e-6,
    attention: Attention = "auto",
    family: ModelFamily | None = None,
) -> Tensor:
    """AttnLRP (Achtibat et al. ICML 2024) relevance ``[B, N]``; see :func:`lrp`."""
    return lrp(
        model, inputs, target, rule="attn_lrp", read_at=read_at, gamma=gamma, epsilon=epsilon, attention=attention,
        family=family,
    )


# ------------------------------------------------------------------------------------------------ explainers


def _check(read_at: str, gamma: float, epsilon: float, attention: str) -> None:
    if read_at not in ("word_embeddings", "embeddings_output"):
        raise ValueError(f"read_at must be 'word_embeddings' or 'embeddings_output', got {read_at!r}")
    if gamma < 0 or epsilon < 0:
        raise ValueError(f"gamma and epsilon must be >= 0, got gamma={gamma}, epsilon={epsilon}")
    if attention not in ("auto", "eager", "sdpa"):
        raise ValueError(f"attention must be 'auto', 'eager' or 'sdpa', got {attention!r}")


class _PatchedPassLRP(Explainer):
    """What CP-LRP and AttnLRP share: an own patched pass of ``forward.model`` explaining ``forward.target``.

    The instance's public attributes are exactly :func:`lrp`'s settings (``read_at``, ``gamma``, ``epsilon``,
    ``attention`` and, for CP-LRP, ``activation_rule``); the rule is the method's registry name.
    """

    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"own_pass", "lrp_rules"})
    attention: Attention

    def own_pass_forms_maps(self, capture: AttentionCapture | None = None) -> bool:
        """Only on the eager attention: on sdpa the patched pass forms no ``T x T`` map (``"auto"``: as the model)."""
        if self.attention == "auto":
            return capture is None or lrp_attention(capture.model, "auto") == "eager"
        return self.attention == "eager"

    def _settings(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if not key.startswith("_")}

    def explain(self, forward: ForwardPass) -> Tensor:
        """The map of ``forward.target`` from an own patched pass."""
        if forward.model is None:
            raise LightningXAIError(f"{type(self).__name__} needs forward.model (its own patched pass)")
        return lrp(forward.model, forward.inputs, forward.target, rule=self.name, family=forward.family,
                   **self._settings())

    def explain_and_predict(
        self,
        model: nn.Module,
        inputs: Mapping[str, Tensor],
        family: ModelFamily,
        choose_target: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Tensor] | None:
        """Map and logits of the patched pass (:func:`lrp`'s ``logits_out``), on the model's own attention.

        Where the pass runs another attention than the model is configured with (``attention="eager"`` forced, or
        ``"auto"`` falling back to eager for a family that cannot use sdpa) its logits could differ from the
        model's in the last bits, and a family whose LRP explains other logits (a causal LM's completion,
        :attr:`~lightning_xai.families.ModelFamily.lrp_explains_logits`) does not give the model's: then it declines
        (None) and :func:`~lightning_xai.explain` runs its shared forward.
        """
        if not family.lrp_explains_logits:
            return None
        if {lrp_attention(model, self.attention, family)} != configured_attention(model):
            return None
        logits: list[Tensor] = []
        relevance = lrp(model, inputs, choose_target, rule=self.name, family=family, logits_out=logits,
                        **self._settings())
        return relevance, logits[0]


class ConservativeLRP(_PatchedPassLRP):
    r"""Conservative propagation, "LRP (AH+LN)" (Ali et al., ICML 2022, Sec. 3.2-3.3), signed.

    Attention heads: :math:`y_j = \sum_i x_i p_{ij}` with :math:`p` constant (no relevance to queries/keys);
    LayerNorm: :math:`y = (x - \bar x)/\sigma` with :math:`\sigma` constant; linear layers LRP-0
    (``epsilon=0``, ``gamma=0``) or LRP-gamma. Relevance :math:`R_t = \sum_d e_{td}\,\partial y_c/\partial e_{td}`
    at ``read_at``. Runs its own patched forward of ``forward.model`` on ``forward.inputs`` and explains
    ``forward.target``.

    Args:
        read_at: ``"embeddings_output"`` (default, the paper's) or ``"word_embeddings"``; see :func:`lrp`.
        gamma: LRP-gamma on linear layers (paper: 0 for SST-2, 0.01 for IMDB).
        epsilon: epsilon-rule stabiliser on linear layers (0 = LRP-0 as in the paper).
        activation_rule: ``"identity"`` (default: standard LRP, relevance passes element-wise activations
            unchanged, which keeps conservation with GELU/tanh) or ``"gradient"`` (plain derivative as in the
            paper's code for the pooler tanh; equal for ReLU).
        attention: ``"auto"`` (default: the model's own attention), ``"eager"`` or ``"sdpa"``; see :func:`lrp_rules`.

    Presets: the defaults are Ali et al.'s rules and reading point; :meth:`lxt` is lxt 2.x's efficient CP-LRP.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [ConservativeLRP()], modality=text)
        >>> maps["cp_lrp"].relevance.shape, maps["cp_lrp"].signed, float(maps["cp_lrp"].relevance[0, 4])
        (torch.Size([1, 5]), True, 0.0)
    """

    name: ClassVar[str] = "cp_lrp"

    def __init__(
        self,
        read_at: ReadAt = "embeddings_output",
        gamma: float = 0.0,
        epsilon: float = 0.0,
        activation_rule: ActivationRule = "identity",
        attention: Attention = "auto",
    ) -> None:
        _check(read_at, gamma, epsilon, attention)
        if activation_rule not in ("identity", "gradient"):
            raise ValueError(f"activation_rule must be 'identity' or 'gradient', got {activation_rule!r}")
        self.read_at: ReadAt = read_at
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.activation_rule: ActivationRule = activation_rule
        self.attention: Attention = attention

    @classmethod
    def lxt(cls, attention: Attention = "auto") -> ConservativeLRP:
        """The efficient CP-LRP of lxt 2.x (the ``cp_LRP`` patch maps of ``lxt.efficient``, Arras et al. 2025).

        Read at the word (or patch) embeddings, as lxt's ``inputs_embeds``; LRP-0 on linear layers (lxt patches no
        linear layer); attention probabilities constant (lxt's ``stop_gradient`` on q and k); LayerNorm/RMSNorm
        with sigma constant; identity rule on activations; a gated MLP's gate constant. It differs from the
        defaults only in the reading point: relevance that reaches position / token-type embeddings (and, for
        vision, the class token) is not counted. See ``docs/methods/lrp.md``.

        Example:
            >>> preset = ConservativeLRP.lxt()
            >>> preset.read_at, preset.epsilon, preset.gamma, preset.activation_rule
            ('word_embeddings', 0.0, 0.0, 'identity')
        """
        return cls(read_at="word_embeddings", gamma=0.0, epsilon=0.0, activation_rule="identity", attention=attention)



class AttnLRP(_PatchedPassLRP):
    r"""AttnLRP (Achtibat et al., ICML 2024), efficient single-backward form (Arras et al. 2025), signed.

    Rules: identity on element-wise activations (Eq. 9) and on LayerNorm's :math:`\sigma`; uniform rule on
    :math:`QK^T` and :math:`AV` (Eq. 7 / Prop. 3.3: q, k gradients / 4, v gradient / 2); softmax by its own gradient
    (= Prop. 3.1); epsilon-rule on linear layers; optional gamma rule (ViTs). Runs its own patched forward of
    ``forward.model`` on ``forward.inputs`` and explains ``forward.target``.

    Args:
        read_at: ``"embeddings_output"`` (default) or ``"word_embeddings"`` (lxt's choice); see :func:`lrp`.
        gamma: LRP-gamma on linear layers (0 = off; lxt uses zennit gamma rules for ViTs).
        epsilon: epsilon-rule stabiliser on linear layers (paper/lxt explicit: 1e-6; 0 = no rule, plain gradient).
        attention: ``"auto"`` (default: the model's own attention), ``"eager"`` or ``"sdpa"``; see :func:`lrp_rules`.

    Presets: the defaults are the paper's rules (explicit form, epsilon 1e-6) read at the embedding output;
    :meth:`lxt` is lxt 2.x's efficient AttnLRP.

    Example:
        >>> import torch
        >>> from transformers import ViTConfig, ViTForImageClassification
        >>> from lightning_xai import explain
        >>> from lightning_xai.modalities import VisionModality
        >>> model = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...     intermediate_size=8, image_size=8, patch_size=4))
        >>> maps = explain(model, {"pixel_values": torch.randn(2, 3, 8, 8)}, [AttnLRP()], modality=VisionModality(4))
        >>> maps["attn_lrp"].relevance.shape  # [CLS] + 4 patches
        torch.Size([2, 5])
    """

    name: ClassVar[str] = "attn_lrp"

    def __init__(
        self,
        read_at: ReadAt = "embeddings_output",
        gamma: float = 0.0,
        epsilon: float = 1e-6,
        attention: Attention = "auto",
    ) -> None:
        _check(read_at, gamma, epsilon, attention)
        self.read_at: ReadAt = read_at
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.attention: Attention = attention

    @classmethod
    def lxt(cls, attention: Attention = "auto") -> AttnLRP:
        """The efficient AttnLRP of lxt 2.x (``lxt.efficient.monkey_patch`` with its default ``attnLRP`` maps).

        Read at the word (or patch) embeddings, as lxt's ``inputs_embeds``; epsilon 0 on linear layers (lxt patches
        no linear layer: plain gradient, no cost); identity rule on activations; LayerNorm/RMSNorm sigma constant;
        uniform rule q, k / 4, v / 2; the gated MLP's product halved. It differs from the defaults in the reading
        point and in dropping the epsilon rule (whose 1e-6 changes maps only where a linear output is near 0).
        See ``docs/methods/lrp.md``.

        Example:
            >>> AttnLRP.lxt()
            AttnLRP(read_at='word_embeddings', gamma=0.0, epsilon=0.0, attention='auto')
        """
        return cls(read_at="word_embeddings", gamma=0.0, epsilon=0.0, attention=attention)

