"""Recently edited regions of documents: what the user just touched elsewhere is likely what
they use next. The server records each change; context selection shows the newest regions of
other files."""

from __future__ import annotations

import threading
from dataclasses import dataclass

# Regions kept, lines of context around an edit, and the most lines a region shows.
MAX_REGIONS = 8
CONTEXT_LINES = 3
MAX_REGION_LINES = 12


@dataclass(frozen=True)
class EditedRegion:
    """Lines ``first``..``last`` (0-based, inclusive) of ``path`` and their text after the edit."""

    path: str
    first: int
    last: int
    text: str


def region_of(path: str, document_text: str, first_line: int, last_line: int) -> EditedRegion:
    """The region around lines ``first_line``..``last_line`` of a document's current text."""
    lines = document_text.split("\n")
    first = max(0, first_line - CONTEXT_LINES)
    last = min(len(lines) - 1, max(last_line, first_line) + CONTEXT_LINES, first + MAX_REGION_LINES - 1)
    return EditedRegion(path, first, last, "\n".join(lines[first : last + 1]).rstrip())


class RecentEdits:
    """The last ``MAX_REGIONS`` edited regions, newest first; an edit next to a region already
    held replaces it (typing on one line is one region, not one per keystroke)."""

    def __init__(self, max_regions: int = MAX_REGIONS) -> None:
        self.max_regions = max_regions
        self._regions: list[EditedRegion] = []
        self._lock = threading.Lock()

    def record(self, path: str, document_text: str, first_line: int, last_line: int) -> None:
        region = region_of(path, document_text, first_line, last_line)
        with self._lock:
            kept = [
                r for r in self._regions
                if not (r.path == path and r.first <= region.last + CONTEXT_LINES and region.first <= r.last + CONTEXT_LINES)
            ]
            self._regions = [region, *kept][: self.max_regions]

    def forget(self, path: str) -> None:
        with self._lock:
            self._regions = [r for r in self._regions if r.path != path]

    def regions(self) -> tuple[EditedRegion, ...]:
        with self._lock:
            return tuple(self._regions)


__all__ = ["EditedRegion", "RecentEdits", "region_of"]
