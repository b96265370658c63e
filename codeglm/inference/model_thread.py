"""One thread for all of this process's model math: loading, prefill and decode.

Why: each thread that runs a parallel torch operation keeps an OpenMP team of its own
for as long as it lives. Once a process has more OpenMP threads than cores, libgomp
stops spinning between parallel regions and puts its threads to sleep instead
("throttled" waiting), and waking them costs about as much as a decode step's small
matrix products. Measured on 2 cores with the 135M CodeGeeX shape: a decode step took
11 ms while one thread had ever run the model, 15-16 ms once a second one had (a
server's main thread that loaded the model, then its worker that generates), which
was serve-api's whole gap to the in-process engine (``bench/serving.py``). So every
door (CLI, serve-api, language server, streams on helper threads) hands the model
work to this one thread and waits for it.

``run(fn)`` calls ``fn`` on the model thread and returns its result (or raises its
error); ``relay(generator)`` runs a generator there, one item per ``next`` of its
reader. Work already on the model thread runs directly, so nesting cannot deadlock.
Work is taken in order: a second caller waits until the first one's call (or whole
generator) is done, as it would wait on the engine's lock anyway.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def _serve() -> None:
    while True:
        _tasks.get()()


def _ensure_started() -> None:
    global _thread
    with _start_lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="codeglm-model", daemon=True)
            _thread.start()


def on_model_thread() -> bool:
    return threading.current_thread() is _thread


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


def run(fn: Callable[[], T]) -> T:
    """``fn()`` on the model thread; its result, or its exception raised here."""
    if on_model_thread():
        return fn()
    _ensure_started()
    done = threading.Event()
    outcome = _Outcome()

    def task() -> None:
        try:
            outcome.value = fn()
        except BaseException as error:  # handed to the caller
            outcome.error = error
        finally:
            done.set()

    _tasks.put(task)
    done.wait()
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


_NEXT, _CLOSE = "next", "close"
# A reader that neither asks for the next item nor closes for this long has been
# dropped without being closed (a reference cycle keeps it alive): the model thread
# closes its generator and goes on with other work.
ABANDONED_AFTER = 60.0


@dataclass(frozen=True)
class _End:
    pass


def relay(generator: Generator[T, None, None]) -> Generator[T, None, None]:
    """The items of ``generator``, each made on the model thread when it is asked for.

    Lockstep, as if the reader iterated ``generator`` itself: nothing is computed ahead
    of the reader, so what the reader does between items (tripping a cancel token, say)
    is seen before the next item is made. The model thread serves this generator until
    it ends or the reader closes it (or drops it), then closes it there, so its
    ``finally`` blocks and locks are released on the thread that took them.
    """
    if on_model_thread():
        yield from generator
        return
    _ensure_started()
    asks: queue.SimpleQueue[str] = queue.SimpleQueue()
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def task() -> None:
        try:
            while True:
                try:
                    ask = asks.get(timeout=ABANDONED_AFTER)
                except queue.Empty:
                    log.warning("a model generator's reader went away without closing it: closed")
                    return
                if ask == _CLOSE:
                    return
                try:
                    items.put(next(generator))
                except StopIteration:
                    items.put(_End())
                    return
                except BaseException as error:  # handed to the reader
                    items.put(_Outcome(error=error))
                    return
        finally:
            generator.close()

    _tasks.put(task)
    try:
        while True:
            asks.put(_NEXT)
            item = items.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Outcome):
                assert item.error is not None
                raise item.error
            yield item
    finally:
        asks.put(_CLOSE)


__all__ = ["on_model_thread", "relay", "run"]
