"""Split a source file into top-level units for translation, with tree-sitter.

A unit is what one translation prompt carries: the import block, a constant (or a run
of constants), a class, a function, or a top-level statement. Comments, decorators and
attributes right above an item belong to it. A class too long for the model's context
is split into its "head" (header, fields and other non-method members) and one unit per
method; ``Unit.container`` names the class those came from so that the translations can
be put back together.

Node types are grouped here (not in ``codeglm.languages``) because only translation
cares about "what kind of top-level item is this".
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from codeglm.completion.definitions import definitions_in
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import ALL_UNIT_NODES, Language
from codeglm.syntax.nodes import body_of, line_start

TokenCounter = Callable[[str], int]

# Node types by what a unit is, from the language table (each row's ``unit_nodes``).
TYPE_NODES = ALL_UNIT_NODES.types
FUNCTION_NODES = ALL_UNIT_NODES.functions
CONSTANT_NODES = ALL_UNIT_NODES.constants
LEADING_NODES = ALL_UNIT_NODES.leading
WRAPPER_NODES = ALL_UNIT_NODES.wrappers


@dataclass(frozen=True)
class Unit:
    """One piece of the source to translate on its own.

    ``kind``: "imports", "constant", "type", "function", "statement", "file" (the whole
    file in one piece) or, for a split class, "head" and "member".
    ``text``: whole lines of the source (indentation kept). ``start_line``/``end_line``:
    0-based, inclusive. ``container``/``container_header``/``container_footer``: for
    "head" and "member" units, the class they come from, its header up to the body
    opener and its closing text (``""`` for indentation languages).
    """

    kind: str
    name: str
    text: str
    start_line: int
    end_line: int
    container: str | None = None
    container_header: str = ""
    container_footer: str = ""

    @property
    def label(self) -> str:
        """How progress lines and reports name the unit."""
        owner = f"{self.container}." if self.container and self.kind == "member" else ""
        return f"{self.kind} {owner}{self.name}".rstrip()


def _text(source: bytes, start: int, end: int) -> str:
    return source[start:end].decode("utf-8", errors="replace")


def _line_end(source: bytes, offset: int) -> int:
    end = source.find(b"\n", offset)
    return len(source) if end < 0 else end


def _inner(node: tree_sitter.Node) -> tree_sitter.Node:
    """The definition a wrapper (decorators, template, export) wraps."""
    while node.type in WRAPPER_NODES:
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
        if inner is None:
            named = [
                c
                for c in node.named_children
                if c.type not in LEADING_NODES and c.type != "template_parameter_list"
            ]
            inner = named[-1] if named else None
        if inner is None:
            break
        node = inner
    return node


def _is_require(node: tree_sitter.Node, source: bytes) -> bool:
    """``const x = require("...")``: a CommonJS import."""
    if node.type not in ("lexical_declaration", "variable_declaration"):
        return False
    return all(
        (value := d.child_by_field_name("value")) is not None
        and value.type == "call_expression"
        and _text(source, value.start_byte, value.end_byte).startswith("require(")
        for d in node.named_children
        if d.type == "variable_declarator"
    )


def _is_docstring(node: tree_sitter.Node) -> bool:
    return (
        node.type == "expression_statement"
        and len(node.named_children) == 1
        and node.named_children[0].type == "string"
    )


def kind_of(node: tree_sitter.Node, source: bytes, language: Language) -> str:
    """What kind of unit a top-level node starts: "imports", "type", "function", "constant", "statement"."""
    if node.type in language.import_types or _is_require(node, source):
        return "imports"
    inner = _inner(node)
    if inner.type in TYPE_NODES:
        return "type"
    if inner.type in FUNCTION_NODES:
        return "function"
    if inner.type in ("lexical_declaration", "variable_declaration"):
        values = [
            d.child_by_field_name("value") for d in inner.named_children if d.type == "variable_declarator"
        ]
        if values and all(
            v is not None and v.type in ("arrow_function", "function_expression", "function") for v in values
        ):
            return "function"
        if values and all(v is not None and v.type == "class" for v in values):
            return "type"
    if inner.type in CONSTANT_NODES:
        return "constant"
    if (
        inner.type == "expression_statement"
        and inner.named_children
        and inner.named_children[0].type == "assignment"
    ):
        return "constant"
    return "statement"


def _name_of(node: tree_sitter.Node, source: bytes, names: dict[int, str]) -> str:
    """The item's name: from the language's definition query, else its first identifier."""
    for start, name in names.items():
        if node.start_byte <= start < node.end_byte:
            return name
    stack = [node]
    while stack:
        current = stack.pop(0)
        if current.type in ("identifier", "type_identifier", "field_identifier", "property_identifier"):
            return _text(source, current.start_byte, current.end_byte)
        stack.extend(current.named_children)
    return ""


@dataclass
class _Group:
    kind: str
    nodes: list[tree_sitter.Node]
    start_byte: int  # including leading comments


def _groups(root: tree_sitter.Node, source: bytes, language: Language) -> list[_Group]:
    """Top-level nodes grouped into units: leading comments join the next item, imports
    and constants that follow each other form one unit, a stray ``;`` joins the item before."""
    groups: list[_Group] = []
    pending_start: int | None = None
    for node in root.children:
        if node.type in LEADING_NODES or (_is_docstring(node) and not groups and pending_start is None):
            if pending_start is None:
                pending_start = node.start_byte
            continue
        if node.type == ";" and groups:
            groups[-1].nodes.append(node)
            continue
        kind = kind_of(node, source, language)
        start = node.start_byte if pending_start is None else pending_start
        pending_start = None
        previous = groups[-1] if groups else None
        adjacent = previous is not None and source[previous.nodes[-1].end_byte : start].count(b"\n") <= 2
        if previous is not None and kind == previous.kind and kind in ("imports", "constant") and adjacent:
            previous.nodes.append(node)
            continue
        groups.append(_Group(kind, [node], start))
    if pending_start is not None:
        # Comments at the very end: keep them with the last unit (or alone).
        if groups:
            groups[-1].nodes.append(root.children[-1])
        else:
            groups.append(_Group("statement", [root.children[-1]], pending_start))
    return groups


# The newline offsets of the last source split (one entry: sources are split one at a time).
_newlines: tuple[bytes, list[int]] = (b"", [])


def _line_of(source: bytes, offset: int) -> int:
    """The 0-based line of byte ``offset``. Counting newlines from the start for every
    unit made a file of 13,000 methods take minutes to split (quadratic); this bisects
    a table built once per source."""
    global _newlines
    cached_source, offsets = _newlines
    if cached_source is not source:
        offsets = [match.start() for match in re.finditer(b"\n", source)]
        _newlines = (source, offsets)
    return bisect.bisect_left(offsets, offset)


def _unit_from_span(kind: str, name: str, source: bytes, start: int, end: int) -> Unit:
    start = line_start(source, start)
    end = _line_end(source, end)
    return Unit(
        kind=kind,
        name=name,
        text=_text(source, start, end),
        start_line=_line_of(source, start),
        end_line=_line_of(source, end),
    )


def _body_of(node: tree_sitter.Node) -> tree_sitter.Node | None:
    return body_of(_inner(node))


def _is_member_function(node: tree_sitter.Node) -> bool:
    return _inner(node).type in FUNCTION_NODES or (
        node.type == "field_declaration"
        and any(c.type == "function_declarator" for c in node.named_children)
        and node.child_by_field_name("default_value") is None
        and b"{" in (node.text or b"")
    )


def _split_type(group: _Group, source: bytes, name: str, indentation_blocks: bool) -> list[Unit] | None:
    """A class as its head and one unit per method, or None when it has fewer than two methods."""
    node = group.nodes[0]
    body = _body_of(node)
    if body is None:
        return None
    members = body.named_children
    methods: list[tuple[int, tree_sitter.Node]] = []
    pending: int | None = None
    for member in members:
        if member.type in LEADING_NODES:
            pending = member.start_byte if pending is None else pending
            continue
        if _is_member_function(member):
            methods.append((member.start_byte if pending is None else pending, member))
        pending = None
    if len(methods) < 2:
        return None
    if indentation_blocks:
        header_end = body.start_byte
        header = _text(source, line_start(source, group.start_byte), line_start(source, header_end)).rstrip()
        footer = ""
        footer_start = body.end_byte
    else:
        # The body's first child is its opening brace; its last the closing one.
        opener = body.children[0] if body.children else body
        header_end = opener.end_byte
        header = _text(source, line_start(source, group.start_byte), header_end)
        closer = body.children[-1] if body.children else body
        footer_start = closer.start_byte
        footer = _text(source, footer_start, _line_end(source, group.nodes[-1].end_byte)).strip()
    # The head: everything in the class except the methods.
    pieces: list[str] = [header]
    # Python's block starts at its first statement: keep that line (a docstring, a field).
    cursor = line_start(source, header_end) if indentation_blocks else header_end
    for start, method in methods:
        pieces.append(_text(source, cursor, line_start(source, start)))
        cursor = _line_end(source, method.end_byte) + 1
    tail = _text(source, min(cursor, footer_start), _line_end(source, group.nodes[-1].end_byte))
    rest = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", "".join(pieces[1:]) + tail)
    if indentation_blocks:
        body_text = rest.rstrip()
        if not body_text.strip():
            indent = " " * (methods[0][1].start_point[1] or 4)
            body_text = f"{indent}pass"
        head_text = header + "\n" + body_text.strip("\n")
    else:
        head_text = (header + "\n" + rest.strip("\n")).rstrip()
        if not head_text.endswith(footer):
            head_text += "\n" + footer
    first_line = source.count(b"\n", 0, line_start(source, group.start_byte))
    units = [
        Unit(
            kind="head",
            name=name,
            text=head_text,
            start_line=first_line,
            end_line=source.count(b"\n", 0, group.nodes[-1].end_byte),
            container=name,
            container_header=header,
            container_footer=footer,
        )
    ]
    names = {m.start_byte: _name_of(m, source, {}) for _, m in methods}
    for start, method in methods:
        member = _unit_from_span("member", names[method.start_byte], source, start, method.end_byte)
        units.append(
            Unit(
                kind="member",
                name=member.name,
                text=member.text,
                start_line=member.start_line,
                end_line=member.end_line,
                container=name,
                container_header=header,
                container_footer=footer,
            )
        )
    return units


def split_units(
    language: Language,
    source: str,
    max_unit_tokens: int | None = None,
    count_tokens: TokenCounter | None = None,
) -> list[Unit]:
    """The top-level units of ``source``, in order.

    With ``max_unit_tokens`` and ``count_tokens``, a class whose text takes more tokens
    than that is split into its head and its methods.
    """
    data = source.encode("utf-8")
    tree = parse_text(language, source)
    names = {node.start_byte: name for name, node in definitions_in(tree, data, language)}
    units: list[Unit] = []
    for group in _groups(tree.root_node, data, language):
        first = group.nodes[0]
        end = group.nodes[-1].end_byte
        if group.kind == "imports":
            name = f"{len(group.nodes)} line(s)"
        else:
            name = _name_of(_inner(first), data, names)
        unit = _unit_from_span(group.kind, name, data, group.start_byte, end)
        too_long = (
            max_unit_tokens is not None
            and count_tokens is not None
            and group.kind == "type"
            and count_tokens(unit.text) > max_unit_tokens
        )
        if too_long:
            parts = _split_type(group, data, name, language.indentation_blocks)
            if parts:
                units.extend(parts)
                continue
        units.append(unit)
    return units


def whole_file_unit(source: str) -> Unit:
    """The whole source as one unit (when it fits the model's context)."""
    return Unit(kind="file", name="", text=source.rstrip("\n"), start_line=0, end_line=source.count("\n"))
