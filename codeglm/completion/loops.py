"""No loops: a multi-line generation that starts repeating itself keeps its first copy."""

from __future__ import annotations

from collections.abc import Iterator

from codeglm.completion.junk import settled
from codeglm.completion.site import CompletionSite

# A loop: one line this many times in a row (identical, indentation included), or a block
# of 2 to LOOP_BLOCK_LINES lines LOOP_BLOCK_TIMES times. Code rarely does either; three
# equal lines in a row (``x.pop()``) can be meant, four hardly.
LOOP_LINE_TIMES = 4


LOOP_BLOCK_LINES = 4


LOOP_BLOCK_TIMES = 3


def loop_cuts(text: str, complete: bool = True) -> Iterator[int]:
    """For each loop in ``text`` (see LOOP_LINE_TIMES), in order of where it starts, the
    end of its first copy. ``complete=False``: the last line may still grow, so it is
    not compared."""
    lines = text.split("\n")
    if not complete:
        lines = lines[:-1]
    ends = []  # ends[i]: index in text just after line i (before its newline)
    position = 0
    for line in lines:
        position += len(line)
        ends.append(position)
        position += 1
    for start in range(len(lines)):
        for size in range(1, LOOP_BLOCK_LINES + 1):
            times = LOOP_LINE_TIMES if size == 1 else LOOP_BLOCK_TIMES
            if start + size * times > len(lines):
                break
            block = lines[start : start + size]
            if not "".join(block).strip():
                continue  # blank lines may repeat
            if all(lines[start + copy * size : start + (copy + 1) * size] == block for copy in range(1, times)):
                yield ends[start + size - 1]
                break


def loop_stop(site: CompletionSite, generation: str, complete: bool = True) -> int | None:
    """Where a looping generation should end: the first of its ``loop_cuts`` (its first
    line read with the cursor line's text before it, the indentation later copies
    repeat) that no bracket the generation opened spans. Inside brackets, equal lines
    are data (``[\n    0,\n    0,\n ...]``), not a loop."""
    lead = site.line_prefix
    for cut in loop_cuts(lead + generation, complete):
        stop = max(cut - len(lead), 0)
        if settled(site.language, generation[:stop]):
            return stop
    return None


__all__ = ["LOOP_BLOCK_LINES", "LOOP_BLOCK_TIMES", "LOOP_LINE_TIMES", "loop_cuts", "loop_stop"]
