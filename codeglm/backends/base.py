"""The one door to a model: the ``Backend`` interface and its plain-data types.

Everything above the backends (completion, translation, evaluation, the servers)
speaks only these types. A backend turns a ``GenerationRequest`` into ``Completion``s,
honours stop strings and a ``finished`` callback as text arrives, and stops within one
decode step when its ``CancelToken`` is tripped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Given the text generated so far, return the length to keep if the generation is
# complete (e.g. the block at the cursor just closed), or None to go on.
FinishedCallback = Callable[[str], "int | None"]


class BackendError(RuntimeError):
    """A backend could not serve a request (unreachable server, bad model, ...).

    The message is written for the user: it names the problem and what to do.
    """


class CancelledError(BackendError):
    """Generation was cancelled through its ``CancelToken``."""


class CancelToken:
    """A flag another thread can trip; generation checks it once per decode step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, ``n`` samples of it.

    ``suffix`` is set for fill-in-the-middle; a backend without FIM support ignores it
    (callers check ``Backend.supports_fim`` before building a FIM prompt).
    ``stop``: generation of a sample ends at the first occurrence of any of these
    strings, which is not part of the returned text.
    ``finished``: checked as text arrives; see ``FinishedCallback``.
    """

    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    stop: tuple[str, ...] = ()
    suffix: str | None = None
    finished: FinishedCallback | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass(frozen=True)
class Completion:
    """One generated sample.

    ``finish_reason`` is ``"stop"`` (stop string, finished callback or end of text),
    ``"length"`` (max_new_tokens reached) or ``"cancelled"``.
    """

    text: str
    finish_reason: str
    generated_tokens: int


@runtime_checkable
class Backend(Protocol):
    """What every backend provides."""

    name: str
    # The model's context in tokens (prompt + generated).
    context_length: int
    supports_fim: bool

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes with this backend's tokenizer (for prompt budgets)."""
        ...

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        """``request.n`` completions. Raises ``BackendError`` with a user-facing message."""
        ...

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Iterator[str]:
        """Text deltas of a single sample (``request.n`` must be 1), stop rules applied."""
        ...

    def close(self) -> None:
        """Free the model or connections."""
        ...
