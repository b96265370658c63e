"""How big a translation is before it starts: units, a rough time, and a limit.

A 2 MB Java file splits into thousands of units; at a few dozen tokens a second that is
hours of decoding. The pipeline plans the units (tokenizer only, no generation), says
up front how many there are and roughly how long they will take, and refuses past a
limit, before the model generates anything and before any output file is written.

The estimate is deliberately simple and says so: a translation is about as long as its
source, so the tokens to generate are the units' own token counts (capped per unit by
``max_new_tokens``), divided by a decode speed that is configured, measured on this
backend's last generation, or assumed. Prompts, retries and a slower model make it
longer; the words say "roughly" and where the speed came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codeglm.translation.types import TranslationError
from codeglm.translation.units import Unit

# Refuse more units than this unless told otherwise (0 or None: no limit). 500 small
# methods is already an hour or more on a CPU; a file past it is seldom meant whole.
DEFAULT_MAX_UNITS = 500
# Decode speed when nothing better is known: the default model's order of magnitude on a
# small CPU (docs/benchmarks.md); only ever shown as "assumed".
ASSUMED_TOKENS_PER_SECOND = 20.0
# A measured speed needs this many decode steps to mean anything.
MIN_MEASURED_STEPS = 8


@dataclass(frozen=True)
class Estimate:
    """The planned translation: ``units``, ``tokens`` to generate (expected), the decode
    speed and where it came from (``"configured"``, ``"measured"`` or ``"assumed"``)."""

    units: int
    tokens: int
    tokens_per_second: float
    speed_source: str

    @property
    def seconds(self) -> float:
        return self.tokens / self.tokens_per_second

    def line(self) -> str:
        """``1,234 units to translate, roughly 2 h 05 min (about 150,000 tokens at 20 tok/s,
        assumed; a rough guess: retries add more)``."""
        units = f"{self.units:,} unit{'' if self.units == 1 else 's'}"
        return (
            f"{units} to translate, roughly {format_duration(self.seconds)} "
            f"(about {self.tokens:,} tokens to generate at {self.tokens_per_second:.0f} tok/s, "
            f"{self.speed_source}; a rough guess: retries and long prompts add more)"
        )


class TooManyUnitsError(TranslationError):
    """More units than the limit; raised before any generation. ``estimate`` and
    ``limit`` let each door say how to raise the limit in its own words."""

    def __init__(self, estimate: Estimate, limit: int) -> None:
        self.estimate = estimate
        self.limit = limit
        super().__init__(too_many_units_message(estimate, limit, "raise the unit limit"))


def too_many_units_message(estimate: Estimate, limit: int, how_to_raise: str) -> str:
    """The refusal: the count, the limit, the rough time, and what to change."""
    return (
        f"{estimate.units:,} units to translate, more than the limit of {limit:,} "
        f"(roughly {format_duration(estimate.seconds)} of generation at {estimate.tokens_per_second:.0f} tok/s, "
        f"{estimate.speed_source}); nothing was translated or written. "
        f"Translate a part of the file, or {how_to_raise}"
    )


def check_unit_limit(estimate: Estimate, limit: int | None) -> None:
    """Raise ``TooManyUnitsError`` past ``limit`` (None or 0: no limit)."""
    if limit is not None and limit < 0:
        raise TranslationError(f"the unit limit must be >= 0 (0: no limit), got {limit}")
    if limit and estimate.units > limit:
        raise TooManyUnitsError(estimate, limit)


def decode_speed(configured: float | None, measured: dict[str, float | int] | None) -> tuple[float, str]:
    """(tokens per second, where it came from): the configured speed, else the backend's
    last generation (``codeglm.backends.last_generation``) when it decoded enough steps
    to mean anything, else ``ASSUMED_TOKENS_PER_SECOND``."""
    if configured is not None:
        if not configured > 0:
            raise TranslationError(f"the decode speed must be > 0 tokens per second, got {configured}")
        return float(configured), "configured"
    if measured:
        steps, seconds = float(measured.get("decode_steps", 0)), float(measured.get("decode_seconds", 0.0))
        if steps >= MIN_MEASURED_STEPS and seconds > 0:
            return steps / seconds, "measured on this model"
    return ASSUMED_TOKENS_PER_SECOND, "assumed"


def estimate_translation(
    units: Sequence[Unit],
    count_tokens: Callable[[str], int],
    tokens_per_second: float,
    speed_source: str,
    max_new_tokens: int | None = None,
) -> Estimate:
    """The expected generation of ``units``: each about as long as its source (capped)."""
    tokens = 0
    for unit in units:
        wanted = max(1, count_tokens(unit.text))
        tokens += min(wanted, max_new_tokens) if max_new_tokens is not None else wanted
    return Estimate(len(units), tokens, tokens_per_second, speed_source)


def format_duration(seconds: float) -> str:
    """``40 s``, ``12 min``, ``9 h 05 min``: as precise as a rough guess deserves."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min"


__all__ = [
    "ASSUMED_TOKENS_PER_SECOND",
    "DEFAULT_MAX_UNITS",
    "Estimate",
    "TooManyUnitsError",
    "check_unit_limit",
    "decode_speed",
    "estimate_translation",
    "format_duration",
    "too_many_units_message",
]
