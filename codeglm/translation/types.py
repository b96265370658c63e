"""What translation takes and gives: requests, per-unit results and progress events, the whole
result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from codeglm.translation.units import (
    Unit,
)

ProgressCallback = Callable[["UnitEvent"], None]


class TranslationError(ValueError):
    """A request that cannot be translated (unsupported language pair, empty source)."""


@dataclass(frozen=True)
class TranslationRequest:
    """What to translate and how.

    ``class_name``: the class that wraps free functions when the target is Java (by
    convention the output file's name). ``split``: "auto" translates a file that fits
    the context in one piece and splits it otherwise; "units" always splits.
    ``max_new_tokens``: an upper bound per unit (None: from the unit's size).
    ``max_units``: refuse a file that splits into more units than this, before any
    generation (None or 0: no limit; ``codeglm.translation.budget``).
    ``tokens_per_second``: the decode speed for the up-front estimate (None: measured on
    the backend, else assumed).
    """

    source: str
    source_language: str
    target_language: str
    class_name: str | None = None
    max_retries: int = 2
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int = 0
    split: str = "auto"
    max_new_tokens: int | None = None
    max_units: int | None = None
    tokens_per_second: float | None = None


@dataclass(frozen=True)
class UnitResult:
    """One unit's outcome. ``text`` is the translation, or the marked comment when it failed."""

    index: int
    unit: Unit
    text: str
    ok: bool
    attempts: int
    problem: str = ""
    prompt_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class UnitEvent:
    """Progress of one unit. ``status`` is "start", "retry", "done" or "failed".

    ``index`` (0-based) and ``total`` count units, never attempts: a retry is another
    attempt at unit ``index``. ``attempt`` is the 0-based attempt the event is about
    (for "retry", which retry this is: 1 to ``max_retries``; for "done"/"failed", the
    retries used). ``message``: why the last attempt was rejected ("retry", "failed").
    ``codeglm.translation.progress`` turns events into progress lines.
    """

    index: int
    total: int
    label: str
    status: str
    attempt: int = 0
    message: str = ""
    max_retries: int = 0


@dataclass(frozen=True)
class TranslationResult:
    """The translated file and what happened on the way.

    ``retries``: attempts beyond the first, over all units. ``parses``: whether the
    joined file parses with the target's grammar.
    """

    text: str
    units: tuple[UnitResult, ...]
    failed_units: tuple[UnitResult, ...]
    retries: int
    seconds: float
    parses: bool
    source_language: str
    target_language: str

    def summary(self) -> str:
        """One line: units, retries, failures, time."""
        failed = len(self.failed_units)
        line = (
            f"{len(self.units)} unit(s), {self.retries} retr{'y' if self.retries == 1 else 'ies'}, "
            f"{failed} failed, {self.seconds:.1f}s"
        )
        if failed:
            line += "; failed: " + ", ".join(
                f"{r.unit.label} (lines {r.unit.start_line + 1}-{r.unit.end_line + 1}: {r.problem})"
                for r in self.failed_units
            )
        return line


__all__ = [
    "ProgressCallback",
    "TranslationError",
    "TranslationRequest",
    "TranslationResult",
    "UnitEvent",
    "UnitResult",
]
