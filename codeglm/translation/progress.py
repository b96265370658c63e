"""Progress wording for a translation: one line and a percentage per ``UnitEvent``.

Shared by the terminal (``codeglm translate``) and the language server's ``$/progress``
so both say the same thing. A retry is another attempt at the *same* unit: the line
names the unit ("unit 2 of 5") and the retry ("retry 1 of 2") separately, and the
percentage counts finished units (plus a share of the current unit's attempts), so it
only moves forward and never passes 100.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: this module is imported by the server at startup
    from codeglm.translation.types import UnitEvent


def unit_name(label: str) -> str:
    """How a line names the unit ("file" is the whole file translated in one piece)."""
    return "the whole file" if label == "file" else label


def _retry_of(event: UnitEvent) -> str:
    # An event from a caller that did not say how many retries there are still reads right.
    if event.max_retries >= event.attempt:
        return f"retry {event.attempt} of {event.max_retries}"
    return f"retry {event.attempt}"


def progress_line(event: UnitEvent) -> str:
    """``unit 2 of 5: translating function add`` and so on, one per event."""
    head = f"unit {event.index + 1} of {event.total}"
    name = unit_name(event.label)
    why = f" ({event.message})" if event.message else ""
    if event.status == "start":
        return f"{head}: translating {name}"
    if event.status == "retry":
        return f"{head}: {_retry_of(event)} for {name}{why}"
    if event.status == "done":
        retries = f" after {event.attempt} retr{'y' if event.attempt == 1 else 'ies'}" if event.attempt else ""
        return f"{head}: translated {name}{retries}"
    if event.status == "failed":
        attempts = f" after {event.attempt + 1} attempts" if event.attempt else ""
        return f"{head}: could not translate {name}{attempts}{why}; kept as a marked comment"
    raise ValueError(f"unknown translation event status {event.status!r}; expected start, retry, done or failed")


def progress_percentage(event: UnitEvent) -> int:
    """Finished units out of all, in percent (0-100); a retry adds a share of its unit.

    Over the events of one translation the value never decreases: a unit's retries stay
    below its end, which is where the next unit starts.
    """
    if event.total <= 0:
        return 100
    index = min(max(event.index, 0), event.total - 1)
    if event.status in ("done", "failed"):
        units = index + 1.0
    elif event.status == "retry":
        tries = max(event.max_retries, event.attempt) + 1
        units = index + max(event.attempt, 0) / tries
    else:
        units = float(index)
    return min(100, max(0, int(100 * units / event.total)))
