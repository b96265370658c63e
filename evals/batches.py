"""Which sample batches a generation run asks for, and asking for up to N of them at once.

A task's ``n`` samples are cut into batches on a fixed grid: batch ``b`` holds the
completion ids ``[b * batch_size, min((b + 1) * batch_size, n))`` and its request is
seeded ``seed + 100_003 * number + start``. The grid does not depend on how many
requests are in flight nor on what a file already holds, so every completion id is
always the same row of the same seeded request: an interrupted and resumed run, or one
with ``--concurrency 8``, asks for exactly the requests an uninterrupted sequential run
asks for (minus the ones already answered).

Resume works from the *set* of completion ids present per task, not their count: with
several requests in flight a later batch of a task can be written before an earlier one,
and a run killed then leaves a gap. A grid batch none of whose ids are present is asked
for again whole; one torn by a crash (some of its lines written) is asked for whole too,
with its own seed, and only its missing ids are written, so the lines already there keep
the positions their seeds were computed for and none is written twice.

``run_batches`` asks for batches with up to ``concurrency`` requests in flight (worker
threads) and hands each answer back to the caller's thread as it arrives, so one writer
appends and flushes a batch's lines together.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

SEED_STRIDE = 100_003  # between problem numbers; a task's batches add their start to it

B = TypeVar("B")
R = TypeVar("R")


@dataclass(frozen=True)
class Batch:
    """One request: ``count`` samples of task ``key`` (problem ``number``) from
    completion id ``start`` on; ``wanted`` are the ids of it still missing from the file."""

    key: str
    number: int
    start: int
    count: int
    wanted: frozenset[int]


def batch_seed(base: int | None, number: int, start: int) -> int | None:
    """The seed of the request whose first sample is ``start`` of problem ``number``."""
    return None if base is None else base + SEED_STRIDE * number + start


def plan_batches(key: str, number: int, n: int, batch_size: int, present: Collection[int]) -> list[Batch]:
    """The grid batches of one task that still miss at least one of the ids ``0..n-1``."""
    batches = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        wanted = frozenset(i for i in range(start, start + count) if i not in present)
        if wanted:
            batches.append(Batch(key, number, start, count, wanted))
    return batches


def run_batches(batches: Iterable[B], ask: Callable[[B], R], concurrency: int) -> Iterator[tuple[B, R]]:
    """``(batch, ask(batch))`` for every batch, yielded in the caller's thread.

    ``concurrency`` 1: asked one after another in this thread, in order. More: that many
    worker threads take the batches in order, one request each at a time, so at most
    ``concurrency`` are in flight; answers are yielded as they arrive (any order). An
    exception from ``ask`` is raised here; then, as after the caller's own (Ctrl-C), no
    worker starts another request, and those in flight are abandoned: the workers are
    daemon threads, so a process that exits does not wait for them, and their answers
    are never yielded.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if concurrency == 1:
        for batch in batches:
            yield batch, ask(batch)
        return
    todo: queue.SimpleQueue[B] = queue.SimpleQueue()
    count = 0
    for batch in batches:
        todo.put(batch)
        count += 1
    answers: queue.SimpleQueue[tuple[B, R | None, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                batch = todo.get_nowait()
            except queue.Empty:
                return
            try:
                answers.put((batch, ask(batch), None))
            except BaseException as error:  # handed to the caller's thread, raised there
                answers.put((batch, None, error))

    for number in range(min(concurrency, count)):
        threading.Thread(target=work, name=f"generate-{number}", daemon=True).start()
    try:
        for _ in range(count):
            batch, answer, error = answers.get()
            if error is not None:
                raise error
            yield batch, answer  # type: ignore[misc]  # an answer, since there was no error
    finally:
        stop.set()


__all__ = ["SEED_STRIDE", "Batch", "batch_seed", "plan_batches", "run_batches"]
