"""What the workspace index keeps of a file: each definition's name, line and a short text
(its signature, with the docstring or the comment just above it), found by the language's
definition query."""

from __future__ import annotations

from dataclasses import dataclass

import tree_sitter

from codeglm.completion.definitions import definitions_in, header_text, node_text
from codeglm.languages import Language
from codeglm.syntax.nodes import body_of

# A symbol's documentation is cut to this many lines, its whole text to this many characters.
DOC_LINES = 3
MAX_SYMBOL_CHARS = 600
MAX_SYMBOLS_PER_FILE = 2000


@dataclass(frozen=True)
class Symbol:
    """A definition as the index keeps it: ``line`` is 0-based, ``text`` what a prompt shows."""

    name: str
    line: int
    text: str
    signature: str  # the header's first line: what a reader checks for


def _comment_above(node: tree_sitter.Node, source: bytes) -> list[str]:
    """The comment lines right above a definition (no blank line between), nearest last."""
    lines: list[str] = []
    sibling = node.prev_named_sibling
    bottom_row = node.start_point[0]
    while sibling is not None and "comment" in sibling.type and sibling.end_point[0] >= bottom_row - 1:
        lines[:0] = node_text(source, sibling.start_byte, sibling.end_byte).strip().split("\n")
        bottom_row = sibling.start_point[0]
        sibling = sibling.prev_named_sibling
    if len(lines) > DOC_LINES:
        lines = [*lines[:DOC_LINES], lines[0][: len(lines[0]) - len(lines[0].lstrip("/#* "))] + "..."]
    return [line.strip() for line in lines]


def _docstring(node: tree_sitter.Node, source: bytes) -> list[str]:
    """A Python-style docstring: the body's first statement when it is a string."""
    body = body_of(node)
    if body is None or not body.named_children:
        return []
    first = body.named_children[0]
    if first.type != "expression_statement" or not first.named_children or first.named_children[0].type != "string":
        return []
    lines = [line.strip() for line in node_text(source, first.start_byte, first.end_byte).split("\n")]
    if len(lines) > DOC_LINES:
        quote = lines[0][:3] if lines[0][:3] in ('"""', "'''") else '"""'
        lines = [*lines[:DOC_LINES], "...", quote]
    return lines


def _symbol_text(node: tree_sitter.Node, source: bytes, language: Language) -> tuple[str, str]:
    header = header_text(node, source)
    signature = header.split("\n", 1)[0]
    if language.indentation_blocks:
        doc = _docstring(node, source)
        text = header + "".join(f"\n    {line}".rstrip() for line in doc)
        if doc:
            text += "\n    ..."
        elif body_of(node) is not None:
            text += " ..."
    else:
        text = "\n".join([*_comment_above(node, source), header])
        if body_of(node) is not None and not header.rstrip().endswith(";"):
            text += " { ... }"
    if len(text) > MAX_SYMBOL_CHARS:
        text = text[:MAX_SYMBOL_CHARS].rsplit("\n", 1)[0] + "\n..."
    return text, signature


def file_symbols(tree: tree_sitter.Tree, source: bytes, language: Language) -> tuple[Symbol, ...]:
    """The definitions of a parsed file as index symbols, in order of appearance."""
    symbols = []
    for name, node in definitions_in(tree, source, language)[:MAX_SYMBOLS_PER_FILE]:
        text, signature = _symbol_text(node, source, language)
        symbols.append(Symbol(name, node.start_point[0], text, signature))
    return tuple(sorted(symbols, key=lambda s: s.line))


__all__ = ["DOC_LINES", "MAX_SYMBOLS_PER_FILE", "MAX_SYMBOL_CHARS", "Symbol", "file_symbols"]
