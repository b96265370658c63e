"""Context for a completion: what surrounds the cursor, found with tree-sitter.

For a document and a cursor this gathers the prefix and suffix, the headers of the
enclosing functions and classes, the file's imports, and the definitions of names used
near the cursor that live elsewhere in the file or in other open documents.

Parse trees and the definitions found in them are cached per document and version
(``ContextCache``): each request hands the cache the document's current text; it finds
the edited byte range against the text it parsed last, tells the old tree about the
edit with ``Tree.edit`` and lets tree-sitter re-parse only what changed. Definitions
away from the edit (and from the ranges whose structure changed) are kept, moved by the
edit's length; only those touching it are extracted again. Everything works on code
that does not parse: tree-sitter recovers around the error, and the queries still match
the parts that make sense.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import tree_sitter

from codeglm.completion.definitions import Definition, header_text, identifier_query, node_text
from codeglm.completion.parse_cache import ContextCache
from codeglm.completion.repo_context import WorkspaceContext, repo_snippets
from codeglm.languages import Language
from codeglm.syntax.nodes import body_of

# How many lines around the cursor count as "near" when collecting used names.
NEAR_LINES_BEFORE = 30


NEAR_LINES_AFTER = 5


MAX_DEFINITIONS = 16


@dataclass(frozen=True)
class SourceDocument:
    """A document as the editor has it (``path`` may be None for an unsaved buffer)."""

    path: str | None
    language: Language
    text: str
    version: int | None = None
    # What the parse-tree cache knows the document by (e.g. its URI); default: its path.
    key: str | None = None
    # False for text that is not the document itself (a window of it): never cached.
    cacheable: bool = True

    @property
    def cache_key(self) -> str | None:
        """The cache's key for this document; None (not cached) for an unnamed buffer."""
        if not self.cacheable:
            return None
        return self.key if self.key is not None else self.path


@dataclass(frozen=True)
class Snippet:
    """A piece of context for the prompt: a definition, an import block or a header.

    ``relevance`` orders snippets (higher is kept longer when the budget is tight).
    ``source`` says where a definition or region came from: "file" (this file), "import",
    "directory", "recent" (``repo_context``) or "open" (another open document); None for
    this file's imports and enclosing headers.
    """

    kind: str
    name: str
    path: str | None
    text: str
    relevance: float
    source: str | None = None


@dataclass(frozen=True)
class CompletionContext:
    """Everything the prompt builder and the post-processor need about one cursor."""

    language: Language
    path: str | None
    prefix: str
    suffix: str
    line_prefix: str
    line_suffix: str
    enclosing_headers: tuple[str, ...]
    imports: tuple[str, ...]
    definitions: tuple[Snippet, ...]
    line_ending: str = "\n"

    def snippets(self) -> tuple[Snippet, ...]:
        """All context snippets, most relevant first.

        Imports and enclosing headers matter only when the prefix has to be trimmed
        (otherwise they are in it and the prompt builder drops them as duplicates), so
        they rank above definitions: they are what trimming loses first.
        """
        scope = [
            Snippet("scope", header.split("\n", 1)[0], self.path, header, 3.0 - i * 0.01)
            for i, header in enumerate(self.enclosing_headers)
        ]
        imports = (
            [Snippet("imports", "imports", self.path, "\n".join(self.imports), 2.5)] if self.imports else []
        )
        ranked = sorted([*scope, *imports, *self.definitions], key=lambda s: -s.relevance)
        return tuple(ranked)


def offset_of(text: str, line: int, character: int) -> int:
    """The str index of an LSP-style (0-based) line and character, clamped to the line."""
    if line < 0 or character < 0:
        raise ValueError(f"position must be non-negative, got line {line}, character {character}")
    start = 0
    for _ in range(line):
        newline = text.find("\n", start)
        if newline < 0:
            raise ValueError(f"line {line} is past the end of the document ({text.count(chr(10)) + 1} lines)")
        start = newline + 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return min(start + character, end)


def enclosing_headers(tree: tree_sitter.Tree, source: bytes, cursor_byte: int, language: Language) -> tuple[str, ...]:
    """Headers of the functions/classes around the cursor, outermost first."""
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(cursor_byte, cursor_byte)
    # On an empty line the smallest node may end right before the cursor; walk up anyway.
    headers: list[str] = []
    while node is not None:
        if node.type in language.scope_types and node.start_byte < cursor_byte:
            body = body_of(node)
            if body is None or body.start_byte <= cursor_byte:
                headers.append(header_text(node, source))
        node = node.parent
    return tuple(reversed(headers))


