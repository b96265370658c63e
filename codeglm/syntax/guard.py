"""Junk rejection: keep only the part of a completion that adds no syntax errors.

A small model can write text that is not code in the document's language (lines of
``//`` in a Python function body). Such text must never reach the user. The rule:
parse the document around the cursor with the completion inserted and look for ERROR
and MISSING nodes *in the inserted region*; compare them with the parse of the same
text without the completion (the baseline). The document does not have to be valid:
errors it already had elsewhere stay where they were and do not count.

Where the text without the completion is already broken at the cursor (an unclosed
``compute(`` just before it, a function whose ``}`` is not typed yet), error recovery
redraws the old error around whatever is inserted: there only ERROR nodes that start
inside the completion count. Junk that merely extends such an error is not caught.

A completion may stop before it closes what it opened (it ran out of tokens inside a
block): that is unfinished, not wrong, so the caller may pass the closing text
(``closing``: brackets, a block's ``}``) to parse after the completion. A MISSING node
right after the completion still counts (``int y = 5`` without its ``;``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from codeglm.languages import Language

ERROR = "ERROR"
MISSING = "MISSING"


@dataclass(frozen=True)
class ErrorSpan:
    """An ERROR node or a (zero-width) MISSING node, in bytes of the parsed text."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class SyntaxBaseline:
    """The text around a cursor without the completion, and its syntax errors.

    ``before`` / ``after``: the text before and after the cursor that checks parse
    (callers pass a window, so a check costs the same in a short and a long file).
    ``code_end``: byte where the code before the cursor ends (trailing whitespace
    skipped); an error reaching it reaches the cursor.
    """

    language: Language
    before: str
    after: str
    errors: tuple[ErrorSpan, ...]
    code_end: int

    @property
    def cursor(self) -> int:
        return len(self.before.encode("utf-8"))

    @property
    def broken_at_cursor(self) -> bool:
        """An error of the text without the completion runs up to (or across) the cursor."""
        cursor = self.cursor
        return any(error.start <= cursor and error.end >= self.code_end for error in self.errors)


def _span(node: tree_sitter.Node) -> ErrorSpan:
    return ErrorSpan(MISSING if node.is_missing else ERROR, node.start_byte, node.end_byte)


def _is_error(node: tree_sitter.Node) -> bool:
    return node.is_error or node.is_missing


def outermost_errors(root: tree_sitter.Node, start: int = 0, end: int | None = None) -> list[tree_sitter.Node]:
    """ERROR and MISSING nodes not inside another ERROR, touching [start, end] (all by default)."""
    found: list[tree_sitter.Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if _is_error(node):
            found.append(node)
            continue
        for child in reversed(node.children):
            touches = child.end_byte >= start and (end is None or child.start_byte <= end)
            if touches and (child.has_error or _is_error(child)):
                stack.append(child)
    return found


def syntax_baseline(
    language: Language, before: str, after: str, tree: tree_sitter.Tree | None = None
) -> SyntaxBaseline:
    """The baseline for a cursor between ``before`` and ``after``.

    ``tree``: the parse of ``before + after`` when the caller has it already.
    """
    before_bytes = before.encode("utf-8")
    if tree is None:
        tree = language.parser().parse(before_bytes + after.encode("utf-8"))
    errors = tuple(_span(node) for node in outermost_errors(tree.root_node))
    return SyntaxBaseline(language, before, after, errors, len(before_bytes.rstrip()))


def new_errors(baseline: SyntaxBaseline, insertion: str, replaced: int = 0, closing: str = "") -> list[ErrorSpan]:
    """Errors in the inserted region that the baseline does not explain.

    ``replaced``: characters of ``after`` that the insertion replaces (an auto-closed
    ``}`` the completion supplies again). ``closing``: text that closes what the
    insertion opened and left open (a block cut short is incomplete, not wrong); it is
    parsed right after the insertion, as part of the region.
    """
    if not insertion:
        return []
    cursor = baseline.cursor
    inserted = (insertion + closing).encode("utf-8")
    end = cursor + len(inserted)
    source = baseline.before.encode("utf-8") + inserted + baseline.after[replaced:].encode("utf-8")
    tree = baseline.language.parser().parse(source)
    broken = baseline.broken_at_cursor
    found = []
    for node in outermost_errors(tree.root_node, cursor, end):
        span = _span(node)
        if span.start == span.end:
            in_region = cursor < span.start <= end
        else:
            in_region = span.start < end and span.end > cursor
        # In code already broken at the cursor, recovery redraws the old error around the
        # completion and asks for tokens the old error lacks: only errors that start
        # inside the completion are its own.
        if in_region and not (broken and (span.kind == MISSING or span.start <= cursor)):
            found.append(span)
    return found


def clean_lines(text: str, replaced: int, clean: Callable[[str, int], bool]) -> tuple[str, int]:
    """The longest prefix of whole lines of ``text`` that is clean, and what it replaces.

    ``clean(candidate, replaced)`` judges a candidate. The answer is ``text`` itself
    when it is clean (replacing ``replaced`` characters); else the longest clean prefix
    ending at a line break (replacing nothing: the characters ``text`` would have
    supplied again are no longer in it); else ``""``.
    """
    if clean(text, replaced):
        return text, replaced
    tried: set[str] = set()
    end = text.rfind("\n")
    while end > 0:
        kept = text[:end].rstrip()
        if kept.strip() and kept not in tried:
            tried.add(kept)
            if clean(kept, 0):
                return kept, 0
        end = text.rfind("\n", 0, end)
    return "", 0
