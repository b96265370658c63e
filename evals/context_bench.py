"""``codeglm eval context``: does the prompt hold the definition the cursor is about to call?

A benchmark of repository context that needs no good model. Cases come from real
multi-file code on this machine: packages of the Python standard library, the Go
standard library's sources and the Rust crates Debian ships. A case is a call site
``name(`` in one file of a project where ``name`` is defined in another file of the same
project (and not in the cursor's file); the cursor stands right after the ``(`` with the
rest of that line removed, as while typing, and only the cursor's file is open. The
project is indexed once (warm) and the cursor's file parsed as it was before the call was
typed (as the editor had it open); each case then builds the context (an incremental parse
of the edit) and the prompt within the token budget. A case counts as recalled when the signature (the header's first line)
of one of ``name``'s definitions is in the prompt.

Reports ``cases``, ``recall``, ``recall_by_language``, ``prompt_tokens_p50``,
``build_ms_p50`` and ``build_ms_p95`` (context extraction plus prompt building, counted
with the CodeGeeX tokenizer; wall time, and ``build_cpu_ms_*`` the thread's CPU time, which
other processes on the cores do not inflate), and the index size and time of each project.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tree_sitter

from codeglm.completion.context import SourceDocument, extract_context
from codeglm.completion.parse_cache import ContextCache
from codeglm.completion.prompts import build_prompt
from codeglm.completion.repo_context import WorkspaceContext
from codeglm.completion.workspace_index import WorkspaceIndex
from codeglm.languages import Language, get_language, language_for_path
from codeglm.model.tokenizer import load_tokenizer

MAX_NEW_TOKENS = 64
# Names defined in more files than this are too ambiguous to ask for one definition.
MAX_DEFINING_FILES = 3
PER_FILE = 2

# Call sites: the called name and the argument list (the cursor goes right after its "(").
CALL_QUERIES = {
    "python": """(call function: [(identifier) @name (attribute attribute: (identifier) @name)]
                       arguments: (argument_list) @args)""",
    "go": """(call_expression function: [(identifier) @name (selector_expression field: (field_identifier) @name)]
                              arguments: (argument_list) @args)""",
    "rust": """(call_expression function: [(identifier) @name (scoped_identifier name: (identifier) @name)
                                         (field_expression field: (field_identifier) @name)]
                                arguments: (arguments) @args)""",
}

# Calls of these go to the language itself, whatever a project happens to define by that name.
_PY_BUILTIN_TYPES = (list, dict, str, bytes, set, int, float, tuple, bytearray, object, memoryview)
BUILTINS = {
    "python": frozenset(dir(builtins)).union(*(dir(t) for t in _PY_BUILTIN_TYPES)),
    "go": frozenset({"append", "cap", "clear", "close", "complex", "copy", "delete", "imag", "len", "make", "max",
                     "min", "new", "panic", "print", "println", "real", "recover", "int", "int8", "int16", "int32",
                     "int64", "uint", "uint8", "uint16", "uint32", "uint64", "uintptr", "float32", "float64",
                     "string", "byte", "rune", "bool", "error", "any", "complex64", "complex128"}),
    # The prelude, and methods of the standard traits and collections.
    "rust": frozenset({"Some", "Ok", "Err", "Box", "Vec", "String", "drop", "Default", "From", "Into", "new",
                       "clone", "map", "into_iter", "iter", "iter_mut", "push", "pop", "clear", "len", "is_empty",
                       "add", "sub", "mul", "div", "neg", "not", "fmt", "eq", "ne", "cmp", "partial_cmp", "hash",
                       "from", "into", "try_from", "try_into", "as_ref", "as_mut", "deref", "deref_mut",
                       "next", "default", "to_string", "to_owned", "borrow", "index", "fill", "extend", "insert",
                       "remove", "get", "get_mut", "contains", "write", "read", "flush", "parse", "unwrap", "expect",
                       "and_then", "ok_or", "unwrap_or", "filter", "collect", "fold", "zip", "rev", "take", "skip"}),
}
# A call on an object (``x.name(``) names one definition only when one file defines it.
MEMBER_CALL_PARENTS = frozenset({"attribute", "selector_expression", "field_expression"})

PYTHON_PACKAGES = (
    "asyncio", "email", "json", "concurrent", "importlib", "logging", "multiprocessing", "http", "urllib", "xml",
    "unittest", "sqlite3", "tomllib", "xmlrpc", "dbm", "wsgiref", "html", "zoneinfo", "ctypes", "curses",
    "collections", "encodings", "sysconfig", "re", "pathlib",
)
GO_PACKAGES = (
    "go", "net/http", "encoding", "crypto/tls", "text/template", "html/template", "image", "compress", "archive",
    "database/sql", "regexp", "math/big", "strconv", "strings", "bufio", "bytes", "os/exec", "debug/elf", "mime",
)


@dataclass(frozen=True)
class Project:
    language: str
    root: Path


@dataclass(frozen=True)
class Case:
    language: str
    project: Path
    path: Path
    original: str  # the file as it is on disk (open in the editor before the call was typed)
    text: str  # the file with the call typed: the cursor's line ends at "name("
    line: int
    character: int
    name: str
    signatures: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    case: Case
    recalled: bool
    prompt_tokens: int
    build_ms: float  # wall time
    build_cpu_ms: float  # this thread's CPU time: what the work costs when others share the cores


def default_projects(python_root: Path, go_root: Path, cargo_root: Path) -> list[Project]:
    projects = [Project("python", python_root / name) for name in PYTHON_PACKAGES if (python_root / name).is_dir()]
    projects += [Project("go", go_root / name) for name in GO_PACKAGES if (go_root / name).is_dir()]
    if cargo_root.is_dir():
        projects += [Project("rust", crate) for crate in sorted(cargo_root.iterdir()) if (crate / "src").is_dir()]
    return projects


@cache
def _call_query(language: Language) -> tree_sitter.Query:
    return tree_sitter.Query(language.ts_language(), CALL_QUERIES[language.id])


def _stable_order(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def _is_cursor_file(relative: str, language: str) -> bool:
    if language == "go":
        return not relative.endswith("_test.go")
    if language == "rust":
        return relative.startswith("src/")
    return "/test" not in f"/{relative}"


def cases_of(project: Project, index: WorkspaceIndex, limit: int) -> list[Case]:
    """Up to ``limit`` call sites of the project whose callee is defined in another of its files."""
    language = get_language(project.language)
    found: list[Case] = []
    parser = language.parser()
    for relative in sorted(index.files(), key=lambda p: _stable_order(str(project.root / p))):
        if language_for_path(relative) is not language or not _is_cursor_file(relative, project.language):
            continue
        text = (project.root / relative).read_text(encoding="utf-8", errors="replace")
        source = text.encode("utf-8")
        indexed = index.file(relative)
        defined_here = {s.name for s in indexed.symbols} if indexed is not None else set()
        cursor = tree_sitter.QueryCursor(_call_query(language))
        taken = 0
        seen_names: set[str] = set()
        for _, captures in cursor.matches(parser.parse(source).root_node):
            name_node, args = captures["name"][0], captures["args"][0]
            name = source[name_node.start_byte : name_node.end_byte].decode("utf-8", errors="replace")
            if name in defined_here or name in seen_names or name.startswith("__") or name in BUILTINS[language.id]:
                continue
            definitions = [(p, s) for p, s in index.symbols_named(name) if p != relative]
            files = len({p for p, _ in definitions})
            member = name_node.parent is not None and name_node.parent.type in MEMBER_CALL_PARENTS
            if not definitions or files > (1 if member else MAX_DEFINING_FILES):
                continue
            seen_names.add(name)
            cursor_byte = args.start_byte + 1
            line_start = source.rfind(b"\n", 0, cursor_byte) + 1
            line_end = source.find(b"\n", cursor_byte)
            typed = source[:cursor_byte] + (source[line_end:] if line_end >= 0 else b"")
            found.append(
                Case(
                    language=project.language,
                    project=project.root,
                    path=project.root / relative,
                    original=text,
                    text=typed.decode("utf-8", errors="replace"),
                    line=source.count(b"\n", 0, cursor_byte),
                    character=len(source[line_start:cursor_byte].decode("utf-8", errors="replace")),
                    name=name,
                    signatures=tuple(sorted({s.signature for _, s in definitions})),
                )
            )
            taken += 1
            if taken >= PER_FILE:
                break
        if len(found) >= limit:
            break
    return found[:limit]


def run_case(case: Case, index: WorkspaceIndex, count_tokens, budget: int) -> Outcome:
    language = get_language(case.language)
    # Warm as in the editor: the file was parsed when opened, the typed call is an edit.
    cache = ContextCache()
    cache.document(str(case.path), language, case.original, 1)
    document = SourceDocument(str(case.path), language, case.text, version=2)
    started, started_cpu = time.perf_counter(), time.thread_time()
    context = extract_context(document, case.line, case.character, (), cache, WorkspaceContext(index))
    prompt = build_prompt(context, count_tokens, budget + MAX_NEW_TOKENS, MAX_NEW_TOKENS)
    build_ms = (time.perf_counter() - started) * 1000.0
    build_cpu_ms = (time.thread_time() - started_cpu) * 1000.0
    recalled = any(signature in prompt.text for signature in case.signatures)
    return Outcome(case, recalled, prompt.tokens, build_ms, build_cpu_ms)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else 0.0


def evaluate(projects: list[Project], per_language: int, budget: int, progress: bool = False) -> dict[str, object]:
    count_tokens = load_tokenizer().count_tokens
    outcomes: list[Outcome] = []
    indexes: list[dict[str, object]] = []
    by_language: dict[str, list[Project]] = {}
    for project in projects:
        by_language.setdefault(project.language, []).append(project)
    for language, group in by_language.items():
        per_project = max(1, -(-per_language // len(group)))
        wanted = per_language
        for project in group:
            if wanted <= 0:
                break
            index = WorkspaceIndex(project.root)
            stats = index.build()
            indexes.append({"language": language, "project": str(project.root), "files": stats.files,
                            "symbols": stats.symbols, "seconds": round(stats.build_seconds, 3)})
            cases = cases_of(project, index, min(per_project, wanted))
            wanted -= len(cases)
            for case in cases:
                outcomes.append(run_case(case, index, count_tokens, budget))
            if progress:
                print(f"context: {project.root}: {len(cases)} cases, {stats.files} files indexed", file=sys.stderr)
    return summarize(outcomes, indexes, budget)


def summarize(outcomes: list[Outcome], indexes: list[dict[str, object]], budget: int) -> dict[str, object]:
    recall_by_language = {}
    for language in sorted({o.case.language for o in outcomes}):
        mine = [o for o in outcomes if o.case.language == language]
        recall_by_language[language] = round(sum(o.recalled for o in mine) / len(mine), 4)
    return {
        "cases": len(outcomes),
        "budget_tokens": budget,
        "recall": round(sum(o.recalled for o in outcomes) / len(outcomes), 4) if outcomes else 0.0,
        "recall_by_language": recall_by_language,
        "cases_by_language": {lang: sum(o.case.language == lang for o in outcomes) for lang in recall_by_language},
        "prompt_tokens_p50": statistics.median(o.prompt_tokens for o in outcomes) if outcomes else 0,
        "build_ms_p50": round(_percentile([o.build_ms for o in outcomes], 0.5), 2),
        "build_ms_p95": round(_percentile([o.build_ms for o in outcomes], 0.95), 2),
        "build_cpu_ms_p50": round(_percentile([o.build_cpu_ms for o in outcomes], 0.5), 2),
        "build_cpu_ms_p95": round(_percentile([o.build_cpu_ms for o in outcomes], 0.95), 2),
        "load_average": round(os.getloadavg()[0], 2),
        "indexes": indexes,
        "missed": [
            {"path": str(o.case.path), "line": o.case.line, "name": o.case.name} for o in outcomes if not o.recalled
        ][:50],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--budget", type=int, default=1024, help="the prompt's token budget (default: 1024)")
    parser.add_argument("--per-language", type=int, default=100, help="cases per language at most (default: 100)")
    parser.add_argument("--python-root", type=Path, default=Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}",
                        help="a Python standard library (default: this interpreter's)")
    parser.add_argument("--go-root", type=Path, default=Path("/usr/lib/go/src"), help="Go's sources")
    parser.add_argument("--cargo-root", type=Path, default=Path("/usr/share/cargo/registry"),
                        help="a directory of Rust crates")
    parser.add_argument("--progress", action="store_true", help="a line per project on stderr")


def run(args: argparse.Namespace) -> int:
    projects = default_projects(args.python_root, args.go_root, args.cargo_root)
    if not projects:
        print("codeglm eval context: no projects found (see --python-root, --go-root, --cargo-root)", file=sys.stderr)
        return 1
    report = evaluate(projects, args.per_language, args.budget, args.progress)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"cases {report['cases']}  recall {report['recall']}  by language {report['recall_by_language']}")
        print(f"prompt tokens p50 {report['prompt_tokens_p50']}  build ms p50 {report['build_ms_p50']} "
              f"p95 {report['build_ms_p95']}")
    return 0


__all__ = ["Case", "Outcome", "Project", "add_arguments", "cases_of", "evaluate", "run", "run_case", "summarize"]
