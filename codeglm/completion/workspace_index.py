"""The workspace index: the definitions of every source file of a workspace, open or not.

Built by walking the workspace (``workspace_files``: ``.gitignore``, vendored, minified and
generated files left out), parsing each file with tree-sitter and keeping its symbols
(``symbols.Symbol``: signature plus docstring or comment), bounded in files and in the
characters of symbol text it holds. Kept fresh incrementally: ``update`` re-reads one path
(changed, created or deleted on disk), ``set_text`` takes an editor's unsaved text, and
``refresh`` re-reads only files whose size or modification time changed.

Lookups (by name, by directory, by path suffix) are dictionary reads, so choosing context
at a keystroke does no file I/O. The index is safe to use from several threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import tree_sitter

from codeglm.completion.symbols import Symbol, file_symbols
from codeglm.completion.workspace_files import (
    DEFAULT_LIMITS,
    SKIPPED_DIRECTORIES,
    FileLimits,
    IgnoreRules,
    is_source_file,
    read_source,
    source_files,
)
from codeglm.languages import get_language, language_for_path

# Path suffixes of up to this many components are looked up directly (``a/b/c.py``).
SUFFIX_COMPONENTS = 4
# About 11 bytes of memory per character of symbol text (measured on the Python standard library).
DEFAULT_MAX_SYMBOL_CHARS = 16 * 1024 * 1024

Progress = Callable[[int, int], None]  # (files done, files found)


@dataclass(frozen=True)
class IndexedFile:
    path: str  # POSIX, relative to the workspace root
    language_id: str
    mtime_ns: int
    size: int
    symbols: tuple[Symbol, ...]

    @property
    def chars(self) -> int:
        return sum(len(s.text) for s in self.symbols)


@dataclass
class IndexStats:
    files: int = 0
    symbols: int = 0
    symbol_chars: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    full: bool = False  # a bound was reached: some files are not in the index
    build_seconds: float = 0.0


class WorkspaceIndex:
    """Symbols of a workspace's source files. ``build()`` fills it; the rest keeps it fresh."""

    def __init__(
        self,
        root: str | Path,
        limits: FileLimits = DEFAULT_LIMITS,
        max_symbol_chars: int = DEFAULT_MAX_SYMBOL_CHARS,
    ) -> None:
        self.root = Path(root).resolve()
        self.limits = limits
        self.max_symbol_chars = max_symbol_chars
        self._files: dict[str, IndexedFile] = {}
        self._by_name: dict[str, set[str]] = {}
        self._by_dir: dict[str, set[str]] = {}
        self._by_suffix: dict[str, set[str]] = {}
        self._lock = threading.RLock()
        self._parsers: dict[str, tree_sitter.Parser] = {}
        self._rules = IgnoreRules(self.root)
        self.stats = IndexStats()
        self.ready = threading.Event()

    # --- building and keeping fresh -----------------------------------------------

    def build(self, progress: Progress | None = None, cancelled: Callable[[], bool] = lambda: False) -> IndexStats:
        """Index every source file of the workspace (files already indexed and unchanged are kept)."""
        started = time.perf_counter()
        self._rules = IgnoreRules(self.root)
        paths = list(source_files(self.root, self.limits))
        self.stats.full = len(paths) >= self.limits.max_files
        seen = set(paths)
        with self._lock:
            for gone in [p for p in self._files if p not in seen]:
                self._remove(gone)
        for done, relative in enumerate(paths, 1):
            if cancelled():
                break
            self._refresh_file(relative)
            if progress is not None and (done % 50 == 0 or done == len(paths)):
                progress(done, len(paths))
        self.stats.build_seconds = time.perf_counter() - started
        self.ready.set()
        return self.stats

    def refresh(self) -> IndexStats:
        """Re-read what changed on disk since the last look (new, changed and deleted files)."""
        return self.build()

    def update(self, path: str | Path) -> None:
        """A file changed, appeared or disappeared on disk: index it again (or drop it)."""
        relative = self.relative(path)
        if relative is None:
            return
        if PurePosixPath(relative).name == ".gitignore":
            self._rules = IgnoreRules(self.root)
            self.build()  # what is ignored changed: walk again (unchanged files are kept)
            return
        if not (self.root / relative).is_file():
            with self._lock:
                self._remove(relative)
            return
        if is_source_file(relative) and not self._excluded(relative):
            self._refresh_file(relative, force=True)

    def set_text(self, path: str | Path, text: str) -> None:
        """An editor holds ``text`` for ``path`` (unsaved changes count as the file's content)."""
        relative = self.relative(path)
        language = language_for_path(relative) if relative is not None else None
        if relative is None or language is None or self._excluded(relative):
            return
        symbols = self._symbols(language.id, text)
        with self._lock:
            old = self._files.get(relative)
            self._put(IndexedFile(relative, language.id, old.mtime_ns if old else 0, old.size if old else 0, symbols))

    def _excluded(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        if any(part in SKIPPED_DIRECTORIES or part.startswith(".") for part in parts[:-1]):
            return True
        return any(self._rules.ignored("/".join(parts[: i + 1]), i < len(parts) - 1) for i in range(len(parts)))

    def _refresh_file(self, relative: str, force: bool = False) -> None:
        absolute = self.root / relative
        try:
            stat = absolute.stat()
        except OSError:
            with self._lock:
                self._remove(relative)
            return
        with self._lock:
            old = self._files.get(relative)
        if not force and old is not None and old.mtime_ns == stat.st_mtime_ns and old.size == stat.st_size:
            return
        language = language_for_path(relative)
        if language is None:
            return
        text, reason = read_source(absolute, self.limits)
        if text is None:
            with self._lock:
                self._remove(relative)
                self.stats.skipped[reason or "?"] = self.stats.skipped.get(reason or "?", 0) + 1
            return
        symbols = self._symbols(language.id, text)
        with self._lock:
            if old is None and self.stats.symbol_chars + sum(len(s.text) for s in symbols) > self.max_symbol_chars:
                self.stats.full = True
                return
            self._put(IndexedFile(relative, language.id, stat.st_mtime_ns, stat.st_size, symbols))

    def _symbols(self, language_id: str, text: str) -> tuple[Symbol, ...]:
        language = get_language(language_id)
        source = text.encode("utf-8")
        # One parser per thread and language: tree-sitter parsers are not thread-safe.
        key = f"{threading.get_ident()}:{language_id}"
        parser = self._parsers.get(key)
        if parser is None:
            parser = self._parsers[key] = language.parser()
        tree = parser.parse(source)
        return file_symbols(tree, source, language)

    def _put(self, indexed: IndexedFile) -> None:
        self._remove(indexed.path)
        self._files[indexed.path] = indexed
        for symbol in indexed.symbols:
            self._by_name.setdefault(symbol.name, set()).add(indexed.path)
        self._by_dir.setdefault(_directory(indexed.path), set()).add(indexed.path)
        for suffix in _suffixes(indexed.path):
            self._by_suffix.setdefault(suffix, set()).add(indexed.path)
        self.stats.files = len(self._files)
        self.stats.symbols += len(indexed.symbols)
        self.stats.symbol_chars += indexed.chars

    def _remove(self, relative: str) -> None:
        old = self._files.pop(relative, None)
        if old is None:
            return
        for symbol in old.symbols:
            holders = self._by_name.get(symbol.name)
            if holders is not None:
                holders.discard(relative)
                if not holders:
                    del self._by_name[symbol.name]
        _discard(self._by_dir, _directory(relative), relative)
        for suffix in _suffixes(relative):
            _discard(self._by_suffix, suffix, relative)
        self.stats.files = len(self._files)
        self.stats.symbols -= len(old.symbols)
        self.stats.symbol_chars -= old.chars

    # --- lookups --------------------------------------------------------------------

    @property
    def root_name(self) -> str:
        return self.root.name

    def relative(self, path: str | Path) -> str | None:
        """``path`` relative to the root (POSIX), or None when it lies outside the workspace.
        A relative ``path`` is taken as relative to the root already."""
        absolute = Path(path)
        if not absolute.is_absolute():
            return PurePosixPath(str(path).replace(os.sep, "/")).as_posix()
        text, root = str(absolute), str(self.root)
        if text.startswith(root + os.sep) and ".." not in absolute.parts:
            return text[len(root) + 1 :].replace(os.sep, "/")  # the common case, without touching the disk
        try:
            return absolute.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def file(self, relative: str) -> IndexedFile | None:
        with self._lock:
            return self._files.get(relative)

    def files(self) -> list[str]:
        with self._lock:
            return sorted(self._files)

    def files_in(self, directory: str) -> list[str]:
        with self._lock:
            return sorted(self._by_dir.get(directory, ()))

    def files_ending_with(self, suffix: str) -> list[str]:
        """Indexed files whose path ends with ``suffix`` (whole components, e.g. ``pkg/mod.py``)."""
        suffix = suffix.strip("/")
        with self._lock:
            if suffix.count("/") < SUFFIX_COMPONENTS:
                return sorted(self._by_suffix.get(suffix, ()))
            tail = "/".join(suffix.split("/")[-SUFFIX_COMPONENTS:])
            return sorted(p for p in self._by_suffix.get(tail, ()) if p == suffix or p.endswith("/" + suffix))

    def directories_ending_with(self, suffix: str) -> list[str]:
        """Directories holding indexed files whose path ends with ``suffix`` (``net/url``)."""
        suffix = suffix.strip("/")
        with self._lock:
            return sorted(d for d in self._by_dir if d == suffix or d.endswith("/" + suffix))

    def symbols_named(self, name: str, paths: Iterable[str] | None = None) -> list[tuple[str, Symbol]]:
        """(path, symbol) for every definition of ``name`` (only in ``paths`` if given)."""
        with self._lock:
            holders = self._by_name.get(name, set())
            chosen = sorted(holders if paths is None else holders.intersection(paths))
            return [(p, s) for p in chosen for s in self._files[p].symbols if s.name == name]


def _directory(relative: str) -> str:
    parent = PurePosixPath(relative).parent.as_posix()
    return "" if parent == "." else parent


def _suffixes(relative: str) -> list[str]:
    parts = PurePosixPath(relative).parts
    return ["/".join(parts[-n:]) for n in range(1, min(len(parts), SUFFIX_COMPONENTS) + 1)]


def _discard(table: dict[str, set[str]], key: str, value: str) -> None:
    values = table.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del table[key]


__all__ = ["IndexStats", "IndexedFile", "WorkspaceIndex"]