_HEADER_KEYWORDS = re.compile(
    r"^(export\s+|pub(\(\w+\))?\s+|public\s+|private\s+|protected\s+|static\s+|async\s+|abstract\s+)*"
    r"(def|class|fn|func|function|impl|trait|interface|struct|enum|namespace|mod)\b"
)


_CONTROL = re.compile(r"^(\}\s*)?(if|else|for|while|switch|do|try|catch|finally|with|match|loop|return)\b")


def _enclosing_by_indentation(source: bytes, cursor_byte: int, language: Language) -> tuple[str, ...]:
    """Headers found by indentation, for a cursor inside code the parser could not place.

    Walking up from the cursor, each line indented less than everything seen so far that
    opens a block (ends in ``:`` / ``{``) and starts like a definition is an enclosing
    header. Used only when the tree offers fewer headers (the cursor sits in an ERROR).
    """
    text = source[:cursor_byte].decode("utf-8", errors="replace")
    lines = text.split("\n")
    current = lines[-1]
    width = len(current) - len(current.lstrip())
    headers: list[str] = []
    opener = ":" if language.indentation_blocks else "{"
    for line in reversed(lines[:-1][-400:]):
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent >= width:
            continue
        width = indent
        looks_like_function = "(" in stripped and not _CONTROL.match(stripped)
        if stripped.endswith(opener) and (_HEADER_KEYWORDS.match(stripped) or looks_like_function):
            header = stripped if language.indentation_blocks else stripped[:-1].rstrip()
            headers.append(header)
        if indent == 0:
            break
    return tuple(reversed(headers))


def _in_error(tree: tree_sitter.Tree, cursor_byte: int) -> bool:
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(cursor_byte, cursor_byte)
    while node is not None:
        if node.type == "ERROR":
            return True
        node = node.parent
    return False


def imports_of(tree: tree_sitter.Tree, source: bytes, language: Language) -> tuple[str, ...]:
    """The file's top-level imports/includes, in order."""
    return tuple(
        node_text(source, child.start_byte, child.end_byte).rstrip()
        for child in tree.root_node.children
        if child.type in language.import_types
    )


def names_near(
    tree: tree_sitter.Tree, source: bytes, cursor_byte: int, language: Language
) -> dict[str, int]:
    """Identifiers used near the cursor -> distance in lines from the cursor (smallest)."""
    cursor_row = source.count(b"\n", 0, cursor_byte)
    first_row = max(0, cursor_row - NEAR_LINES_BEFORE)
    last_row = cursor_row + NEAR_LINES_AFTER
    query_cursor = tree_sitter.QueryCursor(identifier_query(language))
    query_cursor.set_point_range((first_row, 0), (last_row + 1, 0))
    distances: dict[str, int] = {}
    for node in query_cursor.captures(tree.root_node).get("id", []):
        if node.end_byte == cursor_byte:
            continue  # the word being typed is not a "use" yet
        parent = node.parent
        if parent is not None and parent.type.endswith(_DEFINING) and parent.child_by_field_name("name") == node:
            continue  # a name being defined (function, parameter, variable) is not a use
        name = node_text(source, node.start_byte, node.end_byte)
        distance = abs(node.start_point[0] - cursor_row)
        if distance < distances.get(name, 1 << 30):
            distances[name] = distance
    return distances


# Parents whose "name" child defines rather than uses the name (calls also have a "name" field).
_DEFINING = ("_definition", "_declaration", "_declarator", "_item", "_parameter", "_spec", "_signature")


