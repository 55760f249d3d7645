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

Everything is **scoped and reversible**: the rules are forward hooks on module INSTANCES that replace each output
by a value-identical tensor with a modified gradient (``out.detach() + (s - s.detach())`` for a surrogate ``s``), a
thread-local ``TorchFunctionMode`` for functional activations (AttnLRP only), and two registered attention
functions selected with ``set_attn_implementation``; hooks are removed and every config's attention
implementation and every module's train/eval flag restored in ``finally``. No class, module global or parameter
is modified; the backward is ``torch.autograd.grad`` w.r.t. a detached copy of the reading point, so no parameter
``.grad`` is touched. See ``docs/methods/lrp.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from transformers.pytorch_utils import Conv1D

from lightning_xai.capture.base import eager_forward, eval_mode, first_tensor, with_first
from lightning_xai.capture.hf import attention_implementation, eager_attention_for, register_attention_function
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.families import ModelFamily, resolve_family
from lightning_xai.types import logits_of

ReadAt = Literal["word_embeddings", "embeddings_output"]
Rule = Literal["cp_lrp", "attn_lrp"]
ActivationRule = Literal["identity", "gradient"]

#: Attention-implementation keys of the two rule-carrying attention functions.
CP_LRP_IMPLEMENTATION = "lightning_xai_cp_lrp"
ATTN_LRP_IMPLEMENTATION = "lightning_xai_attn_lrp"

#: Stabiliser of the identity rule ``f(x) / (x + eps)`` (lxt uses the same value).
IDENTITY_EPSILON = 1e-10
_GUARD = 1e-12  # smallest stabiliser of the linear rule, used when epsilon == 0 and gamma > 0

_FUNCTIONAL_ACTIVATIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.tanh,
        Tensor.tanh,
        nn.functional.tanh,
        torch.relu,
        Tensor.relu,
        nn.functional.relu,
        nn.functional.gelu,
        nn.functional.silu,
    }
)


# ------------------------------------------------------------------------------------------------ building blocks


def surrogate(value: Tensor, differentiable: Tensor) -> Tensor:
    """``value`` in the forward (bit for bit), the gradient of ``differentiable`` in the backward.

    Example:
        >>> import torch
        >>> x = torch.tensor([3.0], requires_grad=True)
        >>> y = surrogate(x * x, 2 * x)  # value 9, gradient 2
        >>> y.item(), torch.autograd.grad(y, x)[0].item()
        (9.0, 2.0)
    """
    return value.detach() + (differentiable - differentiable.detach())


def divide_gradient(x: Tensor, factor: float) -> Tensor:
    """Identity in the forward, gradient divided by ``factor`` in the backward (uniform rule, AttnLRP Eq. 7).

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> torch.autograd.grad(divide_gradient(x, 4).sum(), x)[0].tolist()
        [0.25, 0.25]
    """
    return surrogate(x, x / factor)


def identity_rule(x: Tensor, y: Tensor, eps: float = IDENTITY_EPSILON) -> Tensor:
    """``y = f(x)`` in the forward; backward multiplies by ``f(x) / (x + eps sign x)`` (AttnLRP Eq. 9).

    Then ``x * grad_x = f(x) * grad_y``: the relevance of ``y`` passes to ``x`` unchanged. The ratio is computed
    in float32 (``sign 0 = +1``).

    Example:
        >>> import torch
        >>> x = torch.tensor([2.0, -1.0], requires_grad=True)
        >>> y = identity_rule(x, torch.tanh(x))
        >>> g = torch.autograd.grad(y.sum(), x)[0]
        >>> torch.allclose(x * g, torch.tanh(x)), torch.equal(y, torch.tanh(x))
        (True, True)
    """
    xf = x.detach().float()
    ratio = (y.detach().float() / (xf + torch.where(xf >= 0, eps, -eps))).to(x.dtype)
    return surrogate(y, x * ratio)


def stabilize(z: Tensor, eps: float) -> Tensor:
    """``z + eps sign(z)`` with ``sign(0) = +1`` (denominator of the epsilon / gamma rules)."""
    return z + torch.where(z >= 0, eps, -eps)


