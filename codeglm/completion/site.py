"""Where a completion goes: the cursor's place (single- or multi-line, the block its line
opens) and the window around it."""

from __future__ import annotations

from dataclasses import dataclass

import tree_sitter

from codeglm.completion.brackets import open_stack
from codeglm.languages import Language
from codeglm.syntax.guard import SyntaxBaseline, syntax_baseline

# Characters an editor inserts after the cursor by itself: they do not make the cursor "mid-line".
AUTO_CLOSED = set(")]}\"'`;,")


# The parse window for stop checks: from the top-level item holding the cursor, at most this many lines.
WINDOW_LINES = 200


@dataclass(frozen=True)
class CompletionSite:
    """Where the cursor stands, in "\\n"-normalised text.

    ``window_start``: index in ``prefix`` from which stop checks parse (the top-level
    item around the cursor), so a check costs the same on a 10-line and a 10k-line file.
    """

    language: Language
    prefix: str
    suffix: str
    line_prefix: str
    line_suffix: str
    multiline: bool
    opens_block: bool
    window_start: int
    # The first non-blank line after the cursor's line (right-stripped), "" if none.
    next_code_line: str = ""
    # The parse window without the completion (for junk rejection); None: made when needed.
    syntax: SyntaxBaseline | None = None


def _without_line_comment(language: Language, line: str) -> str:
    """``line`` without a trailing line comment (a comment marker inside a string stays)."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif line.startswith(language.line_comment, i):
            return line[:i]
        i += 1
    return line


def _opens_block_by_text(language: Language, line_prefix: str, window_prefix: str) -> bool:
    """The fallback rule, for a line the parser could not place: the code ends in ``{``,
    or in ``:`` outside brackets (inside them it is a slice, a dict, a lambda)."""
    code = _without_line_comment(language, line_prefix).rstrip()
    if not language.indentation_blocks:
        return code.endswith("{")
    return code.endswith(":") and not open_stack(language, window_prefix)


def _opens_block_by_tree(
    language: Language, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int, line_start: int
) -> bool | None:
    """Whether the last token of the cursor's line opens a block, by the parse tree of
    the document; None when the tree cannot say (no token there, or it sits in an ERROR).

    Python: a ``:`` that belongs to a compound statement (not a slice, dict, lambda or
    annotation). Brace languages: a ``{`` that starts a statement or declaration body,
    or a literal that does not close on the same line (``{█}`` of an initializer is
    completed in place).
    """
    token = opener_node(tree, text_bytes, cursor)
    if token is None or token.end_byte <= line_start:
        return None
    node: tree_sitter.Node | None = token
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return None
        node = node.parent
    parent = token.parent
    if parent is None:
        return None
    if language.indentation_blocks:
        return token.type == ":" and parent.type in language.block_types
    if token.type != "{":
        return False
    if parent.type in language.block_types:
        return True
    closing = parent.children[-1]
    closes_on_this_line = (
        closing.type == "}" and not closing.is_missing and b"\n" not in text_bytes[cursor : closing.start_byte]
    )
    return not closes_on_this_line


def completion_site(language: Language, prefix: str, suffix: str, multiline: bool | None = None) -> CompletionSite:
    """Classify the cursor: ``multiline`` forces a mode (None decides from the text).

    Parses the window around the cursor once: the tree decides whether the line opens a
    block, and the same parse is the baseline that junk rejection compares against.
    """
    prefix = prefix.replace("\r\n", "\n")
    suffix = suffix.replace("\r\n", "\n")
    line_prefix = prefix[prefix.rfind("\n") + 1 :]
    newline = suffix.find("\n")
    line_suffix = suffix if newline < 0 else suffix[:newline]
    start = window_start(language, prefix)
    before, after = prefix[start:], suffix_window(suffix)
    before_bytes = before.encode("utf-8")
    text_bytes = before_bytes + after.encode("utf-8")
    tree = language.parser().parse(text_bytes)
    cursor = len(before_bytes)
    opens = _opens_block_by_tree(language, tree, text_bytes, cursor, cursor - len(line_prefix.encode("utf-8")))
    if opens is None:
        opens = _opens_block_by_text(language, line_prefix, before)
    rest = line_suffix.strip()
    if multiline is None:
        # Right after a block opener the body is wanted, whatever follows on the line;
        # otherwise real code after the cursor (not just auto-closed characters) means
        # finishing this line only.
        only_auto_closed = all(ch in AUTO_CLOSED or ch.isspace() for ch in rest)
        multiline = opens or (not line_prefix.strip() and (not rest or only_auto_closed))
    return CompletionSite(
        language=language,
        prefix=prefix,
        suffix=suffix,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        multiline=multiline,
        opens_block=opens,
        window_start=start,
        next_code_line=_next_code_line(suffix),
        syntax=syntax_baseline(language, before, after, tree),
    )


def _next_code_line(suffix: str) -> str:
    start = suffix.find("\n")
    while start >= 0:
        end = suffix.find("\n", start + 1)
        line = suffix[start + 1 : end if end >= 0 else len(suffix)]
        if line.strip():
            return line.rstrip()
        start = end
    return ""


def window_start(language: Language, prefix: str) -> int:
    """Start of the top-level item holding the end of ``prefix``: the last line before the
    cursor that starts at column 0 with code (not a comment, not a closer), at most
    WINDOW_LINES back. A textual rule on purpose: the prefix of a half-typed file
    rarely parses into a tree whose top-level nodes can be trusted."""
    end = len(prefix)
    line_end = prefix.rfind("\n")
    for _ in range(WINDOW_LINES):
        if line_end < 0:
            return 0
        line_start = prefix.rfind("\n", 0, line_end) + 1
        line = prefix[line_start:line_end]
        if line[:1] and not line[0].isspace() and not line.startswith(_NOT_ITEM_STARTS):
            if not line.startswith(language.line_comment):
                return line_start
        end = line_start
        line_end = line_start - 1
    return max(0, end)


_NOT_ITEM_STARTS = ("}", ")", "]", "*", "/*", "#include", '"' * 3, "'" * 3)


def opener_node(tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> tree_sitter.Node | None:
    """The ``:`` or ``{`` that ends the line before the cursor."""
    position = len(text_bytes[:cursor].rstrip())
    while position > 0:
        node = tree.root_node.descendant_for_byte_range(position - 1, position)
        if node is None or not node.is_extra:
            return node
        position = len(text_bytes[: node.start_byte].rstrip())  # skip a trailing comment
    return None


def suffix_window(suffix: str) -> str:
    end = 0
    for _ in range(WINDOW_LINES):
        end = suffix.find("\n", end) + 1
        if end == 0:
            return suffix
    return suffix[:end]


__all__ = ["AUTO_CLOSED", "CompletionSite", "WINDOW_LINES", "completion_site", "opener_node", "suffix_window", "window_start"]
