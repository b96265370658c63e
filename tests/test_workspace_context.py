"""Repository context: small multi-file projects per language, made here.

For each: the definition the cursor calls, in a file that is not open, is in the prompt
(reached through the language's import rules, or the same directory); a definition nobody
uses is not; the prompt stays within its budget; a file changed or deleted on disk is
reflected once the index hears of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codeglm.completion.context import SourceDocument, extract_context, imports_of
from codeglm.completion.imports import imported_files
from codeglm.completion.prompts import build_prompt
from codeglm.completion.recent_edits import RecentEdits
from codeglm.completion.repo_context import WorkspaceContext
from codeglm.completion.workspace_files import FileLimits, find_workspace_root, skip_reason, source_files
from codeglm.completion.workspace_index import WorkspaceIndex
from codeglm.languages import language_for_path
from codeglm.model.tokenizer import load_tokenizer

CURSOR = "@@"


@pytest.fixture(scope="module")
def count_tokens():
    return load_tokenizer().count_tokens


def make_project(root: Path, files: dict[str, str]) -> tuple[Path, int, int, str]:
    """Write ``files``; return the file holding the cursor marker, its line, column and text."""
    main = None
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if CURSOR in text:
            offset = text.index(CURSOR)
            text = text.replace(CURSOR, "")
            main = (path, text.count("\n", 0, offset), offset - (text.rfind("\n", 0, offset) + 1), text)
        path.write_text(text)
    assert main is not None
    return main


def context_at(root: Path, files: dict[str, str], index: WorkspaceIndex | None = None, recent=()):
    """The context at the marker; the files are written (and indexed) only without an ``index``."""
    if index is None:
        path, line, column, text = make_project(root, files)
        index = WorkspaceIndex(root)
        index.build()
    else:
        path, line, column, text = make_project(root / "_scratch", {k: v for k, v in files.items() if CURSOR in v})
        path = root / path.relative_to(root / "_scratch")
    document = SourceDocument(str(path), language_for_path(path), text)
    return extract_context(document, line, column, workspace=WorkspaceContext(index, tuple(recent))), index


# language -> (files, the signature that must be in the prompt and its source, one that must not)
PROJECTS: dict[str, tuple[dict[str, str], str, str, str]] = {
    "python": (
        {
            "app/orders.py": 'class Order:\n    pass\n\n\ndef parse_order(raw: str, strict: bool) -> Order:\n'
                             '    """Parse one order line."""\n    return Order()\n\n\n'
                             'def unrelated_orders(x):\n    return x\n',
            "lib/elsewhere.py": "def parse_order(nothing):\n    return None\n",
            "app/main.py": "from app.orders import parse_order\n\n\ndef run(line):\n    return parse_order(@@\n",
        },
        "def parse_order(raw: str, strict: bool) -> Order:", "import", "unrelated_orders",
    ),
    "python-relative": (
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/models.py": "def make_model(size: int, name: str = 'm'):\n    return (size, name)\n",
            "pkg/sub/use.py": "from ..models import make_model\n\nmodel = make_model(@@\n",
        },
        "def make_model(size: int, name: str = 'm'):", "import", "def run(",
    ),
    "python-directory": (
        {
            "tools/helpers.py": "def shared_helper(path, *, verbose=False):\n    return path\n\n\n"
                                "def other_helper():\n    pass\n",
            "tools/cli.py": "import sys\n\n\ndef main():\n    shared_helper(@@\n",
        },
        "def shared_helper(path, *, verbose=False):", "directory", "other_helper",
    ),
    "java": (
        {
            "src/com/shop/model/Account.java": "package com.shop.model;\n\npublic class Account {\n"
                                               "    /** Cents held. */\n    public long balance() { return 0; }\n}\n",
            "src/com/shop/model/Unused.java": "package com.shop.model;\n\npublic class Unused {\n}\n",
            "src/com/shop/app/Main.java": "package com.shop.app;\n\nimport com.shop.model.Account;\n\n"
                                          "public class Main {\n    void run(Account a) {\n        long b = a.balance(@@\n"
                                          "    }\n}\n",
        },
        "public long balance() { ... }", "import", "class Unused",
    ),
    "javascript": (
        {
            "web/lib/format.js": "// Pads a number to width.\nexport function padNumber(n, width) {\n"
                                 "  return String(n).padStart(width, '0');\n}\n\nexport function unusedThing() {}\n",
            "web/app.js": "import { padNumber } from './lib/format';\n\nconst label = padNumber(@@\n",
        },
        "export function padNumber(n, width)", "import", "unusedThing",
    ),
    "typescript": (
        {
            "src/geometry.ts": "export interface Point { x: number; y: number }\n\n"
                               "export function distance(a: Point, b: Point): number {\n  return 0;\n}\n",
            "src/main.ts": "const util = require('./geometry');\nimport { distance } from './geometry';\n\n"
                           "const d = distance(@@\n",
        },
        "export function distance(a: Point, b: Point): number", "import", "interface Nothing",
    ),
    "go": (
        {
            "go.mod": "module example.com/shop\n",
            "pricing/tax.go": "package pricing\n\n// TaxFor returns the tax in cents.\n"
                              "func TaxFor(cents int64, region string) int64 {\n\treturn 0\n}\n\n"
                              "func unusedRate() int { return 0 }\n",
            "cmd/main.go": 'package main\n\nimport "example.com/shop/pricing"\n\n'
                           "func main() {\n\t_ = pricing.TaxFor(@@\n}\n",
        },
        "func TaxFor(cents int64, region string) int64", "import", "unusedRate",
    ),
    "rust": (
        {
            "Cargo.toml": "[package]\nname = \"shop\"\n",
            "src/lib.rs": "pub mod money;\npub mod report;\n",
            "src/money.rs": "/// Cents to a display string.\npub fn format_cents(cents: i64, symbol: &str) -> String {\n"
                            "    String::new()\n}\n\npub fn unused_money() {}\n",
            "src/report.rs": "use crate::money::format_cents;\n\npub fn total() -> String {\n"
                             "    format_cents(@@\n}\n",
        },
        "pub fn format_cents(cents: i64, symbol: &str) -> String", "import", "unused_money",
    ),
    "c": (
        {
            "include/queue.h": "typedef struct Queue Queue;\nint queue_push(Queue *q, int value);\n",
            "include/queue.c": "#include \"queue.h\"\n\n/* Appends value; returns 0 on success. */\n"
                               "int queue_push(Queue *q, int value) {\n    return 0;\n}\n\n"
                               "int queue_unused(void) { return 1; }\n",
            "main.c": "#include <stdio.h>\n#include \"include/queue.h\"\n\nint main(void) {\n"
                      "    Queue *q = 0;\n    queue_push(@@\n}\n",
        },
        "int queue_push(Queue *q, int value) { ... }", "import", "queue_unused",
    ),
    "cpp": (
        {
            "geo/vec.hpp": "#pragma once\nstruct Vec {\n    double x, y;\n};\n"
                           "double dot_product(const Vec& a, const Vec& b);\n",
            "geo/vec.cpp": "#include \"vec.hpp\"\n\ndouble dot_product(const Vec& a, const Vec& b) {\n"
                           "    return a.x * b.x + a.y * b.y;\n}\n",
            "main.cpp": "#include \"geo/vec.hpp\"\n\nint main() {\n    Vec a{1, 2};\n    double d = dot_product(@@\n}\n",
        },
        "double dot_product(const Vec& a, const Vec& b)", "import", "int unrelated",
    ),
}


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_definition_from_an_unopened_file_is_in_the_prompt(name, tmp_path, count_tokens) -> None:
    files, wanted, source, unwanted = PROJECTS[name]
    context, _ = context_at(tmp_path, files)
    prompt = build_prompt(context, count_tokens, context_length=1024 + 64, max_new_tokens=64)
    assert wanted in prompt.text
    assert unwanted not in prompt.text
    shown = [s for s in prompt.snippets if wanted.split("(")[0].split()[-1] in s.text]
    assert shown and shown[0].source == source
    if name == "java":  # the comment above a definition comes with it
        assert "// /** Cents held. */\n// public long balance() { ... }" in prompt.text
    assert f"Compare this snippet from {shown[0].path}:" in prompt.text
    assert not Path(shown[0].path).is_absolute()  # labelled relative to the workspace
    assert prompt.tokens <= prompt.budget


def test_import_comes_before_the_same_name_elsewhere(tmp_path, count_tokens) -> None:
    files, wanted, _, _ = PROJECTS["python"]
    context, _ = context_at(tmp_path, files)
    definitions = [s for s in context.snippets() if s.name == "parse_order"]
    # lib/elsewhere.py's parse_order is neither imported nor in the directory: not chosen.
    assert [(s.source, s.path) for s in definitions] == [("import", "app/orders.py")]


def test_order_import_directory_recent_open(tmp_path) -> None:
    files = {
        "p/imported.py": "def from_import(a):\n    return a\n",
        "p/sibling.py": "def from_directory(b):\n    return b\n",
        "p/main.py": "from p.imported import from_import\n\nfrom_import(1)\nfrom_directory(2)\nopen_one(@@\n",
    }
    path, line, column, text = make_project(tmp_path, files)
    index = WorkspaceIndex(tmp_path)
    index.build()
    recent = RecentEdits()
    recent.record("q/edited.py", "x = 1\ndef touched():\n    pass\n", 1, 1)
    other = SourceDocument(str(tmp_path / "o.py"), language_for_path("o.py"), "def open_one(c):\n    return c\n")
    context = extract_context(
        SourceDocument(str(path), language_for_path(path), text), line, column, [other],
        workspace=WorkspaceContext(index, recent.regions()),
    )
    sources = [s.source for s in context.snippets() if s.source not in (None, "file")]
    assert sources == ["import", "directory", "recent", "open"]


def test_the_budget_holds_with_a_long_prefix(tmp_path, count_tokens) -> None:
    body = "".join(f"    value_{i} = compute({i})\n" for i in range(400))
    files = {
        "m/defs.py": "def compute(seed: int, *, scale: float = 1.0) -> float:\n    return seed * scale\n",
        "m/main.py": f"from m.defs import compute\n\n\ndef main():\n{body}    total = compute(@@\n",
    }
    context, _ = context_at(tmp_path, files)
    for budget in (256, 512, 1024):
        prompt = build_prompt(context, count_tokens, context_length=budget + 64, max_new_tokens=64)
        assert prompt.tokens <= budget
        # The prefix is trimmed, the definition kept (snippets keep up to half the budget).
        assert "def compute(seed: int, *, scale: float = 1.0) -> float:" in prompt.text
        assert prompt.prefix_start > 0 and prompt.text.endswith("    total = compute(")


def test_a_file_changed_or_deleted_on_disk_is_reflected(tmp_path, count_tokens) -> None:
    files, wanted, _, _ = PROJECTS["python-directory"]
    context, index = context_at(tmp_path, files)
    assert any(wanted in s.text for s in context.snippets())
    helpers = tmp_path / "tools" / "helpers.py"
    helpers.write_text("def shared_helper(path, mode: str, retries: int = 3):\n    return path\n")
    index.update(helpers)
    context, _ = context_at(tmp_path, files, index)
    texts = "\n".join(s.text for s in context.snippets())
    assert "def shared_helper(path, mode: str, retries: int = 3):" in texts and wanted not in texts
    helpers.unlink()
    index.update(helpers)
    context, _ = context_at(tmp_path, files, index)
    assert not any("shared_helper" in s.text for s in context.snippets() if s.source == "directory")
    assert index.file("tools/helpers.py") is None and index.symbols_named("shared_helper") == []
    # A rebuild (refresh) finds what appeared meanwhile without being told.
    (tmp_path / "tools" / "extra.py").write_text("def shared_helper(again):\n    pass\n")
    index.refresh()
    assert [p for p, _ in index.symbols_named("shared_helper")] == ["tools/extra.py"]


def test_unsaved_editor_text_counts(tmp_path) -> None:
    files, _, _, _ = PROJECTS["python-directory"]
    _, index = context_at(tmp_path, files)
    index.set_text(tmp_path / "tools" / "helpers.py", "def shared_helper(typed_now):\n    pass\n")
    assert [s.signature for _, s in index.symbols_named("shared_helper")] == ["def shared_helper(typed_now):"]


def test_gitignore_vendored_generated_and_minified_are_skipped(tmp_path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("secret/\n*.local.py\n!keep.local.py\n")
    files = {
        "src/app.py": "def app(): pass\n",
        "src/keep.local.py": "def kept(): pass\n",
        "src/drop.local.py": "def dropped(): pass\n",
        "src/deep/.gitignore": "inner.py\n",
        "src/deep/inner.py": "def inner(): pass\n",
        "src/deep/outer.py": "def outer(): pass\n",
        "secret/s.py": "def s(): pass\n",
        "node_modules/lib/index.js": "function lib() {}\n",
        "vendor/x/y.go": "package y\n",
        "gen/api_pb2.py": "X = 1\n",
        "gen/marked.go": "// Code generated by stringer; DO NOT EDIT.\npackage gen\n",
        "web/app.min.js": "function a(){}\n",
        "web/long.js": "var a=" + "1+" * 800 + "1;\nfunction f() {}\n",
        "README.md": "# hi\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    listed = list(source_files(tmp_path))
    assert listed == ["gen/marked.go", "src/app.py", "src/keep.local.py", "src/deep/outer.py", "web/long.js"]
    index = WorkspaceIndex(tmp_path)
    index.build()
    assert index.files() == ["src/app.py", "src/deep/outer.py", "src/keep.local.py"]
    assert index.stats.skipped == {"generated (marked in its header)": 1, "minified (very long lines)": 1}
    assert find_workspace_root(tmp_path / "src" / "deep" / "outer.py") == tmp_path.resolve()
    assert skip_reason("x.py", b"# @generated\n") is not None and skip_reason("x.py", b"def f(): pass\n") is None
    # A .gitignore written later is followed once the index hears of it.
    (tmp_path / "src" / ".gitignore").write_text("app.py\n")
    index.update(tmp_path / "src" / ".gitignore")
    assert "src/app.py" not in index.files()


def test_the_index_is_bounded(tmp_path) -> None:
    for i in range(30):
        (tmp_path / f"m{i:02}.py").write_text(f"def f{i}(a):\n    return a\n")
    small = WorkspaceIndex(tmp_path, FileLimits(max_files=10))
    stats = small.build()
    assert stats.files == 10 and stats.full
    tight = WorkspaceIndex(tmp_path, max_symbol_chars=100)
    stats = tight.build()
    assert stats.symbol_chars <= 100 and stats.full and 0 < stats.files < 30
    (tmp_path / "big.py").write_text("x = 1\n" * 200_000)
    capped = WorkspaceIndex(tmp_path, FileLimits(max_file_bytes=64 * 1024))
    capped.build()
    assert capped.file("big.py") is None and "larger than 65536 bytes" in capped.stats.skipped


def test_outside_the_workspace_only_recent_and_open_count(tmp_path) -> None:
    files = {"ws/a.py": "def helper(x):\n    return x\n", "elsewhere/b.py": "helper(@@\n"}
    path, line, column, text = make_project(tmp_path, files)
    index = WorkspaceIndex(tmp_path / "ws")
    index.build()
    context = extract_context(SourceDocument(str(path), language_for_path(path), text), line, column,
                              workspace=WorkspaceContext(index))
    assert not [s for s in context.snippets() if s.source in ("import", "directory")]


def test_import_rules(tmp_path) -> None:
    files = {
        "image/image.go": "package image\n",
        "image/jpeg/scan.go": 'package jpeg\n\nimport (\n\t"fmt"\n\t"image"\n\t"image/color"\n)\n',
        "image/color/color.go": "package color\n",
        "crate/src/lib.rs": "mod float;\n",
        "crate/src/float/mod.rs": "pub trait Float {}\n",
        "crate/src/float/mul.rs": "use float::Float;\nuse super::{helpers::{a, b as c}, Float as F};\nuse std::fmt;\n",
        "crate/src/float/helpers.rs": "pub fn a() {}\n",
        "py/pkg/__init__.py": "",
        "py/pkg/a/__init__.py": "",
        "py/pkg/a/b.py": "from . import c\nfrom .. import top\nimport pkg.a.d as dd\n",
        "py/pkg/a/c.py": "", "py/pkg/a/d.py": "", "py/pkg/top.py": "",
        "java/src/org/x/util/Strings.java": "package org.x.util;\n", "java/src/org/x/util/Lists.java": "",
        "java/src/org/x/Main.java": "import org.x.util.*;\nimport static org.x.util.Strings.join;\n",
        "web/src/a.ts": "import b from './b';\nconst c = require('../lib/c.js');\nimport x from 'react';\n",
        "web/src/b.tsx": "", "web/lib/c.js": "",
        "c/src/main.c": '#include "util.h"\n#include <stdio.h>\n', "c/include/util.h": "", "c/include/util.c": "",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)

    def resolve(root: str, importer: str) -> list[str]:
        index = WorkspaceIndex(tmp_path / root)
        index.build()
        language = language_for_path(importer)
        source = (tmp_path / root / importer).read_text()
        tree = language.parser().parse(source.encode())
        return imported_files(language, index, importer, imports_of(tree, source.encode(), language), source)

    assert resolve("image", "jpeg/scan.go") == ["image.go", "color/color.go"]  # the workspace is package image
    assert resolve("crate", "src/float/mul.rs") == ["src/float/mod.rs", "src/float/helpers.rs"]  # 2015 paths too
    assert resolve("py", "pkg/a/b.py") == ["pkg/a/__init__.py", "pkg/a/c.py", "pkg/__init__.py", "pkg/top.py",
                                           "pkg/a/d.py"]
    assert resolve("java", "src/org/x/Main.java") == ["src/org/x/util/Lists.java", "src/org/x/util/Strings.java"]
    assert resolve("web", "src/a.ts") == ["src/b.tsx", "lib/c.js"]
    assert resolve("c", "src/main.c") == ["include/util.h", "include/util.c"]
