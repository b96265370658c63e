"""The one door to a model: the ``Backend`` interface and its plain-data types.

Everything above the backends (completion, translation, evaluation, the servers)
speaks only these types. A backend turns a ``GenerationRequest`` into ``Completion``s,
honours stop strings and a ``finished`` callback as text arrives, and stops within one
decode step when its ``CancelToken`` is tripped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The plain types live with the engine (the lowest layer that uses them); the backends'
# users import them from here.
from codeglm.inference.types import CancelToken, Completion, FinishedCallback, SamplingParams


class BackendError(RuntimeError):
    """A backend could not serve a request (unreachable server, bad model, ...).

    The message is written for the user: it names the problem and what to do.
    """


class ModelFilesError(BackendError):
    """The model a backend string names cannot be loaded: a directory that does not exist,
    a ``model_type`` the backend does not run, missing or mismatched weights or tokenizer.
    The command line treats it as a bad argument (exit status 2)."""


class CancelledError(BackendError):
    """Generation was cancelled through its ``CancelToken``."""


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
