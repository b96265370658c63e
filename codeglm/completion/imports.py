"""Which workspace files a file's imports name, by each language's import rules.

Python modules and relative imports, Java packages (single-type and on-demand imports),
JavaScript/TypeScript relative imports (``import ... from './x'``, ``require('./x')``),
Go packages (directories), Rust ``use``/``mod`` paths, C/C++ ``#include "..."`` (and the
source file beside a header). Everything is resolved against a workspace index's paths;
imports of what is not in the workspace (the standard library, other packages) resolve to
nothing. Pure functions over the import statements' text and a ``PathLookup``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from codeglm.languages import Language

# Imports that match several files (``import utils``) keep the few closest to the importer.
MAX_FILES_PER_IMPORT = 2


class PathLookup(Protocol):
    """What resolution needs of an index (``WorkspaceIndex`` has these)."""

    root_name: str

    def file(self, relative: str) -> object | None: ...

    def files_in(self, directory: str) -> list[str]: ...

    def files_ending_with(self, suffix: str) -> list[str]: ...

    def directories_ending_with(self, suffix: str) -> list[str]: ...


def _closest(paths: Sequence[str], importer: str) -> list[str]:
    """The paths nearest ``importer`` (sharing the longest leading directories, then shortest)."""
    here = posixpath.dirname(importer).split("/")

    def key(path: str) -> tuple[int, int, str]:
        parts = posixpath.dirname(path).split("/")
        shared = 0
        for a, b in zip(here, parts, strict=False):
            if a != b:
                break
            shared += 1
        return (-shared, len(parts), path)

    return sorted(paths, key=key)[:MAX_FILES_PER_IMPORT]


def _existing(lookup: PathLookup, candidates: Sequence[str]) -> list[str]:
    return [c for c in dict.fromkeys(posixpath.normpath(c) for c in candidates) if lookup.file(c) is not None]


# --- Python -------------------------------------------------------------------------

_PY_FROM = re.compile(r"^\s*from\s+(\.*)([\w.]*)\s+import\s+(.+)$", re.S)
_PY_IMPORT = re.compile(r"^\s*import\s+(.+)$", re.S)


def _python_module(lookup: PathLookup, importer: str, level: int, module: str) -> list[str]:
    """Files of a Python module (``pkg/mod.py`` or ``pkg/mod/__init__.py``)."""
    parts = [p for p in module.split(".") if p]
    if level:
        base = posixpath.dirname(importer)
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        stem = posixpath.join(base, *parts) if parts else base
        return _existing(lookup, [f"{stem}.py", f"{stem}/__init__.py"] if parts else [f"{stem}/__init__.py"])
    if not parts:
        return []
    variants = [parts]
    if len(parts) > 1 and parts[0] == lookup.root_name:
        variants.append(parts[1:])  # the workspace is the package itself
    found: list[str] = []
    for variant in variants:
        stem = "/".join(variant)
        exact = _existing(lookup, [f"{stem}.py", f"{stem}/__init__.py"])
        found.extend(exact or _closest(lookup.files_ending_with(f"{stem}.py") + lookup.files_ending_with(
            f"{stem}/__init__.py"), importer))
    return found


def _python(lookup: PathLookup, importer: str, statement: str, source: str) -> list[str]:
    statement = statement.replace("\\\n", " ")
    found: list[str] = []
    match = _PY_FROM.match(statement)
    if match:
        level, module = len(match.group(1)), match.group(2)
        found.extend(_python_module(lookup, importer, level, module))
        names = re.findall(r"(\w+)(?:\s+as\s+\w+)?", match.group(3).strip("() \n"))
        for name in names:  # ``from pkg import mod``: the name may be a module
            found.extend(_python_module(lookup, importer, level, f"{module}.{name}" if module else name))
        return found
    match = _PY_IMPORT.match(statement)
    if match:
        for item in match.group(1).split(","):
            found.extend(_python_module(lookup, importer, 0, item.split(" as ")[0].strip()))
    return found


# --- Java ---------------------------------------------------------------------------

_JAVA_IMPORT = re.compile(r"^\s*import\s+(static\s+)?([\w.]+?)(\.\*)?\s*;")


def _java(lookup: PathLookup, importer: str, statement: str, source: str) -> list[str]:
    match = _JAVA_IMPORT.match(statement)
    if not match:
        return []
    parts = match.group(2).split(".")
    if match.group(3):  # import pkg.*;  (or a class's static members: pkg.Class.*)
        directories = lookup.directories_ending_with("/".join(parts))
        files = [f for d in directories[:MAX_FILES_PER_IMPORT] for f in lookup.files_in(d)]
        return files or _closest(lookup.files_ending_with("/".join(parts) + ".java"), importer)
    if match.group(1):  # import static pkg.Class.member;
        parts = parts[:-1]
    # The outermost class is the file: try pkg/Outer.java for pkg.Outer.Inner too.
    for end in range(len(parts), 0, -1):
        files = lookup.files_ending_with("/".join(parts[:end]) + ".java")
        if files:
            return _closest(files, importer)
    return []


# --- JavaScript / TypeScript --------------------------------------------------------

_JS_SPECIFIER = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)['"](\.{1,2}/[^'"]*)['"]""")
_JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts", ".d.ts")


