"""Process-level utilities of the engine (no Lightning): error policy, out-of-memory handling, RNG, memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch

from lightning_xai.errors import LightningXAIError

OnError = Literal["warn", "raise"]


class ErrorPolicy:
    """What happens when one explainer, metric, sink or heatmap fails: warn once and go on, or raise.

    Args:
        on_error: ``"warn"``: each distinct failure is warned once (rank zero) and skipped; ``"raise"``: it is
            re-raised as a :class:`~lightning_xai.errors.LightningXAIError` naming where it happened.
        owner: prefix of the messages (``"ExplanationMonitor"``).

    Example:
        >>> policy = ErrorPolicy("raise")
        >>> policy.handle("explainer 'x'", RuntimeError("boom"))
        Traceback (most recent call last):
        ...
        lightning_xai.errors.LightningXAIError: ExplanationMonitor: explainer 'x' failed: RuntimeError: boom
    """

    def __init__(self, on_error: OnError = "warn", owner: str = "ExplanationMonitor") -> None:
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be one of 'warn', 'raise'; got {on_error!r}")
        self.on_error: OnError = on_error
        self.owner = owner
        self._warned: set[tuple[str, str]] = set()

    def handle(self, where: str, error: BaseException) -> None:
        """Raise (``"raise"``) or warn once that ``where`` failed and was skipped (``"warn"``)."""
        if self.on_error == "raise":
            raise LightningXAIError(f"{self.owner}: {where} failed: {type(error).__name__}: {error}") from error
        self.warn_once(
            where + type(error).__name__,
            f"{where} failed and was skipped ({type(error).__name__}: {error}). Training continues; "
            "pass on_error='raise' to get the full traceback.",
        )

    def warn_once(self, key: str, message: str) -> None:
        """Warn ``message`` on rank zero, once per distinct ``(key, message)``."""
        if (key, message) in self._warned:
            return
        self._warned.add((key, message))
        from lightning_utilities.core.rank_zero import rank_zero_warn

        rank_zero_warn(message if message.startswith(self.owner) else f"{self.owner}: {message}")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing.

    Example:
        >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory")), is_out_of_memory(KeyError())
        (True, False)
    """
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def raise_out_of_memory(errors: Mapping[str, BaseException]) -> None:
    """Raise the first out-of-memory error among those a call recorded per method (``explain(errors=...)``).

    Out of memory is the pass's size, not the method's fault: the caller retries with fewer rows instead of
    counting the method as failed.

    Example:
        >>> raise_out_of_memory({"grad_sam": KeyError("x")})  # not out of memory: left to the caller
        >>> raise_out_of_memory({"grad_sam": RuntimeError("CUDA out of memory")})
        Traceback (most recent call last):
        ...
        RuntimeError: CUDA out of memory
    """
    error = next((error for error in errors.values() if is_out_of_memory(error)), None)
    if error is not None:
        raise error


def halved(rows: int, tokens: int | None) -> tuple[int, int | None]:
    """Both bounds of a chunk (rows, rows x tokens) halved, never below 1, after out-of-memory.

    Example:
        >>> halved(5, None), halved(1, 3)
        ((2, None), (1, 1))
    """
    return max(1, rows // 2), None if tokens is None else max(1, tokens // 2)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore the global torch RNG streams afterwards, so monitoring never changes what training draws next."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def logging_step(trainer: Any) -> int:
    """The step Lightning logs a validation's scalars at, so images and histograms line up with them.

    Lightning's ``log_metrics`` uses the count of batches that stepped the optimizer, which is not always
    ``global_step`` (off by one at the end of an epoch); older or other trainers fall back to ``global_step``.
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(trainer.global_step)


def world_size() -> int:
    """Processes in the default ``torch.distributed`` group (1 when not distributed)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


@contextmanager
def precision_context(strategy: Any) -> Iterator[None]:
    """The strategy's precision context (e.g. bf16 autocast for ``precision="bf16-mixed"``), as validation uses."""
    plugin = getattr(strategy, "precision_plugin", None)
    context = getattr(plugin, "forward_context", None)
    if context is None:
        yield
        return
    with context():
        yield


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
