"""Joining translated units into one file by the target's conventions (imports at the top, a
split class put back together, Java's wrapper class), and the signatures later prompts show."""

from __future__ import annotations

import re

import tree_sitter

from codeglm.completion.definitions import definitions_in, header_text
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import ALL_UNIT_NODES, Language, get_language
from codeglm.syntax.nodes import char_offset
from codeglm.translation.types import UnitResult
from codeglm.translation.units import (
    TYPE_NODES,
    kind_of,
)
from codeglm.translation.validation import code_items, has_definition

# Containers that hold methods (where a split class's methods go back in).
METHOD_HOLDERS = ALL_UNIT_NODES.method_holders


JAVA_TYPES = frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"})


def _span_lines(text: str, data: bytes, node: tree_sitter.Node) -> tuple[int, int]:
    """Char range of the whole lines a node covers."""
    start = data.rfind(b"\n", 0, node.start_byte) + 1
    end = data.find(b"\n", node.end_byte)
    end = len(data) if end < 0 else end + 1
    return char_offset(data, start), char_offset(data, end)


def split_imports(target: Language, text: str) -> tuple[list[str], list[str], str]:
    """(package clauses, top-level imports, the rest of the text) of a translated piece."""
    data = text.encode("utf-8")
    root = parse_text(target, text).root_node
    packages: list[str] = []
    imports: list[str] = []
    cuts: list[tuple[int, int]] = []
    for child in root.children:
        if child.type in ("package_clause", "package_declaration"):
            packages.append(data[child.start_byte : child.end_byte].decode("utf-8", errors="replace").strip())
        elif kind_of(child, data, target) == "imports":
            imports.append(data[child.start_byte : child.end_byte].decode("utf-8", errors="replace").strip())
        else:
            continue
        cuts.append(_span_lines(text, data, child))
    rest = text
    for start, end in reversed(cuts):
        rest = rest[:start] + rest[end:]
    return packages, imports, rest.strip("\n")


def _go_import_block(imports: list[str]) -> list[str]:
    """Go imports as one block of unique specs."""
    specs: list[str] = []
    for item in imports:
        for spec in re.findall(r'(?:^|\s)((?:[\w.]+\s+)?"[^"]+")', item.replace("import", " ", 1)):
            if spec.strip() not in specs:
                specs.append(spec.strip())
    if not specs:
        return []
    return ["import (\n" + "".join(f"\t{s}\n" for s in specs) + ")"]


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else line for line in text.split("\n"))


def _containers(target: Language, text: str) -> tuple[bytes, list[tree_sitter.Node]]:
    data = text.encode("utf-8")
    root = parse_text(target, text).root_node
    found = []
    for child in root.children:
        node = child
        while node.type in ("decorated_definition", "template_declaration", "export_statement") and node.named_children:
            node = node.named_children[-1]
        if node.type in TYPE_NODES and node.child_by_field_name("body") is not None:
            found.append(node)
    return data, found


def merge_class(target: Language, head: str, members: list[str]) -> str:
    """Put the translated methods of a split class back into the translated class head.

    A member translated as a whole class (the usual case: the prompt showed the method
    inside its class) gives its class body; a member translated as a bare method goes in
    as it is, indented. Members that are neither (e.g. Go methods, which live outside
    their struct) follow the class.
    """
    head_data, head_containers = _containers(target, head)
    holders = [c for c in head_containers if c.type in METHOD_HOLDERS]
    if not holders:
        return "\n\n".join([head.rstrip(), *(m.strip("\n") for m in members)])
    holder = holders[-1]
    body = holder.child_by_field_name("body")
    assert body is not None
    if target.indentation_blocks:
        insert_at = char_offset(head_data, body.end_byte)
        indent = " " * body.start_point[1]
    else:
        closer = body.children[-1]
        insert_at = char_offset(head_data, closer.start_byte)
        indent = "    "
    inner_parts: list[str] = []
    after: list[str] = []
    for member in members:
        data, containers = _containers(target, member)
        same = [c for c in containers if c.type == holder.type]
        if same:
            member_body = same[0].child_by_field_name("body")
            assert member_body is not None
            if target.indentation_blocks:
                start = data.rfind(b"\n", 0, member_body.start_byte) + 1
                inner = data[start : member_body.end_byte]
            else:
                inner = data[member_body.children[0].end_byte : member_body.children[-1].start_byte]
            inner_parts.append(inner.decode("utf-8", errors="replace").strip("\n"))
            outside = member[: char_offset(data, same[0].start_byte)] + member[char_offset(data, same[0].end_byte) :]
            if outside.strip().strip(";"):
                after.append(outside.strip())
        elif target.id != "go" and any(has_definition(i, 0) for i in code_items(parse_text(target, member).root_node)):
            stripped = member.strip("\n")
            inner_parts.append(stripped if stripped.startswith((" ", "\t")) else _indent(stripped, indent))
        else:
            after.append(member.strip("\n"))
    before = head[:insert_at].rstrip()
    rest = head[insert_at:]
    if target.indentation_blocks:
        merged = before + "\n\n" + "\n\n".join(inner_parts) + rest
    else:
        merged = before + "\n\n" + "\n\n".join(inner_parts) + "\n" + rest.lstrip(" \t")
    return "\n\n".join([merged.rstrip(), *after])


