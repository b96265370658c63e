"""Where a generation stops: the end of the block the cursor opened, read from the parse tree
(indentation where the tree cannot tell)."""

from __future__ import annotations

import re

import tree_sitter

from codeglm.completion.site import CompletionSite, opener_node
from codeglm.syntax.nodes import char_offset

# A dedented line starting with one of these continues the statement (Python).
CONTINUATION_KEYWORDS = (b"else", b"elif", b"except", b"finally", b"case")


def indent_width(line: str) -> int:
    """Indentation in columns (a tab counts 4: the data mixes tabs and spaces)."""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    return len(indent.expandtabs(4))


def last_child_closes(node: tree_sitter.Node) -> bool:
    last = node.children[-1] if node.children else None
    return last is not None and last.type == "}" and not last.is_missing


def content_after(text_bytes: bytes, offset: int) -> bool:
    return bool(text_bytes[offset:].strip())


def _dedented_after(text_bytes: bytes, offset: int, max_indent: int) -> bool:
    """Code follows ``offset`` on a later line indented at most ``max_indent``: the block
    before it really ended (and was not cut short by error recovery around a half-typed line)."""
    rest = text_bytes[offset:]
    stripped = rest.lstrip()
    if not stripped:
        return False
    gap = rest[: len(rest) - len(stripped)]
    if b"\n" not in gap:
        return False
    indent = len(gap) - gap.rfind(b"\n") - 1
    if indent > max_indent:
        return False
    line = stripped.split(b"\n", 1)
    word = re.match(rb"\w*", line[0]).group(0)  # type: ignore[union-attr]
    if len(line) == 1 and any(keyword.startswith(word) for keyword in CONTINUATION_KEYWORDS):
        return False  # "el..." may become "else:", which belongs to the block: wait for the line
    return True


def _suffix_duplicate_cut(site: CompletionSite, generation: str) -> int | None:
    """Cut before a generated line that repeats the first non-blank line after the cursor's line."""
    target = site.next_code_line  # with its indentation: the same code elsewhere is not a repeat
    if len(target.strip()) < 2:
        return None
    start = 0
    for line in generation.split("\n")[:-1]:
        if start > 0 and line.rstrip() == target:
            return start - 1
        start += len(line) + 1
    return None


def _indentation_fallback(site: CompletionSite, generation: str) -> int | None:
    """Where indentation says the block ended; used only when the tree cannot say (the
    opener sits in an ERROR node, as Go's grammar does with unclosed blocks).

    Python: the first whole line indented less than the block (not ``else``/``elif``/...).
    Brace languages: a line starting with ``}`` at the opener's indentation (kept) or, on
    an empty line, left of the cursor (the document's own brace: cut before it).
    """
    base = indent_width(site.line_prefix)
    offset = 0
    lines = generation.split("\n")
    for number, line in enumerate(lines):
        stripped = line.strip()
        if number > 0 and stripped:
            width = indent_width(line)
            leaves = width <= base if site.opens_block else width < base
            if site.language.indentation_blocks:
                whole = number < len(lines) - 1
                continues = stripped.encode().startswith(CONTINUATION_KEYWORDS)
                if leaves and whole and not continues:
                    return max(0, offset - 1)
            elif leaves and stripped.startswith("}"):
                if site.opens_block:
                    return offset + len(line) - len(line.lstrip()) + 1
                return max(0, offset - 1)
        offset += len(line) + 1
    return None


