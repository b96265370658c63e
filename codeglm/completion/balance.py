"""A single-line completion's brackets: cut at a closer with no opener, close what it opened,
drop what the suffix already has."""

from __future__ import annotations

from codeglm.completion.brackets import (
    CLOSERS,
    OPENERS,
    bracket_events,
    drop_overlap,
    open_stack,
    unmatched_closers,
)
from codeglm.completion.site import CompletionSite, suffix_window


def balance_line(site: CompletionSite, line: str, cut_short: bool = False) -> str:
    """Cut at a closer that matches nothing; drop a closer the rest of the line supplies;
    when generation was cut short mid-line, close what the line opened and left open."""
    window = site.prefix[site.window_start :]
    stack: list[tuple[str, bool]] = [(ch, False) for ch in open_stack(site.language, window)]
    # Closers after the cursor that close brackets opened before it (auto-closed ")" on
    # the line, the "}" of the enclosing blocks below): generating them again doubles them.
    closed_after = len(unmatched_closers(site.language, suffix_window(site.suffix)))
    # Brackets opened before the cursor that nothing after it closes: the line may close these.
    allowed = max(0, len(stack) - closed_after)
    pops: list[int] = []  # where the line closes a bracket opened before the cursor
    for index, ch in bracket_events(site.language, line):
        if ch in OPENERS:
            stack.append((ch, True))
            continue
        if not stack or stack[-1][0] != CLOSERS[ch]:
            line = line[:index]
            break
        _, generated = stack.pop()
        if not generated:
            pops.append(index)
    reopened = sum(1 for _, generated in stack if generated)
    excess = len(pops) - reopened - allowed
    if excess > 0:
        # "} else {" closes and reopens: fine. "x);" before an existing ")" is not.
        line = line[: pops[len(pops) - excess]]
    line = drop_overlap(line, site.line_suffix)
    if not cut_short:
        return line  # a line the model ended itself: open brackets go on over the next lines
    missing = [OPENERS[ch] for ch, generated in reversed(_line_stack(site, line)) if generated]
    return line + "".join(missing)


def _line_stack(site: CompletionSite, line: str) -> list[tuple[str, bool]]:
    stack: list[tuple[str, bool]] = []
    for _, ch in bracket_events(site.language, line):
        if ch in OPENERS:
            stack.append((ch, True))
        elif stack and stack[-1][0] == CLOSERS[ch]:
            stack.pop()
    return stack


__all__ = ["balance_line"]
