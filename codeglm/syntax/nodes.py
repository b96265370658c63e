"""Small tree-sitter helpers that completion and translation share: offsets and bodies."""

from __future__ import annotations

import tree_sitter


def line_start(source: bytes, offset: int) -> int:
    """The byte offset where the line holding ``offset`` starts."""
    return source.rfind(b"\n", 0, offset) + 1


def char_offset(source: bytes, byte_offset: int) -> int:
    """The str index of a byte offset into UTF-8 ``source`` (a split character counts as before it)."""
    return len(source[:byte_offset].decode("utf-8", errors="ignore"))


def body_of(node: tree_sitter.Node) -> tree_sitter.Node | None:
    """A definition's body: its ``body`` field, or for a Go ``type_declaration`` its spec's type."""
    body = node.child_by_field_name("body")
    if body is None and node.type == "type_declaration" and node.named_children:
        body = node.named_children[0].child_by_field_name("type")
    return body


__all__ = ["body_of", "char_offset", "line_start"]
