"""Streaming out of a blocking generation call.

The model call runs in a worker thread and hands text deltas to ``emit``; the caller
iterates them. If the caller stops iterating early (closes the generator), the worker
is told to stop through its cancel token and is waited for, so no generation outlives
its reader. The generator's return value (``StopIteration.value``) is the final
``Completion``: readers that want the finish reason use ``drain``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from codeglm.backends.base import BackendError, CancelToken, Completion


@dataclass(frozen=True)
class _Done:
    completion: Completion


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def stream_from_worker(
    work: Callable[[Callable[[str], None]], Completion], stop_worker: CancelToken, name: str
) -> Generator[str, None, Completion]:
    """Run ``work(emit)`` in a thread; yield what it emits; return its ``Completion``.

    ``stop_worker`` must be (part of) the cancel token ``work`` honours.
    """
    items: queue.SimpleQueue[str | _Done | _Failed] = queue.SimpleQueue()

    def run() -> None:
        try:
            items.put(_Done(work(items.put)))
        except BaseException as error:  # handed to the reader, who raises it
            items.put(_Failed(error))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ended = False
    try:
        while True:
            item = items.get()
            if isinstance(item, str):
                yield item
            elif isinstance(item, _Done):
                ended = True
                return item.completion
            else:
                ended = True
                if isinstance(item.error, BackendError):
                    raise item.error
                raise BackendError(f"generation failed: {item.error}") from item.error
    finally:
        if not ended:
            stop_worker.cancel()
        thread.join()


def drain(stream: Iterator[str], on_delta: Callable[[str], None] | None = None) -> tuple[str, Completion | None]:
    """Read a stream to its end: the whole text and, if the backend gives one, its ``Completion``."""
    parts: list[str] = []
    while True:
        try:
            delta = next(stream)
        except StopIteration as end:
            completion = end.value if isinstance(end.value, Completion) else None
            return "".join(parts), completion
        parts.append(delta)
        if on_delta is not None:
            on_delta(delta)
