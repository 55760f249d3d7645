"""Sharded models under the engine: FSDP2 is served under a scoped full-parameter view, the others are refused.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) every forward and backward of a sharded module all-gathers
its parameters, a collective that every rank must enter the same number of times in the same order. The engine's
work per rank is data dependent (uneven probe shards, a rank with no sample, out-of-memory halving, skipped rows,
the metrics' deduplicated perturbation forwards), so a pass-by-pass lockstep would have to pad every one of those
with dummy passes, and an out-of-memory error on one rank in the middle of a pass could never be retried. Instead,
:func:`gathered_parameters` all-gathers every sharded parameter ONCE, on every rank, before the first pass (the same
collectives on every rank whatever its shard), keeps them gathered through every pass (FSDP2's own switches:
no reshard after forward or backward, no gradient reduction) and restores the model on exit. Every pass in between
is local: no collective can be left waiting, whatever each rank does. The price is memory: for the duration of an
explanation each rank holds the full parameters (in FSDP2's ``param_dtype``), never gradients or optimizer state.

FSDP1 (``FullyShardedDataParallel``, Lightning's ``FSDPStrategy``), DeepSpeed ZeRO-3, tensor parallelism and 2-D
meshes (HSDP, FSDP2 + TP) are not served: :func:`sharding_refusal` names them and the monitor refuses them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from lightning_xai.errors import LightningXAIError

#: What to do instead of an unserved sharding (the end of every refusal).
SERVED_SHARDING = (
    "Shard with FSDP2 instead (`fully_shard` on a 1-D device mesh: by hand, or with Lightning's "
    "ModelParallelStrategy(data_parallel_size=<processes>, tensor_parallel_size=1) and fully_shard in "
    "configure_model), monitor a DDP run (strategy='ddp'), or explain a saved checkpoint after training with "
    "`lightning-xai explain`."
)


def sharded_message(owner: str, reason: str, serves_fsdp2: bool) -> str:
    """The refusal of an unserved sharding: who refuses, the reason, why it matters, and what to do.

    Example:
        >>> sharded_message("ConceptMonitor", "strategy FSDPStrategy", serves_fsdp2=False)[:71]
        'ConceptMonitor does not support sharded training (strategy FSDPStrategy'
    """
    if serves_fsdp2:
        return (
            f"{owner} does not support sharded training with {reason}. Explaining runs extra forward and backward "
            "passes outside the training step; with sharded parameters every rank would have to enter the same "
            "parameter collectives whatever its probe samples, which the monitor guarantees only for FSDP2 (it "
            "gathers the parameters once per validation and explains locally). " + SERVED_SHARDING
        )
    return (
        f"{owner} does not support sharded training ({reason}): its passes run outside the training step, every "
        "rank would have to run the very same passes (each rank has its own samples, so the parameter "
        "all-gathers would deadlock), and a backward through sharded modules fires their gradient reduce-scatter "
        "hooks. Monitor a DDP run instead (strategy='ddp'), or explain a saved checkpoint after training with "
        "`lightning-xai explain`."
    )


#: The FSDP2 parameter-group switches :func:`gathered_parameters` sets for its duration and restores.
GROUP_FIELDS = ("post_forward_mesh_info", "reshard_after_backward", "reduce_grads", "all_reduce_grads")


def fsdp2_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that ``fully_shard`` (FSDP2) manages, in ``model.modules()`` order.

    The order is the same on every rank; the list is empty when FSDP2 is unavailable.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> fsdp2_modules(tiny_bert())
        []
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without distributed support
        return []
    return [module for module in model.modules() if isinstance(module, FSDPModule)]


def _param_groups(module: nn.Module) -> list[Any]:
    state = module._get_fsdp_state()  # type: ignore[operator]
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is None:  # older FSDP2: one group per state
        group = getattr(state, "_fsdp_param_group", None)
        groups = [] if group is None else [group]
    return list(groups)


def _fsdp2_internals_problem(modules: Sequence[nn.Module]) -> str | None:
    """Why this torch's FSDP2 state cannot be switched and restored exactly, or None.

    The switches are public (``set_reshard_after_forward``, ...), but FSDP2 has no getters: restoring the user's own
    settings needs the parameter groups' fields, checked here before anything is changed.
    """
    for module in modules:
        try:
            state = module._get_fsdp_state()  # type: ignore[operator]
            groups = _param_groups(module)
        except AttributeError as error:
            return f"this torch's FSDP2 ({torch.__version__}) does not expose its state as expected ({error})"
        needed = (*GROUP_FIELDS, "is_unsharded", "reshard", "mesh_info")
        for group in groups:
            missing = [name for name in needed if not hasattr(group, name)]
            if missing:
                return (f"this torch's FSDP2 ({torch.__version__}) has no {', '.join(missing)} on its parameter "
                        "groups, which the monitor switches and restores")
        if not hasattr(state, "_is_root") or not hasattr(state, "_lazy_init"):
            return f"this torch's FSDP2 ({torch.__version__}) has no lazy root initialisation the monitor can call"
    return None


def sharding_refusal(strategy: Any, model: nn.Module | None, *, serves_fsdp2: bool) -> str | None:
    """Why ``strategy`` or ``model`` is sharded in a way the caller cannot serve, or None.

    ``serves_fsdp2``: whether the caller explains under :func:`gathered_parameters` (the explanation engine does;
    the concept monitor does not). Served: ``fully_shard`` (FSDP2) on a 1-D device mesh, with Lightning's
    ``ModelParallelStrategy`` or by hand. Strategies are matched by class name, so ``lightning.pytorch`` and
    ``pytorch_lightning`` are both recognised.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> sharding_refusal(None, tiny_bert(), serves_fsdp2=True) is None
        True
        >>> class DeepSpeedStrategy:
        ...     zero_stage_3 = True
        >>> sharding_refusal(DeepSpeedStrategy(), None, serves_fsdp2=True)
        'strategy DeepSpeedStrategy with ZeRO stage 3'
    """
    name = type(strategy).__name__
    if name == "FSDPStrategy":
        return "strategy FSDPStrategy (FSDP1, FullyShardedDataParallel)"
    if name == "ModelParallelStrategy" and not serves_fsdp2:
        return f"strategy {name}"
    if name == "DeepSpeedStrategy" and bool(getattr(strategy, "zero_stage_3", False)):
        return "strategy DeepSpeedStrategy with ZeRO stage 3"
    if model is None:
        return None
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            return "the model is wrapped in FullyShardedDataParallel (FSDP1)"
    modules = fsdp2_modules(model)
    dtensors = [p for p in model.parameters() if type(p).__name__ == "DTensor"]
    if not serves_fsdp2:
        if modules or dtensors:
            return "the model is sharded with fully_shard (FSDP2) or its parameters are DTensors"
        return None
    managed = {id(p) for module in modules for p in module.parameters()}
    if any(id(p) not in managed for p in dtensors):
        return "the model has DTensor parameters outside fully_shard (tensor parallelism)"
    meshes = {p.device_mesh.ndim for p in dtensors}  # type: ignore[attr-defined]
    if meshes - {1}:
        return (f"the model is sharded over a {max(meshes)}-D device mesh (HSDP, or FSDP2 with tensor parallelism); "
                "only fully_shard on a 1-D mesh is served")
    return _fsdp2_internals_problem(modules) if modules else None


def fingerprint(names: Sequence[str], model: nn.Module) -> list[int]:
    """Numbers every rank of one run must agree on before gathering: methods, parameters, FSDP2 groups.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> a, b = fingerprint(["grad_sam"], tiny_bert()), fingerprint(["raw_attention"], tiny_bert())
        >>> a[1:] == b[1:], a[0] != b[0]
        (True, True)
    """
    modules = fsdp2_modules(model)
    groups = sum(len(_param_groups(module)) for module in modules)
    numel = sum(p.numel() for p in model.parameters())  # a DTensor's numel is its global one
    return [zlib.crc32("\n".join(names).encode()), numel, len(modules), groups]


def agree(what: str, values: Sequence[int], device: torch.device) -> None:
    """Raise on every rank, naming ``what``, when the ranks' ``values`` differ (one all-reduce, no hang).

    A rank configured differently would otherwise enter different collectives than the others and wait on them
    until the process group's timeout.
    """
    local = torch.tensor([*values, *(-v for v in values)], dtype=torch.long, device=device)
    extremes = local.clone()
    torch.distributed.all_reduce(extremes, op=torch.distributed.ReduceOp.MAX)
    count = len(values)
    if not torch.equal(extremes[:count], -extremes[count:]):  # max != min somewhere
        rank = torch.distributed.get_rank()
        raise LightningXAIError(
            f"the processes disagree on {what} (rank {rank}: {list(values)}; largest over ranks: "
            f"{extremes[:count].tolist()}): every rank must explain with the same methods and the same sharded "
            "model, or the parameter all-gathers would not match."
        )


def every_rank_ok(ok: bool, device: torch.device | str) -> bool:
    """Whether every rank passed ``ok=True`` (one all-reduce; every rank must call it at the same point).

    Without ``torch.distributed`` initialised, or with one process, it is ``ok`` itself.

    Example:
        >>> every_rank_ok(True, "cpu"), every_rank_ok(False, "cpu")
        (True, False)
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return ok
    flag = torch.tensor([int(ok)], dtype=torch.long, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


@contextmanager
def reduction_guard(distributed: bool, device: torch.device | str) -> Iterator[Callable[[], bool]]:
    """For a block every rank runs up to a reduction: no rank is left waiting at it for one that raised.

    The block calls the yielded ``reached()`` where it reaches the reduction: one all-reduce, whether every rank got
    there (always True for one process). A rank that raises before that joins the same all-reduce with False, so the
    others learn it there and raise too instead of waiting for it until the timeout; then it re-raises.

    Example:
        >>> with reduction_guard(False, "cpu") as reached:
        ...     ok = reached()
        >>> ok
        True
    """
    reached: list[bool] = []

    def reach() -> bool:
        reached.append(True)
        return not distributed or every_rank_ok(True, device)

    try:
        yield reach
    except Exception:
        if distributed and not reached:  # the others wait at the reduction: tell them, then raise here
            every_rank_ok(False, device)
        raise


@contextmanager
def gathered_parameters(model: nn.Module, *, device: torch.device | None = None,
                        names: Sequence[str] = ()) -> Iterator[None]:
    """Every FSDP2-sharded parameter of ``model`` gathered on this rank for the block; the model restored after.

    Every rank must enter this together (it all-gathers each parameter group once, in ``model.modules()`` order);
    inside, forwards and backwards run no collective: FSDP2's reshard after forward and after backward and its
    gradient reduction are switched off for the block (its public switches), so a backward leaves no ``.grad`` to
    reduce and no reduce-scatter is issued. On exit every switch gets back its own value and the groups that were
    sharded on entry are sharded again (a local free, no collective). A model without ``fully_shard`` modules is
    left alone. Under ``torch.distributed`` with several ranks, the ranks first check that they agree on ``names``
    and the model (:func:`agree`), so a mismatch raises on every rank instead of hanging.

    Args:
        model: the model (its FSDP2 modules are found inside).
        device: the device of the agreement tensor (the process group's: CUDA for NCCL).
        names: the explained methods (and metrics), checked equal on every rank.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> with gathered_parameters(tiny_bert()):  # no fully_shard module: nothing to gather
        ...     pass
    """
    modules = fsdp2_modules(model)
    if not modules:
        yield
        return
    problem = _fsdp2_internals_problem(modules)
    if problem is not None:
        raise LightningXAIError(f"cannot explain this FSDP2 model: {problem}")
    inference_only = inference_tensors_problem(model)
    if inference_only is not None:  # the same on every rank: every rank raises here, none waits
        raise LightningXAIError(inference_only)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        agree("the explained methods and the sharded model", fingerprint(names, model),
              torch.device("cpu") if device is None else torch.device(device))
    # FSDP2 picks its root at the first forward; do it now so that the switches below are not undone by it
    with torch.inference_mode(False):
        for module in modules:
            state = module._get_fsdp_state()  # type: ignore[operator]
            if state._is_root is None:
                state._lazy_init()
    saved = []  # per module: its state's auto flag, and per group: its switches and whether it was gathered
    for module in modules:
        groups = [(group, {name: getattr(group, name) for name in GROUP_FIELDS}, group.is_unsharded)
                  for group in _param_groups(module)]
        auto = getattr(module._get_fsdp_state(), "_auto_reshard_after_forward", None)  # type: ignore[operator]
        saved.append((module, auto, groups))
    with ExitStack() as restore:
        restore.callback(_restore, saved)
        for module in modules:
            module.set_reshard_after_forward(False, recurse=False)  # type: ignore[operator]
            module.set_reshard_after_backward(False, recurse=False)  # type: ignore[operator]
            module.set_requires_gradient_sync(False, recurse=False)  # type: ignore[operator]
        # allocated outside inference mode (Lightning validates in it): the passes differentiate through them
        with torch.inference_mode(False), torch.no_grad():
            for module in modules:
                module.unshard()  # type: ignore[operator]
        yield


def inference_tensors_problem(model: nn.Module) -> str | None:
    """Why FSDP2's full parameters of ``model`` cannot be explained, when it allocated them in inference mode.

    FSDP2 allocates them once, at its first forward, and reuses them: allocated inside ``torch.inference_mode``, they
    can never be written outside inference mode nor saved for a backward, so no explanation pass can run on them.
    The answer is the same on every rank.

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> inference_tensors_problem(tiny_bert()) is None
        True
    """
    for module in fsdp2_modules(model):
        for group in _param_groups(module):
            for param in getattr(group, "fsdp_params", ()):
                full = getattr(param, "_unsharded_param", None)
                if isinstance(full, torch.Tensor) and full.is_inference():
                    return (
                        "cannot explain this FSDP2 model: its parameters were first gathered inside "
                        "torch.inference_mode (e.g. by trainer.validate() with Trainer(inference_mode=True)), so "
                        "FSDP2 holds them in inference tensors that no explanation can differentiate through. Pass "
                        "Trainer(inference_mode=False) (validation inside fit() already runs without inference mode)."
                    )
    return None


def _restore(saved: list[tuple[nn.Module, bool | None, list[tuple[Any, dict[str, Any], bool]]]]) -> None:
    """Give every switch its own value back and reshard what was sharded on entry (local frees)."""
    for module, auto, groups in saved:
        state = module._get_fsdp_state()  # type: ignore[operator]
        if auto is not None:
            state._auto_reshard_after_forward = auto
        for group, fields, was_unsharded in groups:
            for name, value in fields.items():
                setattr(group, name, value)
            if not was_unsharded and group.is_unsharded:
                group.reshard()