def find_stop(site: CompletionSite, generation: str) -> int | None:
    """Characters of ``generation`` to keep when the completion is complete, else None."""
    if not site.multiline:
        return _single_line_stop(site, generation)
    duplicate = _suffix_duplicate_cut(site, generation)
    if not generation.strip():
        return None
    window = site.prefix[site.window_start :]
    window_bytes = window.encode("utf-8")
    text_bytes = window_bytes + generation.encode("utf-8")
    cursor = len(window_bytes)
    parse_end = len(text_bytes)
    if site.language.indentation_blocks:
        # A half-written last line makes error recovery end blocks early ("else: return (");
        # the tree of whole lines decides, the last line only shows whether code dedented.
        parse_end = text_bytes.rfind(b"\n") + 1 if text_bytes.rfind(b"\n") >= cursor else cursor
    tree = site.language.parser().parse(text_bytes[:parse_end])
    cut_byte = _tree_stop(site, tree, text_bytes, cursor)
    if cut_byte is None:
        cut = _indentation_fallback(site, generation) if _opener_in_error(site, tree, text_bytes, cursor) else None
    else:
        cut = char_offset(text_bytes, cut_byte) - len(window)
    if duplicate is not None and (cut is None or duplicate < cut):
        return duplicate
    return cut


def _single_line_stop(site: CompletionSite, generation: str) -> int | None:
    start = 0
    if not site.line_suffix.strip() and site.line_prefix.strip():
        # At the end of a finished line the model may go on with the next one: allow it.
        start = len(generation) - len(generation.lstrip("\n"))
    newline = generation.find("\n", start)
    if newline < 0:
        return None
    return newline if generation[:newline].strip() else 0


def _opener_in_error(site: CompletionSite, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> bool:
    node = opener_node(tree, text_bytes, cursor) if site.opens_block else (
        tree.root_node.descendant_for_byte_range(cursor, cursor)
    )
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return True
        node = node.parent
    return False


def _tree_stop(site: CompletionSite, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> int | None:
    language = site.language
    if site.opens_block:
        opener = opener_node(tree, text_bytes, cursor)
        if opener is None or opener.type not in (":", "{") or opener.parent is None:
            return None
        anchor = opener.parent
        if anchor.type == "ERROR":
            return None
        if language.indentation_blocks:
            opener_indent = indent_width(site.line_prefix)
            if anchor.end_byte > cursor and _dedented_after(text_bytes, anchor.end_byte, opener_indent):
                return anchor.end_byte
            return None
        if anchor.end_byte > cursor and last_child_closes(anchor):
            return anchor.end_byte
        return None
    # Empty line: the block holding the cursor, or the top level.
    first = len(text_bytes) - len(text_bytes[cursor:].lstrip())
    if first >= len(text_bytes):
        return None
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(first, first)
    statement = None
    while node is not None and node.parent is not None:
        if node.start_byte >= cursor and (node.parent.start_byte < cursor or node.parent.parent is None):
            statement = node
            break
        node = node.parent
    if statement is None or statement.parent is None:
        return None
    block = statement.parent
    if block.type == "ERROR":
        return None
    if block.parent is None:  # top level: the first item, once complete
        return _item_stop(site, statement, text_bytes)
    if statement.type in language.scope_types or statement.type == "decorated_definition":
        # A method written on an empty line of a class: one definition at a time.
        stop = _item_stop(site, statement, text_bytes)
        if stop is not None:
            return stop
    if language.indentation_blocks:
        if _dedented_after(text_bytes, block.end_byte, indent_width(site.line_prefix) - 1):
            return block.end_byte
        return None
    if last_child_closes(block):
        closing = block.children[-1]
        # The block's "}" is the document's own (it follows the cursor): stop before its line.
        line_start = text_bytes.rfind(b"\n", cursor, closing.start_byte)
        return line_start if line_start >= cursor else cursor
    return None


def _item_stop(site: CompletionSite, item: tree_sitter.Node, text_bytes: bytes) -> int | None:
    """The end of ``item`` (the first thing generated on an empty line), once it is complete."""
    if item.has_error or item.type == "ERROR":
        return None
    if site.language.indentation_blocks:
        indent = indent_width(site.line_prefix)
        return item.end_byte if _dedented_after(text_bytes, item.end_byte, indent) else None
    last = item
    while last.children:
        last = last.children[-1]
    if last.is_missing:
        return None
    if last.type in ("}", ";") or content_after(text_bytes, item.end_byte):
        return item.end_byte
    return None


__all__ = ["CONTINUATION_KEYWORDS", "content_after", "find_stop", "indent_width", "last_child_closes"]
