"""HF transformers models whose attention goes through the ``AttentionInterface`` (transformers >= 5).

For one pass the model's attention implementation is switched to a registered recording function that runs the
model's OWN eager attention (``eager_attention_forward`` of its modeling file, so masks, scaling and any model
quirks are exactly eager's) and keeps the returned probabilities as live graph tensors. The previous
implementation (``sdpa`` during training, typically) is restored on exit, also when an exception is raised.

Registering a new key in ``AttentionInterface``/``AttentionMaskInterface`` adds an entry and changes nothing for
models that do not select it; without the mask registration transformers silently drops the padding mask of
unknown implementations.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from lightning_xai.capture.base import AttentionCall, AttentionCapture, AttentionRecord, eval_mode
from lightning_xai.errors import LightningXAIError, UnstreamableAttentionError

#: The attention-implementation key under which the recording function is registered.
RECORDING_IMPLEMENTATION = "lightning_xai_recording"
#: The key of the streaming function: the model's sdpa attention, each call's q, k, v and output kept.
STREAMING_IMPLEMENTATION = "lightning_xai_streaming_sdpa"
#: Attention-function arguments that change the attention in ways :class:`AttentionCall` does not describe.
_UNSTREAMABLE_ARGUMENTS = ("softcap", "s_aux", "sinks", "position_bias")

_ACTIVE_RECORD: ContextVar[AttentionRecord | None] = ContextVar("lightning_xai_active_record", default=None)


def generic_eager_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """Plain softmax attention, used when a model's modeling file has no ``eager_attention_forward``.

    Handles grouped-query attention by repeating key/value heads, as HF's eager functions do.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # GQA: one key/value head serves several query heads
        repeats = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(repeats, dim=1)
        value = value.repeat_interleave(repeats, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def eager_attention_for(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor]]:
    """The ``eager_attention_forward`` of the module's own modeling file (HF's lookup), else the generic one."""
    modeling = sys.modules.get(type(module).__module__)
    return getattr(modeling, "eager_attention_forward", generic_eager_attention)


def _recording_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    output, probs = eager_attention_for(module)(module, query, key, value, attention_mask, *args, **kwargs)
    record = _ACTIVE_RECORD.get()
    if record is not None:
        record.attentions.append(probs)
    return output, probs


