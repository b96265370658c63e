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

import re
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import tree_sitter

from codeglm.languages import Language
from codeglm.syntax.nodes import body_of, line_start


@dataclass(frozen=True)
class ByteEdit:
    """The single contiguous change turning ``old`` into ``new`` (bytes)."""

    start_byte: int
    old_end_byte: int
    new_end_byte: int


# Bytes compared per slice when looking for the edit (slices compare in C; bytes one by one do not).
_DIFF_CHUNK = 4096


def diff_bytes(old: bytes, new: bytes) -> ByteEdit:
    """The smallest single edit (common prefix and suffix kept) from ``old`` to ``new``."""
    limit = min(len(old), len(new))
    start = 0
    while start + _DIFF_CHUNK <= limit and old[start : start + _DIFF_CHUNK] == new[start : start + _DIFF_CHUNK]:
        start += _DIFF_CHUNK
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while (
        end_old - _DIFF_CHUNK >= start
        and end_new - _DIFF_CHUNK >= start
        and old[end_old - _DIFF_CHUNK : end_old] == new[end_new - _DIFF_CHUNK : end_new]
    ):
        end_old -= _DIFF_CHUNK
        end_new -= _DIFF_CHUNK
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    return ByteEdit(start, end_old, end_new)


def byte_point(source: bytes, offset: int) -> tuple[int, int]:
    """(row, column in bytes) of a byte offset, as tree-sitter counts points."""
    row = source.count(b"\n", 0, offset)
    line_start = source.rfind(b"\n", 0, offset) + 1
    return row, offset - line_start


@dataclass(frozen=True)
class Definition:
    """A definition in a document: its name, byte range and the text a prompt shows for it."""

    name: str
    start_byte: int
    end_byte: int
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    """One version of a document: its bytes, parse tree and definitions."""

    source: bytes
    tree: tree_sitter.Tree
    definitions: tuple[Definition, ...]


@dataclass
class _Entry:
    language_id: str
    version: int | None
    source: bytes
    tree: tree_sitter.Tree
    definitions: tuple[Definition, ...]


class ContextCache:
    """Parse trees and definitions keyed by document (URI or path), least recently used
    dropped first.

    Callers get their own (cheap, shared-structure) copy of a tree: trees are not safe to
    use from two threads at once, and the server may serve requests on several. The
    definitions of a version are one shared (immutable) tuple.

    ``hits``, ``incremental_parses`` and ``full_parses`` count what happened, so tests
    and logs can see that edits really reuse the previous tree; ``definitions_reused``
    and ``definitions_extracted`` count definitions kept across an edit and found anew.
    """

    def __init__(self, max_documents: int = 64) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._parsers: dict[str, tree_sitter.Parser] = {}
        self._lock = threading.Lock()
        self.max_documents = max_documents
        self.hits = 0
        self.incremental_parses = 0
        self.full_parses = 0
        self.definitions_reused = 0
        self.definitions_extracted = 0

    def tree(self, key: str | None, language: Language, text: str, version: int | None = None) -> tree_sitter.Tree:
        """The parse tree of ``text``; reuses or incrementally updates the cached one."""
        return self.document(key, language, text, version).tree

    def document(
        self, key: str | None, language: Language, text: str, version: int | None = None
    ) -> ParsedDocument:
        """``text`` parsed, with its definitions: the cached version when the text is the
        same, else the cached one updated by the edit between them (when ``version`` is
        not older), else parsed afresh. ``key`` None: parsed, not cached."""
        source = text.encode("utf-8")
        with self._lock:
            parser = self._parsers.get(language.id)
            if parser is None:
                parser = self._parsers[language.id] = language.parser()
            entry = self._entries.get(key) if key is not None else None
            if entry is not None and entry.language_id == language.id:
                self._entries.move_to_end(key)
                if entry.source == source:
                    self.hits += 1
                    entry.version = version
                    return ParsedDocument(source, entry.tree.copy(), entry.definitions)
                if version is None or entry.version is None or version > entry.version:
                    entry = self._reparse(parser, language, entry, source, version)
                    self.incremental_parses += 1
                    self._entries[key] = entry
                    return ParsedDocument(source, entry.tree.copy(), entry.definitions)
            tree = parser.parse(source)
            self.full_parses += 1
            definitions = extract_definitions(tree, source, language)
            self.definitions_extracted += len(definitions)
            if key is not None:
                self._entries[key] = _Entry(language.id, version, source, tree, definitions)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_documents:
                    self._entries.popitem(last=False)
            return ParsedDocument(source, tree.copy(), definitions)

    def forget(self, key: str) -> None:
        """Drop a closed document."""
        with self._lock:
            self._entries.pop(key, None)

    def _reparse(
        self, parser: tree_sitter.Parser, language: Language, entry: _Entry, source: bytes, version: int | None
    ) -> _Entry:
        edit = diff_bytes(entry.source, source)
        # Edit a copy: a tree handed out earlier may still be read by another request.
        old_tree = entry.tree.copy()
        old_tree.edit(
            start_byte=edit.start_byte,
            old_end_byte=edit.old_end_byte,
            new_end_byte=edit.new_end_byte,
            start_point=byte_point(entry.source, edit.start_byte),
            old_end_point=byte_point(entry.source, edit.old_end_byte),
            new_end_point=byte_point(source, edit.new_end_byte),
        )
        tree = parser.parse(source, old_tree)
        changed = old_tree.changed_ranges(tree)
        definitions, reused = update_definitions(entry.definitions, edit, changed, tree, source, language)
        self.definitions_reused += reused
        self.definitions_extracted += len(definitions) - reused
        return _Entry(language.id, version, source, tree, definitions)


