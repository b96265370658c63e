"""Definitions in a parse tree (functions, classes, constants) with their header text, found by
each language's query and updated after an edit."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import tree_sitter

from codeglm.completion.edits import ByteEdit
from codeglm.languages import Language
from codeglm.syntax.nodes import body_of, line_start

# A definition this short is shown whole; a longer one as its header (and member headers).
SHORT_DEFINITION_LINES = 12


MAX_HEADER_LINES = 6


@dataclass(frozen=True)
class Definition:
    """A definition in a document: its name, byte range and the text a prompt shows for it."""

    name: str
    start_byte: int
    end_byte: int
    text: str


@cache
def _definition_query(language: Language) -> tree_sitter.Query:
    return tree_sitter.Query(language.ts_language(), language.definition_query)


@cache
def identifier_query(language: Language) -> tree_sitter.Query:
    alternatives = " ".join(f"({t})" for t in sorted(language.identifier_types))
    return tree_sitter.Query(language.ts_language(), f"[{alternatives}] @id")


def node_text(source: bytes, start: int, end: int) -> str:
    return source[start:end].decode("utf-8", errors="replace")


def header_text(node: tree_sitter.Node, source: bytes) -> str:
    """A definition's header: from its first line up to where its body starts."""
    start = line_start(source, node.start_byte)
    body = body_of(node)
    end = body.start_byte if body is not None and body.start_byte > node.start_byte else node.end_byte
    for child in node.children:
        # Error recovery can put half-typed code between the ":" and the body.
        if child.type in (":", "{") and child.start_byte < end:
            end = child.end_byte if child.type == ":" else child.start_byte
            break
    text = textwrap.dedent(node_text(source, start, end)).rstrip()
    lines = text.split("\n")
    if body is None:
        lines = lines[:1]
    if len(lines) > MAX_HEADER_LINES:
        lines = [*lines[:MAX_HEADER_LINES], "..."]
    return "\n".join(lines).rstrip()


def _definition_text(node: tree_sitter.Node, source: bytes, language: Language) -> str:
    """The whole definition when short, else its header plus the headers of its members."""
    start = line_start(source, node.start_byte)
    # Count lines on the bytes first: a long definition is never decoded and dedented whole.
    if source.count(b"\n", start, node.end_byte) < SHORT_DEFINITION_LINES + 2:
        full = textwrap.dedent(node_text(source, start, node.end_byte)).rstrip()
        if full.count("\n") < SHORT_DEFINITION_LINES:
            return full
    header = header_text(node, source)
    body = body_of(node)
    members: list[str] = []
    if body is not None:
        for child in body.named_children:
            if child.type in language.scope_types or child.type in ("field_declaration", "function_signature_item"):
                member = header_text(child, source) if child.type in language.scope_types else (
                    node_text(source, child.start_byte, child.end_byte).split("\n", 1)[0]
                )
                members.append(textwrap.indent(member, "    "))
    opener = "" if language.indentation_blocks else " {"
    closer = "" if language.indentation_blocks else "\n}"
    inner = "\n".join([*members, "    ..."])
    return f"{header}{opener}\n{inner}{closer}"


def definitions_in(
    tree: tree_sitter.Tree, source: bytes, language: Language, byte_range: tuple[int, int] | None = None
) -> list[tuple[str, tree_sitter.Node]]:
    """(name, definition node) for every definition the language's query finds; with
    ``byte_range`` (start, end), only those touching it (end inclusive)."""
    query_cursor = tree_sitter.QueryCursor(_definition_query(language))
    if byte_range is not None:
        query_cursor.set_byte_range(max(0, byte_range[0] - 1), byte_range[1] + 1)
    found: list[tuple[str, tree_sitter.Node]] = []
    seen: set[tuple[int, int]] = set()
    for _, captures in query_cursor.matches(tree.root_node):
        names, nodes = captures.get("name", []), captures.get("definition", [])
        if not names or not nodes:
            continue
        node = nodes[0]
        key = (node.start_byte, node.end_byte)
        if key in seen:
            continue
        if byte_range is not None and (node.end_byte < byte_range[0] or node.start_byte > byte_range[1]):
            continue  # the range only narrows the search; it can still match around it
        seen.add(key)
        found.append((node_text(source, names[0].start_byte, names[0].end_byte), node))
    return found


def _in_order(definitions: list[Definition]) -> tuple[Definition, ...]:
    return tuple(sorted(definitions, key=lambda d: (d.start_byte, -d.end_byte, d.name)))


def extract_definitions(
    tree: tree_sitter.Tree, source: bytes, language: Language, byte_range: tuple[int, int] | None = None
) -> tuple[Definition, ...]:
    """The definitions of a document (those touching ``byte_range`` if given), in order."""
    return _in_order(
        [
            Definition(name, node.start_byte, node.end_byte, _definition_text(node, source, language))
            for name, node in definitions_in(tree, source, language, byte_range)
        ]
    )


def update_definitions(
    old: tuple[Definition, ...],
    edit: ByteEdit,
    changed: Sequence[tree_sitter.Range],
    tree: tree_sitter.Tree,
    source: bytes,
    language: Language,
) -> tuple[tuple[Definition, ...], int]:
    """The definitions after ``edit`` and how many of them were kept from ``old``.

    ``tree`` is the re-parse of ``source`` and ``changed`` the ranges whose structure
    changed (``Tree.changed_ranges``). The affected region is the edit and those
    ranges, widened to whole lines (a definition's text starts at its line's start).
    A definition wholly outside it has the same bytes and structure as before: it is
    kept, moved by the edit's length. Definitions touching it are extracted again.
    """
    low = min([edit.start_byte, *(r.start_byte for r in changed)])
    high = max([edit.new_end_byte, *(r.end_byte for r in changed)])
    low = line_start(source, low)
    line_end = source.find(b"\n", high)
    high = len(source) if line_end < 0 else line_end
    shift = edit.new_end_byte - edit.old_end_byte
    kept: list[Definition] = []
    for definition in old:
        if definition.end_byte < edit.start_byte:
            moved = definition
        elif definition.start_byte > edit.old_end_byte:
            moved = Definition(
                definition.name, definition.start_byte + shift, definition.end_byte + shift, definition.text
            )
        else:
            continue
        if moved.end_byte < low or moved.start_byte > high:
            kept.append(moved)
    fresh = extract_definitions(tree, source, language, (low, high))
    return _in_order([*kept, *fresh]), len(kept)


__all__ = ["Definition", "MAX_HEADER_LINES", "SHORT_DEFINITION_LINES", "definitions_in", "extract_definitions", "header_text", "identifier_query", "node_text", "update_definitions"]