def register_attention_function(key: str, function: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """Register ``function`` as attention implementation ``key``, with eager masking.

    Every ``AttentionInterface`` registration of the package goes through here (the recording function below and
    the LRP rule functions). Registering a new key changes nothing for models that do not select it; the mask
    registration is required because transformers silently drops the padding mask of unknown implementations.
    """
    AttentionInterface.register(key, function)
    AttentionMaskInterface.register(key, eager_mask)


register_attention_function(RECORDING_IMPLEMENTATION, _recording_attention)

_SDPA_SIGNATURE = inspect.signature(sdpa_attention_forward)


def _streaming_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """HF's ``sdpa_attention_forward``, unchanged; the call's q, k, v, mask and output are kept (no probabilities)."""
    record = _ACTIVE_RECORD.get()
    if record is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    arguments = _SDPA_SIGNATURE.bind(module, query, key, value, attention_mask, *args, **kwargs).arguments
    extra = {**arguments.get("kwargs", {}), "position_bias": arguments.get("position_bias")}
    unstreamable = [name for name in _UNSTREAMABLE_ARGUMENTS if extra.get(name) is not None]
    if unstreamable or float(arguments.get("dropout") or 0.0) > 0.0:
        found = ", ".join(unstreamable) or "attention dropout"
        raise UnstreamableAttentionError(
            f"The attention of {type(module).__name__} uses {found}, which the streamed pass does not rebuild from "
            "q, k, v and the mask: use the eager attention maps for this model (GradSAM(), not attention='sdpa')."
        )
    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    flag = arguments.get("is_causal")
    flag = getattr(module, "is_causal", True) if flag is None else flag
    scaling = arguments.get("scaling")
    record.calls.append(
        AttentionCall(
            query=query,
            key=key,
            value=value,
            mask=attention_mask,
            causal=bool(query.shape[2] > 1 and attention_mask is None and flag),  # as sdpa_attention_forward decides
            scaling=float(query.shape[-1] ** -0.5 if scaling is None else scaling),
            output=output,
        )
    )
    return output, None


AttentionInterface.register(STREAMING_IMPLEMENTATION, _streaming_attention)
AttentionMaskInterface.register(STREAMING_IMPLEMENTATION, sdpa_mask)  # the masks sdpa gets (bool, or None + causal)


def configured_attention(model: nn.Module) -> frozenset[str]:
    """The attention implementations ``model``'s configs are set to (empty for a model that is not HF's).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
        >>> sorted(configured_attention(BertForSequenceClassification(config)))
        ['sdpa']
    """
    if not isinstance(model, PreTrainedModel):
        return frozenset()
    # a sub-config no module of the model uses (CLIP classifier's text config) has none set
    implementations = (config._attn_implementation for config in _all_configs(model))
    return frozenset(str(implementation) for implementation in implementations if implementation is not None)


def _all_configs(model: PreTrainedModel) -> list[Any]:
    """Every config whose attention implementation ``set_attn_implementation`` may touch."""
    seen: dict[int, Any] = {}
    pending = [model.config] + [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    while pending:
        config = pending.pop()
        if id(config) in seen:
            continue
        seen[id(config)] = config
        for name in getattr(config, "sub_configs", {}) or {}:
            sub = getattr(config, name, None)
            if sub is not None:
                pending.append(sub)
    return list(seen.values())


class _SubConfigWarningFilter(logging.Filter):
    """Drops transformers' warning that a sub-config without a sub-model (CLIP's text config) was switched.

    Expected here, where every config is restored on exit; otherwise it is printed at every explanation pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "without finding the associated sub-model" not in record.getMessage()


@contextmanager
def _quiet_sub_config_warning() -> Iterator[None]:
    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _SubConfigWarningFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@contextmanager
def attention_implementation(model: nn.Module, key: str) -> Iterator[None]:
    """Switch ``model`` (and every sub-config) to attention implementation ``key``; restore each config on exit.

    The previous implementation of EVERY config (``sdpa`` during training, typically) is restored in ``finally``,
    also when an exception is raised inside the block.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, vocab_size=50))
        >>> with attention_implementation(model, RECORDING_IMPLEMENTATION):
        ...     inside = model.config._attn_implementation
        >>> inside, model.config._attn_implementation
        ('lightning_xai_recording', 'sdpa')
    """
    set_implementation = getattr(model, "set_attn_implementation", None)
    if not isinstance(model, PreTrainedModel) or not callable(set_implementation):
        raise LightningXAIError(
            f"Switching the attention implementation needs a HF transformers model (set_attn_implementation); got "
            f"{type(model).__name__}"
        )
    previous = [(config, config._attn_implementation_internal) for config in _all_configs(model)]
    try:
        with _quiet_sub_config_warning():
            set_implementation(key)
        yield
    finally:
        for config, implementation in previous:
            config._attn_implementation_internal = implementation


class HFAttentionCapture(AttentionCapture):
    """Any HF ``PreTrainedModel`` on the attention interface: BERT, RoBERTa, DistilBERT, ViT, DeiT, ...

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> cfg = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8,
        ...                  vocab_size=50)
        >>> model = BertForSequenceClassification(cfg).train()
        >>> with HFAttentionCapture(model).record() as rec:
        ...     logits = model(input_ids=torch.tensor([[2, 7, 9, 3]])).logits
        >>> [tuple(a.shape) for a in rec.attentions]
        [(1, 2, 4, 4), (1, 2, 4, 4)]
        >>> model.training, model.config._attn_implementation
        (True, 'sdpa')
    """

    family = "huggingface"
    examples = "BERT, RoBERTa, DistilBERT, ViT, DeiT (transformers>=5 models on the AttentionInterface)"

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        """True for HF models that can switch their attention implementation at run time."""
        if not isinstance(model, PreTrainedModel):
            return False
        can_set = getattr(model, "_can_set_attn_implementation", None)
        return bool(getattr(model, "_supports_attention_backend", False)) and (can_set is None or bool(can_set()))

    def layer_modules(self) -> list[nn.Module]:
        """The transformer layers whose outputs are the hidden states (from ``_can_record_outputs``)."""
        layer_types = tuple(
            spec
            for module in self.model.modules()
            if isinstance(spec := (getattr(module, "_can_record_outputs", None) or {}).get("hidden_states"), type)
        )
        return [m for m in self.model.modules() if layer_types and isinstance(m, layer_types)]

    @contextmanager
    def record(self) -> Iterator[AttentionRecord]:
        """Record attention (and layer outputs) for one pass; restore backend, modes and hooks on exit.

        Layer outputs are recorded with our own forward hooks, removed on exit: asking the model for
        ``output_hidden_states`` would make transformers install permanent hooks (which also break pickling).
        """
        with self._recording(RECORDING_IMPLEMENTATION) as record:
            yield record

    @classmethod
    def streaming_refusal(cls, model: nn.Module) -> str | None:
        """None when every transformers model inside ``model`` supports sdpa (``_supports_sdpa``), else why not."""
        unsupported = sorted({type(m).__name__ for m in model.modules()
                              if isinstance(m, PreTrainedModel) and not getattr(m, "_supports_sdpa", False)})
        if unsupported:
            return f"{', '.join(unsupported)} does not support sdpa attention in transformers"
        return None

    @contextmanager
    def stream(self) -> Iterator[AttentionRecord]:
        """One pass on the model's sdpa attention, keeping each call's q, k, v, mask and output (no maps).

        The maps are never materialised; :attr:`AttentionRecord.calls` holds what is needed to rebuild any block
        of them. Backend, modes and hooks are restored on exit, also when an exception is raised.

        Example:
            >>> import torch
            >>> from transformers import LlamaConfig, LlamaForSequenceClassification
            >>> model = LlamaForSequenceClassification(LlamaConfig(hidden_size=16, intermediate_size=24,
            ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=20))
            >>> with HFAttentionCapture(model).stream() as rec:
            ...     logits = model(input_ids=torch.tensor([[2, 7, 9, 3]])).logits
            >>> len(rec.attentions), [tuple(c.key.shape) for c in rec.calls], rec.calls[0].causal
            (0, [(1, 2, 4, 4), (1, 2, 4, 4)], True)
            >>> model.config._attn_implementation
            'sdpa'
        """
        with self._recording(STREAMING_IMPLEMENTATION) as record:
            yield record

    @contextmanager
    def _recording(self, implementation: str) -> Iterator[AttentionRecord]:
        record = AttentionRecord()

        def keep_output(_module: nn.Module, _args: object, output: Any) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(hidden, Tensor):
                record.hidden_states.append(hidden)

        handles = [layer.register_forward_hook(keep_output) for layer in self.layer_modules()]
        token = _ACTIVE_RECORD.set(record)
        try:
            with eval_mode(self.model), attention_implementation(self.model, implementation):
                yield record
        finally:
            for handle in handles:
                handle.remove()
            _ACTIVE_RECORD.reset(token)