def _javascript_specifiers(statements: Sequence[str], source: str) -> list[str]:
    # ``require`` calls are expressions, not import statements: read the whole source for them.
    return list(dict.fromkeys(_JS_SPECIFIER.findall("\n".join(statements) + "\n" + source)))


def _javascript(lookup: PathLookup, importer: str, specifier: str) -> list[str]:
    target = posixpath.join(posixpath.dirname(importer), specifier)
    stem = re.sub(r"\.(js|jsx|mjs|cjs)$", "", target)
    candidates = [target, *(stem + e for e in _JS_EXTENSIONS), *(f"{target}/index{e}" for e in _JS_EXTENSIONS)]
    found = _existing(lookup, candidates)
    return found[:1]


# --- Go -----------------------------------------------------------------------------


def _go(lookup: PathLookup, importer: str, statement: str, source: str) -> list[str]:
    found: list[str] = []
    for path in re.findall(r'"([^"]+)"', statement):
        parts = path.split("/")
        if parts[-1] == lookup.root_name:  # the workspace is the imported package itself
            found.extend(f for f in lookup.files_in("") if f.endswith(".go"))
            continue
        # The module path's leading components are not directories of the workspace:
        # the longest tail that names an indexed directory is the package.
        for start in range(len(parts)):
            directories = lookup.directories_ending_with("/".join(parts[start:]))
            if directories:
                for directory in _closest([f"{d}/x" for d in directories], importer)[:1]:
                    found.extend(f for f in lookup.files_in(posixpath.dirname(directory)) if f.endswith(".go"))
                break
    return found


# --- Rust ---------------------------------------------------------------------------

_RUST_MOD = re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", re.M)