def _layer_norm_rule(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """LN-rule / identity rule on LayerNorm: sigma a constant, centering kept (Ali et al. 2022, Sec. 3.3)."""
    x = args[0] if args else None
    if not (isinstance(x, Tensor) and isinstance(output, Tensor) and x.requires_grad):
        return None
    dims = tuple(range(-len(module.normalized_shape), 0))
    centered = x - x.mean(dim=dims, keepdim=True)
    sigma = torch.sqrt(x.detach().var(dim=dims, unbiased=False, keepdim=True) + module.eps)
    y = centered / sigma
    if module.weight is not None:
        y = y * module.weight.detach()
    if module.bias is not None:
        y = y + module.bias.detach()
    return surrogate(output, y)


def _activation_rule(_module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    x = args[0] if args else None
    if not (isinstance(x, Tensor) and isinstance(output, Tensor) and x.requires_grad and x.shape == output.shape):
        return None
    return identity_rule(x, output)


def _affine(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The module's affine map with another weight and bias: ``nn.Linear``, HF's ``Conv1D`` (``x W + b``), convs."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(x, weight, bias)
    if isinstance(module, Conv1D):  # GPT-2: the weight is stored [in, out]
        return nn.functional.linear(x, weight.t(), bias)
    return module._conv_forward(x, weight, bias)  # type: ignore[operator]


def _gradient_halved(_module: nn.Module, args: tuple[Any, ...]) -> Any:
    """Uniform rule on the product entering this module (a gated MLP's ``down_proj``): half to each factor."""
    if args and isinstance(args[0], Tensor) and args[0].requires_grad:
        return (divide_gradient(args[0], 2.0), *args[1:])
    return None


def _input_detached(_module: nn.Module, args: tuple[Any, ...]) -> Any:
    """No relevance through this input (CP-LRP on a gated MLP's gate: the gate acts as a constant)."""
    if args and isinstance(args[0], Tensor):
        return (args[0].detach(), *args[1:])
    return None


def _linear_rule(gamma: float, epsilon: float) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    """Epsilon / gamma rule on ``nn.Linear``, ``Conv1D``, ``nn.Conv*``: gradient ``W_g^T (g * z / stabilize(z_g))``."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0] if args else None
        if not (isinstance(x, Tensor) and isinstance(output, Tensor) and x.requires_grad):
            return None
        weight = module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        if gamma > 0:
            weight = weight + gamma * weight.clamp_min(0)
            bias = None if bias is None else bias + gamma * bias.clamp_min(0)
        z_mod = _affine(module, x, weight, bias)
        z = output.detach()
        ratio = z / stabilize(z_mod.detach(), max(epsilon, _GUARD))
        return surrogate(output, z_mod * ratio)

    return hook


class _FunctionalIdentityRule(TorchFunctionMode):
    """Identity rule for activations called as functions (RoBERTa head ``torch.tanh``, DistilBERT ``nn.ReLU()``).

    Thread-local and active only inside :func:`lrp_rules`; applies only to inputs that require grad.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (
            func in _FUNCTIONAL_ACTIVATIONS
            and not kwargs.get("inplace", False)
            and torch.is_grad_enabled()
            and args
            and isinstance(args[0], Tensor)
            and args[0].requires_grad
            and isinstance(out, Tensor)
            and out.shape == args[0].shape
        ):
            return identity_rule(args[0], out)
        return out


# ------------------------------------------------------------------------------------------------ attention rules


def _cp_lrp_attention(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, *args, **kwargs
) -> tuple[Tensor, Tensor]:
    """AH-rule: the model's own eager attention with ``q`` and ``k`` detached, so the probabilities are constant."""
    eager = eager_attention_for(module)
    return eager(module, query.detach(), key.detach(), value, attention_mask, *args, **kwargs)


def _attn_lrp_attention(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, *args, **kwargs
) -> tuple[Tensor, Tensor]:
    """Uniform rule on ``Q K^T`` and ``A V``: q and k gradients / 4, v gradient / 2 (softmax untouched)."""
    eager = eager_attention_for(module)
    q, k, v = divide_gradient(query, 4.0), divide_gradient(key, 4.0), divide_gradient(value, 2.0)
    return eager(module, q, k, v, attention_mask, *args, **kwargs)


register_attention_function(CP_LRP_IMPLEMENTATION, _cp_lrp_attention)
register_attention_function(ATTN_LRP_IMPLEMENTATION, _attn_lrp_attention)


@contextmanager
def lrp_rules(
    model: nn.Module,
    rule: Rule,
    *,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    activation_rule: ActivationRule = "identity",
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
        family: the model's family (resolved when omitted).

    Raises:
        UnsupportedMethodError: a module of the model has parameters but no rule in the family's table.
    """
    if rule not in ("cp_lrp", "attn_lrp"):
        raise ValueError(f"rule must be 'cp_lrp' or 'attn_lrp', got {rule!r}")
    family = family if family is not None else resolve_family(model)
    refusal = family.refusal(rule, ("lrp_rules",))
    if refusal is not None:
        raise UnsupportedMethodError(refusal)
    implementation = CP_LRP_IMPLEMENTATION if rule == "cp_lrp" else ATTN_LRP_IMPLEMENTATION
    identity = rule == "attn_lrp" or activation_rule == "identity"
    linear_hook = _linear_rule(gamma, epsilon) if (gamma > 0 or epsilon > 0) else None
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(eager_forward(model))  # the rules are hooks on the eager modules
        stack.enter_context(attention_implementation(model, implementation))
        hooks: dict[str, Callable[..., Any] | None] = {
            "layer_norm": _layer_norm_rule,
            "norm_identity": _activation_rule,  # RMSNorm: x times a factor, the factor constant (both methods)
            "activation": _activation_rule if identity else None,
            "linear": linear_hook,
        }
        for module in model.modules():
            kind = family.lrp_rule(module)
            if kind == "gated_mlp":
                _gated_mlp_rule(module, rule, family, stack)
            hook = None if kind is None else hooks.get(kind)
            if hook is not None:
                stack.callback(module.register_forward_hook(hook).remove)
        if identity:
            stack.enter_context(_FunctionalIdentityRule())
        yield


def _gated_mlp_rule(module: nn.Module, rule: Rule, family: ModelFamily, stack: ExitStack) -> None:
    """The rule of a gated MLP ``down_proj(act(gate) * up)``.

    AttnLRP halves the product's gradient (uniform rule: half the relevance to each factor, lxt's
    ``gated_mlp_forward``); CP-LRP stops it at the gate (lxt's ``cp_gated_mlp_forward``).
    """
    if rule == "attn_lrp":
        stack.callback(module.down_proj.register_forward_pre_hook(_gradient_halved).remove)
        return
    activation = next(child for child in module.children() if family.lrp_rule(child) == "activation")
    stack.callback(activation.register_forward_pre_hook(_input_detached).remove)


# ------------------------------------------------------------------------------------------------ reading point


def _reading_modules(family: ModelFamily, read_at: ReadAt) -> tuple[nn.Module, nn.Module]:
    """(module whose output is read, the embedding module whose output is the encoder's token sequence)."""
    if read_at == "embeddings_output":
        embeddings = family.embeddings_output()
        return embeddings, embeddings
    if read_at == "word_embeddings":
        return family.word_embeddings(), family.embeddings_output()
    raise ValueError(f"read_at must be 'word_embeddings' or 'embeddings_output', got {read_at!r}")


def lrp(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor | int | None = None,
    *,
    rule: Rule,
    read_at: ReadAt = "embeddings_output",
    gamma: float = 0.0,
    epsilon: float = 0.0,
    activation_rule: ActivationRule = "identity",
    family: ModelFamily | None = None,
) -> Tensor:
    """Signed LRP relevance per token ``[B, N]`` (float32) from ONE patched forward and ONE ``autograd.grad``.

    Args:
        model: HF transformers classifier on the attention interface (BERT, RoBERTa, DistilBERT, ViT, DeiT).
        inputs: batched keyword inputs of its forward (no labels).
        target: ``[B]`` classes (or one class for every row); ``None`` explains the arg-max of this pass.
        rule: ``"cp_lrp"`` or ``"attn_lrp"`` (see the module docstring).
        read_at: ``"embeddings_output"`` (output of ``model.base_model.embeddings``: after position / type
            embeddings and the embedding LayerNorm, prefix tokens included; Ali et al.'s reading point) or
            ``"word_embeddings"`` (output of ``model.get_input_embeddings()``: word embeddings, or for ViT/DeiT the
            patch embeddings -- prefix tokens ([CLS], distillation) then get 0; lxt's reading point).
        gamma: LRP-gamma on linear layers (see :func:`lrp_rules`).
        epsilon: epsilon-rule stabiliser on linear layers (see :func:`lrp_rules`).
        activation_rule: ``"identity"`` or ``"gradient"`` (see :func:`lrp_rules`).
        family: the model's family: rule table and reading points (resolved when omitted).

    Returns:
        ``[B, N]`` float32, ``N`` the encoder's sequence length; sums to the explained logit up to the relevance
        absorbed by biases, position/type embeddings below the reading point, epsilon and (AttnLRP) the softmax.

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, vocab_size=50)).train()
        >>> relevance = lrp(model, {"input_ids": torch.tensor([[2, 7, 9, 3]])}, 1, rule="attn_lrp")
        >>> relevance.shape, relevance.dtype, model.training, model.config._attn_implementation
        (torch.Size([1, 4]), torch.float32, True, 'sdpa')
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

    with torch.inference_mode(False), torch.enable_grad():
        cloned = {key: value.clone() if isinstance(value, Tensor) else value for key, value in inputs.items()}
        with ExitStack() as stack:
            stack.callback(read_module.register_forward_hook(read_hook).remove)
            stack.callback(embeddings_module.register_forward_hook(count_hook).remove)
            stack.enter_context(
                lrp_rules(model, rule, gamma=gamma, epsilon=epsilon, activation_rule=activation_rule, family=family)
            )
            logits = logits_of(model(**cloned))
        if not read:
            raise LightningXAIError(f"The {read_at} module did not run in the forward of {type(model).__name__}")
        if target is None:
            target = logits.detach().argmax(dim=-1)
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
    family: ModelFamily | None = None,
) -> Tensor:
    """Conservative LRP ("AH+LN", Ali et al. ICML 2022) relevance ``[B, N]``; see :func:`lrp`."""
    return lrp(
        model, inputs, target, rule="cp_lrp", read_at=read_at, gamma=gamma, epsilon=epsilon,
        activation_rule=activation_rule, family=family,
    )


def attn_lrp(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor | int | None = None,
    *,
    read_at: ReadAt = "embeddings_output",
    gamma: float = 0.0,
    epsilon: float = 1e-6,
    family: ModelFamily | None = None,
) -> Tensor:
    """AttnLRP (Achtibat et al. ICML 2024) relevance ``[B, N]``; see :func:`lrp`."""
    return lrp(model, inputs, target, rule="attn_lrp", read_at=read_at, gamma=gamma, epsilon=epsilon, family=family)


# ------------------------------------------------------------------------------------------------ explainers


def _check(read_at: str, gamma: float, epsilon: float) -> None:
    if read_at not in ("word_embeddings", "embeddings_output"):
        raise ValueError(f"read_at must be 'word_embeddings' or 'embeddings_output', got {read_at!r}")
    if gamma < 0 or epsilon < 0:
        raise ValueError(f"gamma and epsilon must be >= 0, got gamma={gamma}, epsilon={epsilon}")


class ConservativeLRP(Explainer):
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

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [ConservativeLRP()], modality=text)
        >>> maps["cp_lrp"].relevance.shape, maps["cp_lrp"].signed, float(maps["cp_lrp"].relevance[0, 4])
        (torch.Size([1, 5]), True, 0.0)
    """

    name: ClassVar[str] = "cp_lrp"
    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"own_pass", "lrp_rules"})

    def __init__(
        self,
        read_at: ReadAt = "embeddings_output",
        gamma: float = 0.0,
        epsilon: float = 0.0,
        activation_rule: ActivationRule = "identity",
    ) -> None:
        _check(read_at, gamma, epsilon)
        if activation_rule not in ("identity", "gradient"):
            raise ValueError(f"activation_rule must be 'identity' or 'gradient', got {activation_rule!r}")
        self.read_at: ReadAt = read_at
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.activation_rule: ActivationRule = activation_rule

    def explain(self, forward: ForwardPass) -> Tensor:
        """CP-LRP map of ``forward.target`` from an own patched pass."""
        if forward.model is None:
            raise LightningXAIError("ConservativeLRP needs forward.model (its own patched pass)")
        return cp_lrp(
            forward.model, forward.inputs, forward.target, read_at=self.read_at, gamma=self.gamma,
            epsilon=self.epsilon, activation_rule=self.activation_rule, family=forward.family,
        )


class AttnLRP(Explainer):
    r"""AttnLRP (Achtibat et al., ICML 2024), efficient single-backward form (Arras et al. 2025), signed.

    Rules: identity on element-wise activations (Eq. 9) and on LayerNorm's :math:`\sigma`; uniform rule on
    :math:`QK^T` and :math:`AV` (Eq. 7 / Prop. 3.3: q, k gradients / 4, v gradient / 2); softmax by its own gradient
    (= Prop. 3.1); epsilon-rule on linear layers; optional gamma rule (ViTs). Runs its own patched forward of
    ``forward.model`` on ``forward.inputs`` and explains ``forward.target``.

    Args:
        read_at: ``"embeddings_output"`` (default) or ``"word_embeddings"`` (lxt's choice); see :func:`lrp`.
        gamma: LRP-gamma on linear layers (0 = off; lxt uses zennit gamma rules for ViTs).
        epsilon: epsilon-rule stabiliser on linear layers (paper/lxt explicit: 1e-6).

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
    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"own_pass", "lrp_rules"})

    def __init__(self, read_at: ReadAt = "embeddings_output", gamma: float = 0.0, epsilon: float = 1e-6) -> None:
        _check(read_at, gamma, epsilon)
        self.read_at: ReadAt = read_at
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)

    def explain(self, forward: ForwardPass) -> Tensor:
        """AttnLRP map of ``forward.target`` from an own patched pass."""
        if forward.model is None:
            raise LightningXAIError("AttnLRP needs forward.model (its own patched pass)")
        return attn_lrp(
            forward.model, forward.inputs, forward.target, read_at=self.read_at, gamma=self.gamma,
            epsilon=self.epsilon, family=forward.family,
        )
