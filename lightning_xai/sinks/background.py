"""Publishing off the training thread: rendering and writing a validation's heatmaps while training goes on.

A monitored validation ends with :func:`~lightning_xai.sinks.publish`: every heatmap rendered, encoded and handed to
the sinks (about 1.6-3 s for the demo's six methods x four samples on a 2-core CPU). On a GPU run the CPU is idle
while the accelerator trains, so :class:`BackgroundPublisher` runs those calls on one worker thread, in the order they
were submitted, and the training loop does not wait for them. The monitor drains it at ``teardown`` (and on an
exception) before Lightning finalises the loggers, so nothing submitted is lost or written after its logger closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["BackgroundPublisher"]


class BackgroundPublisher:
    """Runs submitted calls one at a time on a worker thread, oldest first; :meth:`drain` waits for all of them.

    An error of a call does not stop the later ones; :meth:`drain` raises the first error once every call has
    finished (the worker thread cannot raise into the training loop).

    Example:
        >>> publisher, done = BackgroundPublisher(), []
        >>> publisher.submit(done.append, 1)
        >>> publisher.submit(done.append, 2)
        >>> publisher.drain()
        >>> done
        [1, 2]
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Calls submitted and not yet drained."""
        with self._lock:
            return len(self._pending)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` on the worker thread (started on first use)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning_xai_publish")
            self._pending.append(self._executor.submit(fn, *args, **kwargs))

    def raise_finished_errors(self) -> None:
        """Raise the first error of the calls that have already finished (without waiting for the others).

        Example:
            >>> import time
            >>> publisher = BackgroundPublisher()
            >>> publisher.submit(int, "not a number")
            >>> while publisher.pending and not publisher._pending[0].done():
            ...     time.sleep(0.01)
            >>> publisher.raise_finished_errors()
            Traceback (most recent call last):
            ...
            ValueError: invalid literal for int() with base 10: 'not a number'
        """
        with self._lock:
            finished = [future for future in self._pending if future.done()]
            self._pending = [future for future in self._pending if not future.done()]
        errors = [error for future in finished if (error := future.exception()) is not None]
        if errors:
            raise errors[0]

    def drain(self) -> None:
        """Wait until every submitted call has finished; then raise the first error any of them raised."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = [error for future in pending if (error := future.exception()) is not None]
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Drain, then stop the worker thread (a later :meth:`submit` starts a new one)."""
        try:
            self.drain()
        finally:
            with self._lock:
                executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a deep-copied callback) without its thread: the copy starts empty."""
        return {"pending_dropped": len(self._pending)}  # not empty: pickle skips __setstate__ on a falsy state

    def __setstate__(self, state: dict[str, Any]) -> None:  # noqa: D105
        self.__init__()  # type: ignore[misc]