def _expand_use(tree: str) -> list[list[str]]:
    """``a::{b, c::{d, e}}`` -> [[a, b], [a, c, d], [a, c, e]] (``as`` aliases dropped)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    brace = tree.find("{")
    if brace < 0:
        return [[p for p in tree.replace("*", "").split("::") if p]]
    head = [p for p in tree[:brace].split("::") if p]
    inner = tree[brace + 1 : tree.rfind("}")]
    items, depth, current = [], 0, ""
    for char in inner:
        if char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += char == "{"
        depth -= char == "}"
        current += char
    items.append(current)
    paths = []
    for item in items:
        if item:
            paths.extend([*head, *tail] for tail in _expand_use(item))
    return paths


def _rust_crate_root(lookup: PathLookup, importer: str) -> str:
    directory = posixpath.dirname(importer)
    while True:
        if lookup.file(posixpath.join(directory, "lib.rs")) or lookup.file(posixpath.join(directory, "main.rs")):
            return directory
        if not directory:
            return ""
        directory = posixpath.dirname(directory)


def _rust_module_dir(importer: str) -> str:
    directory, name = posixpath.split(importer)
    if name in ("mod.rs", "lib.rs", "main.rs"):
        return directory
    return posixpath.join(directory, name[: -len(".rs")])


def _rust_modules(lookup: PathLookup, base: str, segments: Sequence[str]) -> list[str]:
    """The deepest module files along ``segments`` from ``base`` (and the base's own file)."""
    found: list[str] = []
    for end in range(len(segments), 0, -1):
        stem = posixpath.join(base, *segments[:end])
        found = _existing(lookup, [f"{stem}.rs", f"{stem}/mod.rs"])
        if found:
            return found
    return _existing(lookup, [posixpath.join(base, "lib.rs"), posixpath.join(base, "main.rs"), f"{base}.rs",
                              posixpath.join(base, "mod.rs")])


def _rust(lookup: PathLookup, importer: str, statement: str, source: str) -> list[str]:
    match = re.match(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+(.+?);?\s*$", statement, re.S)
    if not match:
        return []
    found: list[str] = []
    module_dir = _rust_module_dir(importer)
    for path in _expand_use(match.group(1)):
        if not path:
            continue
        head, rest = path[0], path[1:]
        if head == "crate":
            base = _rust_crate_root(lookup, importer)
        elif head == "self":
            base = module_dir
        elif head == "super":
            base = posixpath.dirname(module_dir)
        else:
            # Another crate, or (Rust 2015) a module of this crate's root: found only if it is one.
            base, rest = _rust_crate_root(lookup, importer), path
            if not _existing(lookup, [posixpath.join(base, f"{head}.rs"), posixpath.join(base, head, "mod.rs")]):
                continue
        while rest and rest[0] == "super":
            base, rest = posixpath.dirname(base), rest[1:]
        found.extend(_rust_modules(lookup, base, rest))
    return found


def _rust_mods(lookup: PathLookup, importer: str, source: str) -> list[str]:
    module_dir = _rust_module_dir(importer)
    return [f for name in _RUST_MOD.findall(source) for f in _existing(
        lookup, [posixpath.join(module_dir, f"{name}.rs"), posixpath.join(module_dir, name, "mod.rs")])]


# --- C / C++ ------------------------------------------------------------------------

_SOURCE_BESIDE = (".c", ".cc", ".cpp", ".cxx")


def _include(lookup: PathLookup, importer: str, statement: str, source: str) -> list[str]:
    match = re.match(r'^\s*#\s*include\s*"([^"]+)"', statement)
    if not match:
        return []
    name = match.group(1)
    headers = _existing(lookup, [posixpath.join(posixpath.dirname(importer), name)]) or _closest(
        lookup.files_ending_with(name), importer)
    found = list(headers)
    for header in headers:  # the definitions usually live in the source file beside the header
        stem = posixpath.splitext(header)[0]
        found.extend(_existing(lookup, [stem + e for e in _SOURCE_BESIDE if stem + e != importer]))
    return found


_Resolver = Callable[[PathLookup, str, str, str], list[str]]
_BY_LANGUAGE: dict[str, _Resolver] = {
    "python": _python, "java": _java, "go": _go, "rust": _rust, "c": _include, "cpp": _include,
}


def imported_files(
    language: Language, lookup: PathLookup, importer: str, statements: Sequence[str], source: str
) -> list[str]:
    """Workspace files the importer (a path relative to the root) imports, in import order."""
    found: list[str] = []
    if language.id in ("javascript", "typescript"):
        for specifier in _javascript_specifiers(statements, source):
            found.extend(_javascript(lookup, importer, specifier))
    else:
        resolver = _BY_LANGUAGE.get(language.id)
        if resolver is not None:
            for statement in statements:
                found.extend(resolver(lookup, importer, statement, source))
        if language.id == "rust":
            found.extend(_rust_mods(lookup, importer, source))
    return [f for f in dict.fromkeys(found) if f != importer]


__all__ = ["MAX_FILES_PER_IMPORT", "PathLookup", "imported_files"]
