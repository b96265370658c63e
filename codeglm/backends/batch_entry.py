"""Requests run together: what a batch is made of, and the backends that can run one.

A ``BatchEntry`` is one caller's request with its own cancel token and, for a
streaming caller, a ``SampleListener`` told each sample's text as it becomes final.
A ``BatchingBackend`` (the native one) decodes a whole list of entries at once, with
different prompts, ``n``, sampling parameters and stop strings; cancelling one entry
ends only that entry's samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from codeglm.backends.base import CancelToken, Completion, GenerationRequest

# Called with (sample index, new stable text, the sample's Completion in its last call
# else None). Text once given is never taken back; each sample gets exactly one call
# with its Completion, after all its text.
SampleListener = Callable[[int, str, "Completion | None"], None]


@dataclass(frozen=True)
class BatchEntry:
    """One caller's request in a batch."""

    request: GenerationRequest
    cancel: CancelToken | None = None
    listener: SampleListener | None = None


@runtime_checkable
class BatchingBackend(Protocol):
    """A backend that decodes several requests in one call."""

    def generate_batch(self, entries: Sequence[BatchEntry]) -> list[list[Completion]]:
        """The completions of each entry, in order; listeners are called as text arrives.
        Raises ``BackendError`` (for every entry) when a prompt cannot be run."""
        ...


__all__ = ["BatchEntry", "BatchingBackend", "SampleListener"]
