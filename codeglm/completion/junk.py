"""Never junk: the syntax errors a completion adds to the document, and the watch that ends a
generation producing them."""

from __future__ import annotations

from codeglm.completion.brackets import CLOSERS, OPENERS, lex
from codeglm.completion.site import CompletionSite, suffix_window
from codeglm.languages import Language
from codeglm.syntax.guard import ERROR, ErrorSpan, SyntaxBaseline, new_errors, syntax_baseline

# Finished lines in a row that add a syntax error before generation is given up as junk.
JUNK_LINES = 3


class JunkWatch:
    """Ends a multi-line generation that keeps writing lines that are not code.

    Checked once per finished line (one parse of the window), and only where no bracket
    or string the generation opened is still open: inside one, later lines may still
    close what looks broken now. JUNK_LINES such line ends in a row whose text adds a
    syntax ERROR (a MISSING ``;`` of a call chain that goes on below does not count)
    stop generation at the last clean line end: the post-processing would cut there
    anyway, and the tokens after it are wasted time.
    """

    def __init__(self, site: CompletionSite) -> None:
        self.site = site
        self.checked_end = 0
        self.clean_end = 0
        self.streak = 0

    def line_ended(self, text: str) -> int | None:
        end = text.rfind("\n")
        if end <= self.checked_end:
            return None
        self.checked_end = end
        lines = text[:end]
        if not lines.strip() or not settled(self.site.language, lines):
            return None
        errors = added_errors(self.site, lines)
        if not errors:
            self.clean_end, self.streak = end, 0
        elif any(error.kind == ERROR for error in errors):
            self.streak += 1
            if self.streak >= JUNK_LINES:
                return self.clean_end
        return None


def settled(language: Language, text: str) -> bool:
    """No parenthesis, square bracket or string that ``text`` opened is still open, nor
    does it end in a line continuation: its last line can be judged. (An open ``{``
    block is fine: ``added_errors`` closes it for the check.)"""
    events, quote = lex(language, text)
    if quote is not None or text.rstrip(" \t").endswith("\\"):
        return False
    return all(ch == "{" for _, ch in _generated_open(events))


def _generated_open(events: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Openers among ``events`` that nothing after them closes, in order."""
    stack: list[tuple[int, str]] = []
    for index, ch in events:
        if ch in OPENERS:
            stack.append((index, ch))
        elif stack and stack[-1][1] == CLOSERS[ch]:
            stack.pop()
    return stack


def added_errors(site: CompletionSite, text: str, replaced: int = 0) -> list[ErrorSpan]:
    """Syntax errors that inserting ``text`` at the cursor adds where it goes (see
    ``codeglm.syntax.guard``), forgiving what it leaves open: a completion cut short
    inside a block or a call is unfinished, not wrong, so it is checked again with its
    brackets closed (a block's ``}`` on a line of its own); an open string is not.

    A ``{`` left open alone on its line after a line that ends a statement or a block
    (or opens one) heads nothing: lines of bare ``{`` are a model stuck in a loop, and
    each would pass, taking a ``}`` from the code below. Such a brace is an error.
    """
    baseline = _baseline(site)
    events, quote = lex(site.language, text)
    opened = _generated_open(events)
    for index, ch in opened:
        line_start = text.rfind("\n", 0, index) + 1
        if ch == "{" and not text[line_start:index].strip():
            above = (site.prefix + text[:line_start]).rstrip()
            if not above or above.endswith(("{", "}", ";")):
                start = baseline.cursor + len(text[:index].encode("utf-8"))
                return [ErrorSpan(ERROR, start, start + 1)]
    errors = new_errors(baseline, text, replaced)
    if errors and opened and not quote:
        # (a string left open is not forgiven: the user would get an unterminated
        # string, e.g. a lone docstring opener that swallows the code below)
        closing = "".join("\n}" if ch == "{" else OPENERS[ch] for _, ch in reversed(opened))
        errors = new_errors(baseline, text, replaced, closing)
    return errors


def _baseline(site: CompletionSite) -> SyntaxBaseline:
    if site.syntax is not None:
        return site.syntax
    return syntax_baseline(site.language, site.prefix[site.window_start :], suffix_window(site.suffix))


__all__ = ["JUNK_LINES", "JunkWatch", "added_errors", "settled"]
