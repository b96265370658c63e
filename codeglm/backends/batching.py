"""Gathering concurrent requests into batches for one backend.

Policy: a worker thread takes the oldest waiting request, then keeps collecting for
up to ``window`` seconds (or until ``max_requests`` are waiting). The collected
requests are grouped by ``batch_key`` (equal sampling parameters, n and stop
strings); each group is one ``generate_many`` call when the backend has one (the
native engine decodes the group as one batch), else one ``generate`` call per
request. Requests that arrive while a batch runs wait and form the next batch.
A batch stops early only when every caller in it has cancelled.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from codeglm.backends.base import Backend, CancelToken, Completion, GenerationRequest
from codeglm.backends.cancel import AllCancelToken
from codeglm.backends.native import batch_key


@dataclass
class BatchStats:
    """Counters for logs, benchmarks and tests."""

    requests: int = 0  # GenerationRequests submitted
    backend_calls: int = 0  # generate / generate_many calls made
    batches: int = 0  # groups run
    largest_batch: int = 0
    skipped_cancelled: int = 0  # cancelled before their batch started
    cancelled: int = 0  # requests whose generation ended because their callers cancelled
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "requests": self.requests,
                "backend_calls": self.backend_calls,
                "batches": self.batches,
                "largest_batch": self.largest_batch,
                "skipped_cancelled": self.skipped_cancelled,
                "cancelled": self.cancelled,
            }


@dataclass(frozen=True)
class _Pending:
    request: GenerationRequest
    cancel: CancelToken
    future: Future[list[Completion]]


class BatchScheduler:
    """Runs submitted requests on one worker thread, batching those that arrive together."""

    def __init__(self, backend: Backend, window: float = 0.01, max_requests: int = 8) -> None:
        self.backend = backend
        self.window = window
        self.max_requests = max_requests
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="codeglm-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Future[list[Completion]]:
        future: Future[list[Completion]] = Future()
        with self.stats.lock:
            self.stats.requests += 1
        self._queue.put(_Pending(request, cancel or CancelToken(), future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        pending = [first]
        deadline = time.monotonic() + self.window
        while len(pending) < self.max_requests:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                return pending, True
            pending.append(item)
        return pending, False

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending, closing = self._collect(first)
            groups: dict[tuple[object, ...], list[_Pending]] = {}
            for item in pending:
                groups.setdefault(batch_key(item.request), []).append(item)
            for group in groups.values():
                self._run(group)
            if closing:
                return

    def _run(self, group: list[_Pending]) -> None:
        live: list[_Pending] = []
        for item in group:
            if item.cancel.cancelled or not item.future.set_running_or_notify_cancel():
                with self.stats.lock:
                    self.stats.skipped_cancelled += 1
                if not item.future.done():
                    item.future.set_result([Completion("", "cancelled", 0)] * item.request.n)
                continue
            live.append(item)
        if not live:
            return
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        try:
            results = self._generate(live)
        except BaseException as error:  # handed to every caller of the batch
            for item in live:
                item.future.set_exception(error)
            return
        for item, completions in zip(live, results, strict=True):
            if any(c.finish_reason == "cancelled" for c in completions):
                with self.stats.lock:
                    self.stats.cancelled += 1
            item.future.set_result(completions)

    def _generate(self, live: Sequence[_Pending]) -> list[list[Completion]]:
        generate_many = getattr(self.backend, "generate_many", None)
        if generate_many is not None:
            with self.stats.lock:
                self.stats.backend_calls += 1
            return generate_many([item.request for item in live], AllCancelToken([item.cancel for item in live]))
        results = []
        for item in live:
            with self.stats.lock:
                self.stats.backend_calls += 1
            results.append(self.backend.generate(item.request, item.cancel))
        return results


__all__ = ["BatchScheduler", "BatchStats"]
