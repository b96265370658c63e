"""Gathering concurrent requests, streamed and whole, into batches for one backend.

Policy: a worker thread takes the oldest waiting request, then keeps collecting for
up to ``window`` seconds (or until ``max_requests`` are waiting). With a backend that
can batch (``BatchingBackend``: the native engine) the collected requests, streamed
or not and whatever their prompts, ``n``, sampling parameters and stop strings, are
one ``generate_batch`` call: the engine decodes them as one batch (or as few as its
``max_batch_size`` and the context allow), each row with its own settings, and a
streamed request's listener gets its text after every step. A request is answered
as soon as its own samples have ended, not when its whole batch has. Requests that
arrive while a batch runs wait and form the next batch.

Cancelling a request (its caller's ``CancelToken``) ends its samples within one
decode step; the rest of its batch goes on. A listener that fails (its client is
gone) cancels its own request only. A batch that fails runs again request by request,
so that one bad request gets the error and the others their answers.

Backends that cannot batch (hf, openai) get whole requests one at a time from the
worker, and each streamed request on a thread of its own at once, as a series of
one-sample ``stream`` calls (sample k seeded with ``seed + k``).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from codeglm.backends.base import Backend, CancelToken, Completion, GenerationRequest
from codeglm.backends.batch_entry import BatchEntry, BatchingBackend, SampleListener
from codeglm.backends.worker_stream import drain


@dataclass
class BatchStats:
    """Counters for logs, benchmarks and tests."""

    requests: int = 0  # GenerationRequests submitted, streamed or not
    streamed: int = 0  # of which streamed
    backend_calls: int = 0  # generate / generate_batch / stream calls made
    batches: int = 0  # gathered groups run
    largest_batch: int = 0  # most requests in one group
    skipped_cancelled: int = 0  # cancelled before their batch started
    cancelled: int = 0  # requests whose generation ended because their callers cancelled
    isolated_batches: int = 0  # batches that failed and whose requests ran again one by one
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "requests": self.requests,
                "streamed": self.streamed,
                "backend_calls": self.backend_calls,
                "batches": self.batches,
                "largest_batch": self.largest_batch,
                "skipped_cancelled": self.skipped_cancelled,
                "cancelled": self.cancelled,
                "isolated_batches": self.isolated_batches,
            }


@dataclass(frozen=True)
class _Pending:
    entry: BatchEntry
    cancel: CancelToken
    future: Future[list[Completion]]


def guarded_listener(listener: SampleListener, cancel: CancelToken) -> SampleListener:
    """``listener``, except that when it raises its request is cancelled and it is not
    called again: one broken caller must not fail the batch it shares with others."""
    broken = False

    def call(index: int, delta: str, completion: Completion | None) -> None:
        nonlocal broken
        if broken:
            return
        try:
            listener(index, delta, completion)
        except Exception:  # the caller is gone; its request is cancelled
            broken = True
            cancel.cancel()

    return call


def cancelled_completions(n: int) -> list[Completion]:
    return [Completion("", "cancelled", 0) for _ in range(n)]


class BatchScheduler:
    """Runs submitted requests on one worker thread, batching those that arrive together."""

    def __init__(self, backend: Backend, window: float = 0.01, max_requests: int = 8) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {max_requests}")
        self.backend = backend
        self.window = window
        self.max_requests = max_requests
        self.stats = BatchStats()
        self._batching = isinstance(backend, BatchingBackend)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="codeglm-batcher", daemon=True)
        self._worker.start()

    def submit(
        self, request: GenerationRequest, cancel: CancelToken | None = None, listener: SampleListener | None = None
    ) -> Future[list[Completion]]:
        """The request's completions, later. With a ``listener`` the request is streamed:
        the listener is called (on a worker thread) as each sample's text arrives."""
        future: Future[list[Completion]] = Future()
        cancel = cancel or CancelToken()
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.streamed += listener is not None
        if listener is not None:
            listener = guarded_listener(listener, cancel)
        pending = _Pending(BatchEntry(request, cancel, listener), cancel, future)
        if listener is not None and not self._batching:
            threading.Thread(target=self._stream_alone, args=(pending,), name="codeglm-api-stream", daemon=True).start()
        else:
            self._queue.put(pending)
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
            self._run(pending)
            if closing:
                return

    def _start(self, item: _Pending) -> bool:
        """Mark a request as running; False (and its answer given) if it was cancelled first."""
        if not item.cancel.cancelled and item.future.set_running_or_notify_cancel():
            return True
        with self.stats.lock:
            self.stats.skipped_cancelled += 1
        if not item.future.done():
            item.future.set_result(cancelled_completions(item.entry.request.n))
        return False

    def _finish(self, item: _Pending, completions: list[Completion]) -> None:
        if item.future.done():  # answered already, as its last sample ended
            return
        if any(c.finish_reason == "cancelled" for c in completions):
            with self.stats.lock:
                self.stats.cancelled += 1
        item.future.set_result(completions)

    def _answering_listener(self, item: _Pending, streamed: set[int]) -> SampleListener:
        """Passes samples on to the caller's listener, and answers the caller as soon as
        its last sample ends: a short request does not wait for the rest of its batch.
        Notes in ``streamed`` the requests whose callers have been given something."""
        n = item.entry.request.n
        ended: list[Completion | None] = [None] * n
        caller = item.entry.listener

        def on_sample(index: int, delta: str, completion: Completion | None) -> None:
            if caller is not None:
                streamed.add(id(item))
                caller(index, delta, completion)
            if completion is not None:
                ended[index] = completion
                if all(c is not None for c in ended):
                    self._finish(item, [c for c in ended if c is not None])

        return on_sample

    def _run(self, group: list[_Pending]) -> None:
        live = [item for item in group if self._start(item)]
        if not live:
            return
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        self._run_live(live)

    def _run_live(self, live: list[_Pending]) -> None:
        streamed: set[int] = set()  # ids of the requests whose callers have been given text
        try:
            results = self._generate(live, streamed)
        except Exception as error:
            if len(live) == 1:
                if not live[0].future.done():
                    live[0].future.set_exception(error)
                return
            # One request can fail a whole batch (an engine error in its row, a prompt
            # the backend refuses): each request not answered yet runs again alone, so
            # an error in one caller's request never fails another's. A streamed one
            # whose caller already has part of its text cannot start over: it gets the error.
            with self.stats.lock:
                self.stats.isolated_batches += 1
            for item in live:
                if item.future.done():
                    continue
                if id(item) in streamed:
                    item.future.set_exception(error)
                else:
                    self._run_live([item])
            return
        except BaseException as error:  # not a request's fault (e.g. SystemExit): every caller hears of it
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        for item, completions in zip(live, results, strict=True):
            self._finish(item, completions)

    def _generate(self, live: Sequence[_Pending], streamed: set[int]) -> list[list[Completion]]:
        if self._batching:
            with self.stats.lock:
                self.stats.backend_calls += 1
            entries = [
                dataclasses.replace(item.entry, listener=self._answering_listener(item, streamed)) for item in live
            ]
            return self.backend.generate_batch(entries)  # type: ignore[attr-defined]
        results = []
        for item in live:
            with self.stats.lock:
                self.stats.backend_calls += 1
            results.append(self.backend.generate(item.entry.request, item.cancel))
        return results

    def _stream_alone(self, item: _Pending) -> None:
        """A streamed request on a backend that cannot batch: one ``stream`` per sample."""
        if not self._start(item):
            return
        request, listener = item.entry.request, item.entry.listener
        assert listener is not None  # only streamed requests come here
        try:
            completions = []
            for k in range(request.n):
                if item.cancel.cancelled:
                    completions.extend(cancelled_completions(request.n - k))
                    break
                params = request.params
                if params.seed is not None:
                    params = dataclasses.replace(params, seed=params.seed + k)  # distinct samples
                with self.stats.lock:
                    self.stats.backend_calls += 1
                stream = self.backend.stream(dataclasses.replace(request, n=1, params=params), item.cancel)
                text, completion = drain(stream, lambda delta, k=k: listener(k, delta, None))
                if completion is None:  # a backend whose stream does not return one
                    reason = "cancelled" if item.cancel.cancelled else "stop"
                    completion = Completion(text, reason, self.backend.count_tokens(text))
                listener(k, "", completion)
                completions.append(completion)
        except BaseException as error:  # handed to the caller
            item.future.set_exception(error)
            return
        self._finish(item, completions)


__all__ = ["BatchScheduler", "BatchStats", "cancelled_completions", "guarded_listener"]