def _rank_definitions(
    used: dict[str, int],
    documents: Sequence[tuple[SourceDocument, tuple[Definition, ...], bool]],
    cursor_byte: int,
) -> tuple[Snippet, ...]:
    snippets: list[Snippet] = []
    for document, definitions, is_current in documents:
        found = [d for d in definitions if d.name in used]
        for definition in found:
            if is_current and definition.start_byte <= cursor_byte <= definition.end_byte:
                continue  # the definition being written is the enclosing scope, not context
            if any(
                other is not definition and other.name == definition.name
                and other.start_byte <= definition.start_byte and definition.end_byte <= other.end_byte
                for other in found
            ):
                continue  # Java's constructor inside its class: the class says it
            # Closer uses matter more; definitions the prefix does not show (other files,
            # or below the cursor) matter more than ones already above it.
            relevance = 1.0 / (1.0 + used[definition.name])
            if not is_current or definition.start_byte > cursor_byte:
                relevance += 0.5
            source = "file" if is_current else "open"
            snippets.append(Snippet("definition", definition.name, document.path, definition.text, relevance, source))
    snippets.sort(key=lambda s: -s.relevance)
    return tuple(snippets[:MAX_DEFINITIONS])


def _workspace_path(workspace: WorkspaceContext, path: str | None) -> str | None:
    return workspace.index.relative(os.path.abspath(path)) if path is not None else None


def _with_workspace(
    workspace: WorkspaceContext,
    document: SourceDocument,
    text: str,
    imports: tuple[str, ...],
    used: dict[str, int],
    own: tuple[Definition, ...],
    definitions: tuple[Snippet, ...],
) -> tuple[Snippet, ...]:
    """The workspace's snippets, then this file's and the open documents' definitions that
    they do not already show."""
    importer = _workspace_path(workspace, document.path)
    found = repo_snippets(workspace, document.language, importer, imports, text, used, {d.name for d in own})
    shown = {(s.path, s.name) for s in found}
    repo = [Snippet("region" if s.source == "recent" else "definition", s.name, s.path, s.text, s.relevance, s.source)
            for s in found]
    rest = [s for s in definitions if (_workspace_path(workspace, s.path), s.name) not in shown]
    return (*repo, *rest)


def extract_context(
    document: SourceDocument,
    line: int,
    character: int,
    open_documents: Sequence[SourceDocument] = (),
    cache: ContextCache | None = None,
    workspace: WorkspaceContext | None = None,
) -> CompletionContext:
    """The completion context at (line, character) of ``document`` (0-based, str indices).

    With a ``workspace``, definitions from files that are not open (imported, in the same
    directory) and recently edited regions come first (``repo_context``)."""
    cache = cache if cache is not None else ContextCache()
    text = document.text
    offset = offset_of(text, line, character)
    line_ending = "\r\n" if "\r\n" in text else "\n"
    prefix, suffix = text[:offset], text[offset:]
    line_prefix = prefix[prefix.rfind("\n") + 1 :]
    line_end = suffix.find("\n")
    line_suffix = (suffix if line_end < 0 else suffix[:line_end]).rstrip("\r")

    language = document.language
    source = text.encode("utf-8")
    cursor_byte = len(prefix.encode("utf-8"))
    parsed = cache.document(document.cache_key, language, text, document.version)
    tree = parsed.tree

    headers = enclosing_headers(tree, source, cursor_byte, language)
    if _in_error(tree, cursor_byte) or not headers:
        by_indentation = _enclosing_by_indentation(source, cursor_byte, language)
        if len(by_indentation) > len(headers):
            headers = by_indentation
    documents: list[tuple[SourceDocument, tuple[Definition, ...], bool]] = [(document, parsed.definitions, True)]
    for other in open_documents:
        if other.path is not None and other.path == document.path:
            continue
        other_parsed = cache.document(other.cache_key, other.language, other.text, other.version)
        documents.append((other, other_parsed.definitions, False))
    used = names_near(tree, source, cursor_byte, language)
    imports = imports_of(tree, source, language)
    definitions = _rank_definitions(used, documents, cursor_byte)
    if workspace is not None:
        definitions = _with_workspace(workspace, document, text, imports, used, parsed.definitions, definitions)
    return CompletionContext(
        language=language,
        path=document.path,
        prefix=prefix,
        suffix=suffix,
        line_prefix=line_prefix.rstrip("\r"),
        line_suffix=line_suffix,
        enclosing_headers=headers,
        imports=imports,
        definitions=definitions,
        line_ending=line_ending,
    )


__all__ = ["CompletionContext", "MAX_DEFINITIONS", "NEAR_LINES_AFTER", "NEAR_LINES_BEFORE", "Snippet", "SourceDocument", "enclosing_headers", "extract_context", "imports_of", "names_near", "offset_of"]
