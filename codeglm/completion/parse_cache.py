"""Parse trees and definitions per document version, updated incrementally after an edit rather
than parsed anew."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import tree_sitter

from codeglm.completion.definitions import Definition, extract_definitions, update_definitions
from codeglm.completion.edits import byte_point, diff_bytes
from codeglm.languages import Language


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


__all__ = ["ContextCache", "ParsedDocument", "parse_text"]
