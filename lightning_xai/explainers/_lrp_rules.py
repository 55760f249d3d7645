r"""LRP rules as custom autograd functions: the forward value untouched, the backward replaced (private).

Every rule of CP-LRP and AttnLRP can be written in "gradient x input" form (Arras et al. 2025, arXiv:2502.15886):
an operation keeps its forward value and its backward is replaced, so that ``t * dy_c/dt`` is the LRP relevance of
any tensor ``t``. Here each rule is ONE :class:`torch.autograd.Function` applied to a module's own output from a
forward hook: ``Rule.apply(x, y.detach(), ...)`` returns ``y`` itself (an alias, bit for bit) with a backward that
maps ``dy`` to ``dx`` by the rule. The module's original autograd node is left unreferenced and never runs, so the
backward costs one rule per module and the forward one module call, with no second (surrogate) graph.

Rules and their sources:

* :class:`LinearRule`: epsilon rule (Achtibat et al. 2024, Eq. 4; Bach et al. 2015) and gamma rule (Montavon et
  al. 2019; Ali et al. 2022, Sec. 3.1, "forward-value-preserving" ``z_g (z / z_g).detach()``):
  ``dx = W_g^T (dz * z / (z_g + eps sign z_g))``. With ``gamma = 0`` the ratio is ``|z| / (|z| + eps)``.
* :class:`LayerNormRule`: LN-rule (Ali et al. 2022, Sec. 3.3) = AttnLRP's identity rule on the normalisation:
  ``sigma`` a constant, the centering linear: ``dx = (w dy - mean(w dy)) / sigma``.
* :class:`IdentityRule`: identity rule on element-wise activations (Achtibat et al. 2024, Eq. 9) and on
  normalisations that scale their input (RMSNorm, L2 normalisation): ``dx = dy * f(x) / (x + eps sign x)``, so
  ``x dx = f(x) dy``: the output's relevance passes to the input unchanged.
* :class:`ScaleGradient`: the uniform rule (Achtibat et al. 2024, Eq. 7 / Prop. 3.3) on a bilinear product:
  identity in the forward, gradient times ``factor`` in the backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.overrides import TorchFunctionMode
from transformers.pytorch_utils import Conv1D

#: Stabiliser of the identity rule ``f(x) / (x + eps sign x)`` (lxt uses the same value).
IDENTITY_EPSILON = 1e-10
#: Smallest stabiliser of the gamma rule's denominator, used when ``epsilon == 0`` (``z_g`` may be 0).
LINEAR_GUARD = 1e-12

_MISSING = object()

# ------------------------------------------------------------------------------------------------ buffers


class PassBuffers:
    """Tensors the rules of ONE patched pass share, allocated once per (shape, dtype, device).

    * ``zeros``: a zero tensor (LayerNorm's fused backward at a centred input, see :class:`LayerNormRule`);
    * ``scratch``: a work buffer an element-wise rule overwrites and consumes before its backward returns (the
      epsilon ratio a linear layer's backward multiplies into its matmul; the identity rule's ratio).

    Why: a rule's element-wise passes are cheap, but a fresh ``[B, T, D]`` tensor per rule and per pass is not: on
    CPU the allocator hands a large block back to the system when it is freed, so the next one page-faults on
    first touch (measured: the epsilon rule took 9.3 ms on a fresh buffer where its three passes take 1.6 ms on
    a reused one, ``[32, 64, 1536]`` float32). A backward runs its functions one at a time per device (the key
    includes the device), so one scratch per shape is never used by two rules at once.

    Example:
        >>> import torch
        >>> buffers, x = PassBuffers(), torch.ones(2, 3)
        >>> buffers.scratch(x) is buffers.scratch(x), float(buffers.zeros(x).abs().sum())
        (True, 0.0)
    """

    def __init__(self) -> None:
        self._zeros: dict[tuple[Any, ...], Tensor] = {}
        self._scratch: dict[tuple[Any, ...], Tensor] = {}

    @staticmethod
    def _key(x: Tensor, dtype: torch.dtype | None) -> tuple[Any, ...]:
        return (x.shape, dtype or x.dtype, x.device)

    def zeros(self, x: Tensor) -> Tensor:
        """A contiguous zero tensor shaped as ``x`` (never written to)."""
        key = self._key(x, None)
        if key not in self._zeros:
            self._zeros[key] = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
        return self._zeros[key]

    def scratch(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """A contiguous work tensor shaped as ``x`` (of ``dtype``, default ``x``'s), with arbitrary contents."""
        key = self._key(x, dtype)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)
        return self._scratch[key]


# ------------------------------------------------------------------------------------------------ functions


def _working_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype rule ratios are computed in: float32, or the tensor's own when wider (float64)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _affine(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The module's affine map with another weight and bias: ``nn.Linear``, HF's ``Conv1D`` (``x W + b``), convs."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(x, weight, bias)
    if isinstance(module, Conv1D):  # GPT-2: the weight is stored [in, out]
        return nn.functional.linear(x, weight.t(), bias)
    return module._conv_forward(x, weight, bias)  # type: ignore[operator]


def _affine_transposed(module: nn.Module, x: Tensor, weight: Tensor, grad: Tensor) -> Tensor:
    """``W^T grad``: the input gradient of the module's affine map with ``weight`` (no bias needed)."""
    if isinstance(module, nn.Linear):
        return grad.matmul(weight)
    if isinstance(module, Conv1D):
        return grad.matmul(weight.t())
    with torch.enable_grad():  # a convolution: its own input gradient, on a recomputation (rare: patch embeddings)
        leaf = x.detach().requires_grad_()
        (gradient,) = torch.autograd.grad(module._conv_forward(leaf, weight, None), leaf, grad)  # type: ignore[operator]
    return gradient


def _scratch(buffers: PassBuffers | None, x: Tensor, dtype: torch.dtype) -> Tensor:
    """The pass's work buffer shaped as ``x``, or a fresh one outside a pass (a rule applied by hand)."""
    return buffers.scratch(x, dtype) if buffers is not None else torch.empty(x.shape, dtype=dtype, device=x.device)


class LinearRule(Function):
    r"""Epsilon / gamma rule on an affine layer ``z = W x + b`` (``nn.Linear``, HF ``Conv1D``, ``nn.Conv*``).

    Forward: ``z`` as the module computed it. Backward (Achtibat et al. 2024, Eq. 4, in gradient form; gamma rule
    as Ali et al. 2022's forward-value-preserving ``z_g (z / z_g).detach()``):

    .. math:: \frac{\partial}{\partial x} = W_g^\top \Big(\frac{\partial y}{\partial z} \odot
       \frac{z}{z_g + \epsilon\,\mathrm{sign}(z_g)}\Big), \quad W_g = W + \gamma W^+,\ b_g = b + \gamma b^+

    With ``gamma = 0``, ``z_g = z``: the ratio is ``|z| / (|z| + eps)`` and the scaled gradient is computed as
    ``dz - eps dz / (|z| + eps)`` (equal up to rounding; no second matmul). The gamma rule's ``z_g`` is one more
    affine map, computed in the backward.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 1, bias=False)
        >>> _ = torch.nn.init.ones_(layer.weight)
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> z = layer(x)
        >>> y = LinearRule.apply(x, z.detach(), layer, 1.0, 0.0, None)  # epsilon 1: ratio 3 / (3 + 1)
        >>> torch.equal(y, z), torch.autograd.grad(y.sum(), x)[0].tolist()
        (True, [[0.75, 0.75]])
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        x: Tensor,
        z: Tensor,
        module: nn.Module,
        epsilon: float,
        gamma: float,
        buffers: PassBuffers | None = None,
    ) -> Tensor:
        weight = module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        ctx.module, ctx.epsilon, ctx.gamma, ctx.buffers = module, epsilon, gamma, buffers
        ctx.save_for_backward(x, z, weight, bias)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:  # noqa: D102
        x, z, weight, bias = ctx.saved_tensors
        work = _working_dtype(z)  # float16 cannot hold the stabilisers: ratios at least in float32
        if ctx.gamma > 0:
            weight = weight + ctx.gamma * weight.clamp_min(0)
            bias = None if bias is None else bias + ctx.gamma * bias.clamp_min(0)
            z_g = _affine(ctx.module, x, weight, bias).to(work)
            guard = max(ctx.epsilon, LINEAR_GUARD)
            # z / (z_g + eps sign z_g), sign 0 = +1
            ratio = torch.where(z_g >= 0, guard, -guard).to(work).add_(z_g)
            scaled = torch.div(z.to(work), ratio, out=ratio).mul_(grad)
        else:
            # z / (z + eps sign z) = |z| / (|z| + eps), so dz * ratio = dz - eps dz / (|z| + eps): three passes over
            # one reused buffer (a fresh one per layer costs more than the arithmetic on CPU: see PassBuffers)
            scaled = _scratch(ctx.buffers, z, work)
            torch.abs(z, out=scaled) if z.dtype == work else scaled.copy_(z).abs_()
            scaled.add_(ctx.epsilon)
            torch.addcdiv(grad, grad, scaled, value=-ctx.epsilon, out=scaled)
        return _affine_transposed(ctx.module, x, weight, scaled.to(grad.dtype)), None, None, None, None, None


class LayerNormRule(Function):
    r"""LN-rule (Ali et al. 2022, Sec. 3.3) = AttnLRP's identity rule on LayerNorm: ``sigma`` is a constant.

    ``y = (x - mean x) / sigma * w + b`` with ``sigma`` held fixed is linear in ``x``; its backward is

    .. math:: \frac{\partial}{\partial x} = \frac{1}{\sigma}\big(w \odot \delta - \mathrm{mean}(w \odot \delta)\big)

    over the normalised dimensions, ``delta`` the output gradient (``sigma = sqrt(var x + eps)``, biased variance).
    The forward is LayerNorm's own kernel (``torch.native_layer_norm``, the value ``nn.LayerNorm`` returns, bit for
    bit), which also yields ``1 / sigma``; the backward is LayerNorm's own fused backward evaluated at a centred input
    (``zeros``, a zero tensor shaped as ``x`` and shared by every LayerNorm of a pass, stands in for ``x - mean x``),
    which drops exactly the term that differentiates ``sigma``.

    Example:
        >>> import torch
        >>> norm = torch.nn.LayerNorm(3)
        >>> x = torch.tensor([[1.0, 2.0, 6.0]], requires_grad=True)
        >>> z = LayerNormRule.apply(x, norm, torch.zeros_like(x))
        >>> delta = torch.tensor([[1.0, 0.0, 0.0]])
        >>> g = torch.autograd.grad(z, x, delta)[0]
        >>> sigma = torch.sqrt(x.detach().var(unbiased=False) + norm.eps)
        >>> torch.equal(z, norm(x)), torch.allclose(g, (delta - delta.mean()) / sigma)  # sigma held constant
        (True, True)
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, module: nn.Module, zeros: Tensor) -> Tensor:  # noqa: D102
        ctx.shape = list(module.normalized_shape)
        weight = None if module.weight is None else module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        y, _, rstd = torch.native_layer_norm(x, ctx.shape, weight, bias, module.eps)
        ctx.save_for_backward(zeros, rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        zeros, rstd, weight = ctx.saved_tensors
        grad_x, _, _ = torch.ops.aten.native_layer_norm_backward(
            grad.contiguous(), zeros, ctx.shape, torch.zeros_like(rstd), rstd, weight, None, [True, False, False]
        )
        return grad_x, None, None


class KeepValue(Function):
    """``value`` in the forward, the gradient of ``rule`` in the backward (for a module whose forward is its own).

    Example:
        >>> import torch
        >>> x = torch.tensor([3.0], requires_grad=True)
        >>> y = KeepValue.apply(torch.tensor([9.0]), 2 * x)  # value 9, gradient 2
        >>> y.item(), torch.autograd.grad(y, x)[0].item()
        (9.0, 2.0)
    """

    @staticmethod
    def forward(ctx: Any, value: Tensor, rule: Tensor) -> Tensor:  # noqa: D102
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        return None, grad


class IdentityRule(Function):
    r"""Identity rule (Achtibat et al. 2024, Eq. 9): ``y = f(x)`` keeps its value, ``dx = dy f(x) / (x + eps)``.

    Then ``x dx = f(x) dy``: the relevance of ``y`` reaches ``x`` unchanged. ``eps`` carries the sign of ``x``
    (its sign bit: ``+0 -> +eps``, ``-0 -> -eps``); the ratio is computed in float32 (float64 for float64 inputs)
    and cast to ``x``'s dtype.

    Example:
        >>> import torch
        >>> x = torch.tensor([2.0, -1.0], requires_grad=True)
        >>> y = torch.tanh(x)
        >>> z = IdentityRule.apply(x, y.detach(), None)
        >>> g = torch.autograd.grad(z.sum(), x)[0]
        >>> torch.equal(z, y), torch.allclose(x * g, y)
        (True, True)
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, buffers: PassBuffers | None = None) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x, y)
        ctx.buffers = buffers
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        x, y = ctx.saved_tensors
        work = _working_dtype(x)
        xf = x.to(work)
        # x + eps sign x, the sign read from the sign bit (copysign: one pass; +0 -> +eps, -0 -> -eps), then
        # f(x) / that, in the pass's work buffer; only the returned gradient is a fresh tensor
        ratio = _scratch(ctx.buffers, x, work)
        torch.copysign(xf.new_tensor(IDENTITY_EPSILON), xf, out=ratio).add_(xf)
        torch.div(y.to(work), ratio, out=ratio)
        if x.dtype != work:
            return ratio.to(x.dtype).mul_(grad), None, None
        return torch.mul(ratio, grad), None, None


class ScaleGradient(Function):
    """Identity in the forward, gradient times ``factor`` in the backward (uniform rule, Achtibat et al. Eq. 7).

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> torch.autograd.grad(ScaleGradient.apply(x, 0.25).sum(), x)[0].tolist()
        [0.25, 0.25]
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:  # noqa: D102
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return grad * ctx.factor, None


# ------------------------------------------------------------------------------------------------ module hooks


def _input_and_output(args: tuple[Any, ...], output: Any) -> tuple[Tensor, Tensor] | None:
    """``(x, y)`` of a single-tensor module whose input requires grad, else None (nothing to propagate)."""
    x = args[0] if args else None
    if isinstance(x, Tensor) and isinstance(output, Tensor) and x.requires_grad:
        return x, output
    return None


def linear_hook(
    epsilon: float, gamma: float, buffers: PassBuffers | None = None
) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    """Forward hook putting :class:`LinearRule` on the module's output (``buffers``: the pass's, shared)."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        pair = _input_and_output(args, output)
        return None if pair is None else LinearRule.apply(pair[0], pair[1].detach(), module, epsilon, gamma, buffers)

    return hook


def layer_norm_rule(module: nn.Module, buffers: PassBuffers, stack: ExitStack) -> None:
    """Put :class:`LayerNormRule` on ``module`` for the life of ``stack``.

    An ``nn.LayerNorm`` runs the rule AS its forward (one kernel, the same value); a subclass with a forward of its
    own keeps its value and gets the rule's gradient through a forward hook.
    """
    if type(module).forward is nn.LayerNorm.forward:

        def forward(x: Tensor) -> Tensor:
            if not x.requires_grad:
                return nn.LayerNorm.forward(module, x)
            return LayerNormRule.apply(x, module, buffers.zeros(x))

        stack.enter_context(instance_forward(module, forward))
        return

    def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        pair = _input_and_output(args, output)
        if pair is None:
            return None
        return KeepValue.apply(pair[1].detach(), LayerNormRule.apply(pair[0], module, buffers.zeros(pair[0])))

    stack.callback(module.register_forward_hook(hook).remove)


def identity_hook(buffers: PassBuffers | None = None) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    """Forward hook putting :class:`IdentityRule` on an element-wise module's output (activation, RMSNorm)."""

    def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        pair = _input_and_output(args, output)
        if pair is None or pair[0].shape != pair[1].shape:
            return None
        return IdentityRule.apply(pair[0], pair[1].detach(), buffers)

    return hook


def halve_input_hook(_module: nn.Module, args: tuple[Any, ...]) -> Any:
    """Forward pre-hook: the uniform rule on the product entering the module (a gated MLP's ``down_proj``)."""
    if args and isinstance(args[0], Tensor) and args[0].requires_grad:
        return (ScaleGradient.apply(args[0], 0.5), *args[1:])
    return None


def detach_input_hook(_module: nn.Module, args: tuple[Any, ...]) -> Any:
    """Forward pre-hook: no relevance through this input (CP-LRP on a gated MLP's gate: a constant)."""
    if args and isinstance(args[0], Tensor):
        return (args[0].detach(), *args[1:])
    return None


# ------------------------------------------------------------------------------------------------ functional calls

#: Element-wise activations called as functions that the identity rule covers.
FUNCTIONAL_ACTIVATIONS: frozenset[Callable[..., Any]] = frozenset(
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


class FunctionalIdentityRule(TorchFunctionMode):
    """Identity rule on activations called as functions (``torch.tanh`` in RoBERTa's classification head).

    Entered only around the forward of the modules a family marks ``"functional_activation"`` (a head, not the
    encoder), so the transformer layers never pay for the mode's per-call dispatch.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (
            func in FUNCTIONAL_ACTIVATIONS
            and not kwargs.get("inplace", False)
            and torch.is_grad_enabled()
            and args
            and isinstance(args[0], Tensor)
            and args[0].requires_grad
            and isinstance(out, Tensor)
            and out.shape == args[0].shape
        ):
            return IdentityRule.apply(args[0], out.detach(), None)
        return out


@contextmanager
def instance_forward(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """For the block, ``module.forward`` is ``forward`` (an instance attribute); restored exactly on exit.

    The class is untouched; a ``forward`` the instance already had is put back.

    Example:
        >>> import torch
        >>> layer = torch.nn.Identity()
        >>> with instance_forward(layer, lambda x: 2 * x):
        ...     inside = layer(torch.ones(1)).item()
        >>> inside, layer(torch.ones(1)).item(), "forward" in vars(layer)
        (2.0, 1.0, False)
    """
    own = module.__dict__.get("forward", _MISSING)
    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is _MISSING:
            del module.forward
        else:
            module.forward = own  # type: ignore[method-assign]


def functional_identity_rule_inside(module: nn.Module, stack: ExitStack) -> None:
    """For the life of ``stack``, run ``module``'s forward inside :class:`FunctionalIdentityRule`.

    Example:
        >>> import torch
        >>> from contextlib import ExitStack
        >>> class Head(torch.nn.Module):
        ...     def forward(self, x):
        ...         return torch.tanh(x)
        >>> head, x = Head(), torch.tensor([2.0], requires_grad=True)
        >>> with ExitStack() as stack:
        ...     functional_identity_rule_inside(head, stack)
        ...     g = torch.autograd.grad(head(x).sum(), x)[0]
        >>> torch.allclose(x * g, torch.tanh(x)), "forward" in vars(head)
        (True, False)
    """
    inner = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with FunctionalIdentityRule():
            return inner(*args, **kwargs)

    stack.enter_context(instance_forward(module, forward))