def _java_wrap(pieces: list[str], class_name: str) -> list[str]:
    """Java has no free functions or constants: wrap such pieces in a class."""
    target = get_language("java")
    types: list[str] = []
    members: list[str] = []
    for piece in pieces:
        items = code_items(parse_text(target, piece).root_node)
        if items and all(i.type in JAVA_TYPES for i in items):
            types.append(piece)
        else:
            members.append(piece)
    if not any(code_items(parse_text(target, m).root_node) for m in members):
        return pieces  # only comments (or nothing) outside classes: no wrapper needed
    wrapper = f"public class {class_name} {{\n" + "\n\n".join(_indent(m, "    ") for m in members) + "\n}"
    return [*types, wrapper]


def join_translations(target: Language, results: list[UnitResult], class_name: str = "Main") -> str:
    """One target file from the translated units, in the target's conventions."""
    packages: list[str] = []
    imports: list[str] = []
    pieces: list[str] = []
    index = 0
    while index < len(results):
        result = results[index]
        if not result.ok:
            pieces.append(result.text)
            index += 1
            continue
        pkgs, imps, rest = split_imports(target, result.text)
        packages.extend(p for p in pkgs if p not in packages)
        imports.extend(i for i in imps if i not in imports)
        container = result.unit.container if result.unit.kind == "head" else None
        if container is not None:
            members: list[str] = []
            index += 1
            while index < len(results) and results[index].unit.kind == "member" and results[index].unit.container == container:
                member = results[index]
                if member.ok:
                    pk, im, member_rest = split_imports(target, member.text)
                    packages.extend(p for p in pk if p not in packages)
                    imports.extend(i for i in im if i not in imports)
                    members.append(member_rest)
                else:
                    members.append(member.text)
                index += 1
            rest = merge_class(target, rest, members)
        else:
            index += 1
        if rest.strip():
            pieces.append(rest)
    if target.id == "go":
        imports = _go_import_block(imports)
        if not packages:
            packages = ["package main"]
    if target.id == "java":
        pieces = _java_wrap(pieces, class_name)
    header = "\n\n".join(x for x in ("\n".join(packages), "\n".join(imports)) if x)
    # PEP 8 puts two blank lines between top-level definitions; brace languages one.
    separator = "\n\n\n" if target.indentation_blocks else "\n\n"
    body = separator.join(p.strip("\n") for p in pieces)
    return "\n\n".join(x for x in (header, body) if x).rstrip() + "\n"


def signatures_of(target: Language, text: str) -> list[str]:
    """First lines of the definitions in a translated piece (what later units may call)."""
    data = text.encode("utf-8")
    tree = parse_text(target, text)
    found = []
    for _, node in definitions_in(tree, data, target):
        line = header_text(node, data).split("\n", 1)[0].rstrip(" {:")
        if line and line not in found:
            found.append(line)
    return found


__all__ = ["JAVA_TYPES", "METHOD_HOLDERS", "join_translations", "merge_class", "signatures_of", "split_imports"]
