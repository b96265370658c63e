"""Checking a unit's translation with the target's grammar: trim what follows a complete item,
reject what does not parse or holds no code of the expected kind."""

from __future__ import annotations

import re

import tree_sitter

from codeglm.backends.base import (
    FinishedCallback,
)
from codeglm.completion.definitions import header_text
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import Language
from codeglm.syntax.nodes import char_offset
from codeglm.translation.units import (
    FUNCTION_NODES,
    LEADING_NODES,
    TYPE_NODES,
    kind_of,
)


def code_items(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    return [c for c in root.children if c.is_named and c.type not in LEADING_NODES]


def _first_error(node: tree_sitter.Node) -> tree_sitter.Node | None:
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing or child.type == "ERROR":
            found = _first_error(child)
            if found is not None:
                return found
    return None


def has_definition(node: tree_sitter.Node, depth: int = 3) -> bool:
    if node.type in TYPE_NODES or node.type in FUNCTION_NODES:
        return True
    if node.type in ("lexical_declaration", "variable_declaration"):
        return any(
            (v := d.child_by_field_name("value")) is not None and v.type in ("arrow_function", "function_expression", "class")
            for d in node.named_children
        )
    return depth > 0 and any(has_definition(c, depth - 1) for c in node.named_children)


def check_translation(target: Language, unit_kind: str, text: str) -> str | None:
    """None when ``text`` is an acceptable translation of a unit of ``unit_kind``, else the problem."""
    # Parsed as it will stand in a file: ending in a newline (Go's grammar wants one).
    data = (text.rstrip() + "\n").encode("utf-8")
    tree = target.parser().parse(data)
    root = tree.root_node
    if root.has_error:
        error = _first_error(root)
        where = f" near line {error.start_point[0] + 1}" if error is not None else ""
        return f"does not parse as {target.display_name}{where}"
    items = code_items(root)
    if unit_kind == "imports":
        return None  # an import may have no counterpart: nothing (or a comment) is fine
    if not items:
        return "no code in the translation"
    if unit_kind in ("type", "function", "head", "member") and not any(has_definition(i) for i in items):
        return f"no {'class' if unit_kind in ('type', 'head') else 'function'} in the translation"
    return None


def trim_translation(target: Language, unit_kind: str, text: str) -> str:
    """Drop trailing text that does not parse after complete items (the model wandering on).

    Kept only when what remains still holds the kind of code the unit needs; otherwise
    ``text`` comes back unchanged and validation reports it.
    """
    text = text.rstrip()
    data = text.encode("utf-8")
    root = parse_text(target, text + "\n").root_node
    if not root.has_error:
        return text
    good: list[tree_sitter.Node] = []
    for child in root.children:
        if child.has_error or child.is_missing or child.type == "ERROR":
            break
        good.append(child)
    if not good:
        return text
    # Cut only where a new line starts at column 0 (a new top-level item), never inside
    # an item the grammar happened to accept a prefix of (a Go function without a body).
    cut = char_offset(data, good[-1].end_byte)
    following = text[cut:]
    if not re.match(r"[ \t]*\n(\s*\n)*\S", following):
        return text
    kept = text[:cut].rstrip()
    return kept if check_translation(target, unit_kind, kept) is None else text


def make_finished(target: Language, unit_kind: str) -> FinishedCallback:
    """Stop once the unit's translation is complete and the model starts something else.

    Checked at line ends: an import unit ends where code starts; for a unit that is one
    function or constant, the first complete definition followed by the start of another
    top-level item ends it; for every unit, an item that repeats the name of a complete
    one (a small model looping) ends it.
    """
    single = unit_kind in ("function", "constant", "member")

    def finished(text: str) -> int | None:
        if not text.endswith("\n"):
            return None
        data = text.encode("utf-8")
        items = code_items(parse_text(target, text).root_node)
        complete, growing = items[:-1], items[-1:] if items else []
        if not growing or any(i.has_error for i in complete):
            return None
        names: set[str] = set()
        seen_code = False
        for index, item in enumerate(items):
            name = header_text(item, data).split("(", 1)[0].strip()
            is_import = item.type in target.import_types or kind_of(item, data, target) == "imports"
            if unit_kind == "imports" and not is_import:
                # The imports are done once code starts: that code belongs to later units.
                return char_offset(data, items[index - 1].end_byte) if index > 0 else 0
            if index > 0 and not is_import and ((single and seen_code) or (name and name in names)):
                return char_offset(data, items[index - 1].end_byte)
            names.add(name)
            seen_code = seen_code or not is_import
        return None

    return finished


__all__ = ["check_translation", "code_items", "has_definition", "make_finished", "trim_translation"]
