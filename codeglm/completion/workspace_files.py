"""Which files of a workspace are worth indexing: source files of the language table that
``.gitignore`` does not exclude, outside vendored and build directories, not minified and
not generated.

``.gitignore`` files are read the way git reads them: each applies to its own directory and
below (with ``pathspec``'s git matcher), a deeper one overriding a shallower one, plus the
repository's ``.git/info/exclude``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from codeglm.languages import language_for_path

# Directories never indexed, wherever they are: other people's code and build output.
SKIPPED_DIRECTORIES = frozenset(
    {
        ".git", ".hg", ".svn", "node_modules", "bower_components", "vendor", "third_party", "third-party",
        "site-packages", "dist-packages", "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", "build", "dist", "target", "out", ".next", ".gradle", ".idea",
        ".vscode-test", "testdata",
    }
)

# A comment line in a file's first bytes that marks it generated (Go's convention and others').
GENERATED_LINE = re.compile(
    rb"^[ \t]*(//|#|/\*|\*|--)[^\n]*(Code generated\b[^\n]*DO NOT EDIT|@generated|\bauto-?generated\b)",
    re.MULTILINE | re.IGNORECASE,
)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", ".pb.go", ".pb.cc", ".pb.h", ".min.js", ".bundle.js", ".d.ts")
HEAD_BYTES = 2048
# A line this long in a file's head means minified (or data, not code).
MINIFIED_LINE = 1000


@dataclass(frozen=True)
class FileLimits:
    """Bounds of an index: files at most, bytes per file at most."""

    max_files: int = 20_000
    max_file_bytes: int = 512 * 1024


DEFAULT_LIMITS = FileLimits()


def skip_reason(name: str, head: bytes) -> str | None:
    """Why a source file is not indexed (``head``: its first bytes), or None to index it."""
    if name.endswith(GENERATED_SUFFIXES):
        return "generated or minified (by name)"
    if GENERATED_LINE.search(head):
        return "generated (marked in its header)"
    if any(len(line) > MINIFIED_LINE for line in head.split(b"\n")[:-1]) or (
        len(head) >= HEAD_BYTES and b"\n" not in head
    ):
        return "minified (very long lines)"
    return None


class IgnoreRules:
    """The ``.gitignore`` rules in force under a workspace root, read as directories are visited."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        exclude = root / ".git" / "info" / "exclude"
        self._exclude = _read_spec(exclude) if exclude.is_file() else None

    def _spec(self, directory: str) -> pathspec.GitIgnoreSpec | None:
        if directory not in self._specs:
            path = self.root / directory / ".gitignore" if directory else self.root / ".gitignore"
            self._specs[directory] = _read_spec(path) if path.is_file() else None
        return self._specs[directory]

    def ignored(self, relative: str, is_dir: bool) -> bool:
        """Whether ``relative`` (a POSIX path under the root) is ignored by some ``.gitignore``.

        The deepest ``.gitignore`` with a rule about the path decides (git's precedence);
        each matches paths relative to its own directory.
        """
        parts = PurePosixPath(relative).parts
        decided: bool | None = None
        candidates = [("", self._exclude)] if self._exclude is not None else []
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            candidates.append((directory, self._spec(directory)))
        for directory, spec in candidates:
            if spec is None:
                continue
            inner = relative[len(directory) + 1 :] if directory else relative
            result = spec.check_file(inner + ("/" if is_dir else ""))
            if result.include is not None:
                decided = result.include
        return bool(decided)


def _read_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def is_source_file(relative: str) -> bool:
    """A file of a language in the table, judged by its name alone."""
    return language_for_path(relative) is not None and not relative.endswith(GENERATED_SUFFIXES)


def source_files(root: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[str]:
    """POSIX paths (relative to ``root``) of the files worth indexing, at most ``max_files``,
    in a stable order (directories sorted, shallow files first)."""
    rules = IgnoreRules(root)
    count = 0
    for directory, subdirectories, files in os.walk(root):
        relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        relative_dir = "" if relative_dir == "." else relative_dir
        kept = []
        for name in sorted(subdirectories):
            relative = f"{relative_dir}/{name}" if relative_dir else name
            if name in SKIPPED_DIRECTORIES or name.startswith(".") or rules.ignored(relative, True):
                continue
            if os.path.islink(os.path.join(directory, name)):
                continue  # a link may lead out of the workspace or round in a circle
            kept.append(name)
        subdirectories[:] = kept
        for name in sorted(files):
            relative = f"{relative_dir}/{name}" if relative_dir else name
            if not is_source_file(relative) or rules.ignored(relative, False):
                continue
            yield relative
            count += 1
            if count >= limits.max_files:
                return


def read_source(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> tuple[str | None, str | None]:
    """(text, None) for a file worth indexing, or (None, why not)."""
    try:
        if path.stat().st_size > limits.max_file_bytes:
            return None, f"larger than {limits.max_file_bytes} bytes"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    reason = skip_reason(path.name, data[:HEAD_BYTES])
    if reason is not None:
        return None, reason
    if b"\0" in data[:HEAD_BYTES]:
        return None, "binary"
    return data.decode("utf-8", errors="replace"), None


def find_workspace_root(path: Path) -> Path:
    """The enclosing git work tree's root (a ``.git`` directory or file), else the file's directory."""
    start = path.resolve()
    directory = start if start.is_dir() else start.parent
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


__all__ = [
    "DEFAULT_LIMITS",
    "FileLimits",
    "IgnoreRules",
    "SKIPPED_DIRECTORIES",
    "find_workspace_root",
    "is_source_file",
    "read_source",
    "skip_reason",
    "source_files",
]