def parse_text(language: Language, text: str) -> tree_sitter.Tree:
    """A one-off parse (no caching)."""
    return language.parser().parse(text.encode("utf-8"))


# How many lines around the cursor count as "near" when collecting used names.
NEAR_LINES_BEFORE = 30
NEAR_LINES_AFTER = 5
# A definition this short is shown whole; a longer one as its header (and member headers).
SHORT_DEFINITION_LINES = 12
MAX_HEADER_LINES = 6
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
    """

    kind: str
    name: str
    path: str | None
    text: str
    relevance: float


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


@cache
def _definition_query(language: Language) -> tree_sitter.Query:
    return tree_sitter.Query(language.ts_language(), language.definition_query)


@cache
def _identifier_query(language: Language) -> tree_sitter.Query:
    alternatives = " ".join(f"({t})" for t in sorted(language.identifier_types))
    return tree_sitter.Query(language.ts_language(), f"[{alternatives}] @id")


def _node_text(source: bytes, start: int, end: int) -> str:
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
    text = textwrap.dedent(_node_text(source, start, end)).rstrip()
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
        full = textwrap.dedent(_node_text(source, start, node.end_byte)).rstrip()
        if full.count("\n") < SHORT_DEFINITION_LINES:
            return full
    header = header_text(node, source)
    body = body_of(node)
    members: list[str] = []
    if body is not None:
        for child in body.named_children:
            if child.type in language.scope_types or child.type in ("field_declaration", "function_signature_item"):
                member = header_text(child, source) if child.type in language.scope_types else (
                    _node_text(source, child.start_byte, child.end_byte).split("\n", 1)[0]
                )
                members.append(textwrap.indent(member, "    "))
    opener = "" if language.indentation_blocks else " {"
    closer = "" if language.indentation_blocks else "\n}"
    inner = "\n".join([*members, "    ..."])
    return f"{header}{opener}\n{inner}{closer}"


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
        _node_text(source, child.start_byte, child.end_byte).rstrip()
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
    query_cursor = tree_sitter.QueryCursor(_identifier_query(language))
    query_cursor.set_point_range((first_row, 0), (last_row + 1, 0))
    distances: dict[str, int] = {}
    for node in query_cursor.captures(tree.root_node).get("id", []):
        if node.end_byte == cursor_byte:
            continue  # the word being typed is not a "use" yet
        parent = node.parent
        if parent is not None and parent.type.endswith(_DEFINING) and parent.child_by_field_name("name") == node:
            continue  # a name being defined (function, parameter, variable) is not a use
        name = _node_text(source, node.start_byte, node.end_byte)
        distance = abs(node.start_point[0] - cursor_row)
        if distance < distances.get(name, 1 << 30):
            distances[name] = distance
    return distances


# Parents whose "name" child defines rather than uses the name (calls also have a "name" field).
_DEFINING = ("_definition", "_declaration", "_declarator", "_item", "_parameter", "_spec", "_signature")


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
        found.append((_node_text(source, names[0].start_byte, names[0].end_byte), node))
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
            snippets.append(Snippet("definition", definition.name, document.path, definition.text, relevance))
    snippets.sort(key=lambda s: -s.relevance)
    return tuple(snippets[:MAX_DEFINITIONS])


def extract_context(
    document: SourceDocument,
    line: int,
    character: int,
    open_documents: Sequence[SourceDocument] = (),
    cache: ContextCache | None = None,
) -> CompletionContext:
    """The completion context at (line, character) of ``document`` (0-based, str indices)."""
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
    return CompletionContext(
        language=language,
        path=document.path,
        prefix=prefix,
        suffix=suffix,
        line_prefix=line_prefix.rstrip("\r"),
        line_suffix=line_suffix,
        enclosing_headers=headers,
        imports=imports_of(tree, source, language),
        definitions=_rank_definitions(used, documents, cursor_byte),
        line_ending=line_ending,
    )
