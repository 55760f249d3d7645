"""Capture by scoped module hooks, for models whose attention does not go through the ``AttentionInterface``.

DeBERTa-v2/v3 and MPNet compute their attention probabilities inside their own self-attention modules (with their
relative-position terms) and return them only when asked (``output_attentions``). For one pass this capture asks
every given attention module for them (a forward pre-hook sets its ``output_attentions`` argument), keeps the
returned probabilities (live graph tensors: the very tensors multiplied with the values) and every layer's output,
and removes its hooks on exit. Asking the whole model for ``output_attentions`` is avoided: it makes transformers 5
install permanent hooks.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_xai.capture.base import AttentionCapture, AttentionRecord, eval_mode


def _flag_position(module: nn.Module) -> int | None:
    """Index of ``output_attentions`` among the arguments of the bound ``module.forward`` (None if absent)."""
    parameters = list(inspect.signature(module.forward).parameters)
    return parameters.index("output_attentions") if "output_attentions" in parameters else None


class ModuleHookCapture(AttentionCapture):
    """Records ``output[probabilities_index]`` of each attention module, asked for with ``output_attentions=True``.

    Args:
        model: the model.
        attention_modules: the modules returning ``(output, probabilities)`` when ``output_attentions`` is set,
            in layer order.
        layer_modules: the transformer layers whose outputs are the hidden states, in layer order.
        eager_class: the attention class whose ``forward`` computes the probabilities; a module of a subclass that
            cannot return them (an SDPA variant) runs this ``forward`` for the pass (bound on the instance, removed
            on exit).
    """

    family: ClassVar[str] = "module hooks"
    examples: ClassVar[str] = "DeBERTa-v2/v3, MPNet"
    #: Where the probabilities are in the attention module's output tuple.
    probabilities_index: ClassVar[int] = 1

    def __init__(
        self,
        model: nn.Module,
        attention_modules: Sequence[nn.Module],
        layer_modules: Sequence[nn.Module],
        eager_class: type[nn.Module] | None = None,
    ) -> None:
        super().__init__(model)
        self.attention_modules = list(attention_modules)
        self.layer_modules = list(layer_modules)
        self.eager_class = eager_class

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        """Any module: the family says which of its modules return the probabilities."""
        return True

    @contextmanager
    def record(self) -> Iterator[AttentionRecord]:
        """Record attention probabilities and layer outputs for one pass in eval mode; remove the hooks on exit."""
        record = AttentionRecord()

        def ask(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
            position = _flag_position(module)
            if "output_attentions" in kwargs or position is None or position >= len(args):
                return args, {**kwargs, "output_attentions": True}
            return (*args[:position], True, *args[position + 1 :]), kwargs

        def keep_probabilities(_module: nn.Module, _args: object, output: Any) -> None:
            probabilities = output[self.probabilities_index] if isinstance(output, (tuple, list)) else None
            if isinstance(probabilities, Tensor):
                record.attentions.append(probabilities)

        def keep_output(_module: nn.Module, _args: object, output: Any) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(hidden, Tensor):
                record.hidden_states.append(hidden)

        handles = [m.register_forward_pre_hook(ask, with_kwargs=True) for m in self.attention_modules]
        handles += [m.register_forward_hook(keep_probabilities) for m in self.attention_modules]
        handles += [m.register_forward_hook(keep_output) for m in self.layer_modules]
        rebound = [m for m in self.attention_modules if self._needs_eager(m)]
        try:
            for module in rebound:  # the instance's forward only, for this pass
                module.forward = types.MethodType(self.eager_class.forward, module)  # type: ignore[union-attr]
            with eval_mode(self.model):
                yield record
        finally:
            for module in rebound:
                module.__dict__.pop("forward", None)
            for handle in handles:
                handle.remove()

    def _needs_eager(self, module: nn.Module) -> bool:
        cls = self.eager_class
        return cls is not None and type(module).forward is not cls.forward and isinstance(module, cls)
