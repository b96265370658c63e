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

from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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

    ``concurrency`` 1: asked one after another in this thread, in order. More: asked on
    that many worker threads, at most ``concurrency`` at once, and yielded as they finish
    (any order). An exception from ``ask`` is raised here; so are the caller's own
    (Ctrl-C): then nothing more is started, and requests already in flight are left to
    end on their threads (bounded by the backend's timeout) with their answers dropped.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if concurrency == 1:
        for batch in batches:
            yield batch, ask(batch)
        return
    pending = iter(batches)
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="generate")
    running: dict[Future[R], B] = {}
    try:

        def start_next() -> None:
            for batch in pending:
                running[executor.submit(ask, batch)] = batch
                return

        for _ in range(concurrency):
            start_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                batch = running.pop(future)
                answer = future.result()
                start_next()
                yield batch, answer
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["SEED_STRIDE", "Batch", "batch_seed", "plan_batches", "run_batches"]
