"""Context extraction on real multi-file examples (tests/fixtures/context/<language>/).

Each example has one file with a ``@@CURSOR@@`` marker (removed before parsing) and
one or more other open files. The expectations below were written by hand from
reading the sources: what a programmer would want the model to see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codeglm.completion.context import SourceDocument, extract_context, offset_of
from codeglm.completion.definitions import extract_definitions
from codeglm.completion.edits import diff_bytes
from codeglm.completion.parse_cache import ContextCache
from codeglm.languages import get_language, language_for_path

FIXTURES = Path(__file__).parent / "fixtures" / "context"
MARKER = "@@CURSOR@@"


def load_example(language: str) -> tuple[SourceDocument, int, int, list[SourceDocument]]:
    files = sorted((FIXTURES / language).iterdir())
    main = next(f for f in files if MARKER in f.read_text())
    raw = main.read_text()
    offset = raw.index(MARKER)
    text = raw.replace(MARKER, "")
    line = text.count("\n", 0, offset)
    column = offset - (text.rfind("\n", 0, offset) + 1)
    others = [SourceDocument(f.name, language_for_path(f), f.read_text()) for f in files if f != main]
    return SourceDocument(main.name, language_for_path(main), text), line, column, others


# language -> (enclosing headers, imports, {definition name: file it comes from}, names that must not appear)
EXPECTED = {
    "python": (
        ("class Polygon:", "def projection_length(self, axis: Vector) -> float:"),
        ("from geometry import Vector, dot", "import math"),
        {"dot": "geometry.py", "length": "geometry.py", "Vector": "geometry.py"},
        {"scale", "__init__", "projection_length", "Polygon"},
    ),
    "java": (
        ("public class Transfer", "public boolean move(Account from, Account to, long cents)"),
        ("package bank;", "import java.util.List;", "import java.util.ArrayList;"),
        {"record": "Transfer.java", "getBalanceCents": "Account.java", "Account": "Account.java"},
        {"withdraw", "move", "Transfer"},
    ),
    "cpp": (
        ("class Solver", "double score(const Matrix& m)"),
        ('#include "matrix.hpp"', "#include <cmath>", "using namespace std;"),
        {"trace": "matrix.hpp", "Matrix": "matrix.hpp", "normalize": "solver.cpp"},
        {"score", "Solver"},
    ),
    "c": (
        ("int drain(Queue *q)",),
        ("#include <stdio.h>", '#include "queue.h"'),
        {"queue_pop": "queue.h", "Queue": "queue.h", "report": "main.c"},
        {"drain"},
    ),
    "javascript": (
        ("class Report", "render()", "return this.rows.map((row) =>"),
        ("import { padLeft, currency } from './format.js';",),
        {"currency": "format.js", "padLeft": "format.js"},
        {"total", "constructor", "render"},
    ),
    "typescript": (
        ("export class UserService", "greet(id: UserId): string"),
        ("import { User, UserId, displayName } from './models';",),
        {"User": "models.ts", "UserId": "models.ts", "displayName": "models.ts"},
        {"greet", "UserService"},
    ),
    "go": (
        ("func (c *Cart) Summary() string",),
        ("package store", 'import (\n\t"fmt"\n\t"strings"\n)'),
        {"Total": "store.go", "Item": "store.go", "Cart": "cart.go"},
        {"discount", "Summary"},
    ),
    "rust": (
        ("impl Inventory", "fn total_area(&self) -> f64"),
        ("use std::collections::HashMap;", "use shapes::{area, Circle};"),
        {"area": "shapes.rs", "Circle": "shapes.rs", "rounded": "main.rs", "Inventory": "main.rs"},
        {"total_area"},
    ),
}


@pytest.mark.parametrize("language", sorted(EXPECTED))
def test_multi_file_context(language: str) -> None:
    document, line, column, others = load_example(language)
    headers, imports, definitions, absent = EXPECTED[language]
    context = extract_context(document, line, column, others)
    assert context.enclosing_headers == headers
    assert context.imports == imports
    found = {s.name: s.path for s in context.definitions}
    assert found == definitions
    assert not absent & set(found)
    # The prefix/suffix split is exactly at the marker.
    assert context.prefix + context.suffix == document.text
    assert context.line_prefix.strip() == "" and context.line_suffix == ""


def test_definitions_from_other_files_show_their_code() -> None:
    document, line, column, others = load_example("python")
    context = extract_context(document, line, column, others)
    by_name = {s.name: s for s in context.definitions}
    assert by_name["dot"].text == (
        "def dot(a: Vector, b: Vector) -> float:\n    return a.x * b.x + a.y * b.y"
    )
    # A method comes dedented, whole (it is short).
    assert by_name["length"].text == "def length(self) -> float:\n    return math.hypot(self.x, self.y)"
    # The closest use ranks first.
    assert context.definitions[0].name in {"dot", "length"}


def test_long_definition_is_summarized_to_headers() -> None:
    py = get_language("python")
    methods = "\n".join(f"    def m{i}(self, x):\n        y = x + {i}\n        return y\n" for i in range(8))
    other = SourceDocument("big.py", py, f"class Big:\n{methods}")
    main = SourceDocument("main.py", py, "from big import Big\n\nb = Big()\nb.m1(2)\n")
    context = extract_context(main, 4, 0, [other])
    (big,) = [s for s in context.definitions if s.name == "Big"]
    assert big.text.startswith("class Big:\n    def m0(self, x):\n    def m1(self, x):")
    assert big.text.endswith("    ...")
    assert "return y" not in big.text


def test_code_that_does_not_parse_mid_typing() -> None:
    py = get_language("python")
    text = (
        "import os\n\n"
        "def helper(path):\n    return os.path.basename(path)\n\n"
        "class Loader:\n"
        "    def load(self, paths):\n"
        "        names = [helper(p for p in paths\n"  # unclosed bracket: the user is typing
        "        \n"
    )
    context = extract_context(SourceDocument("m.py", py, text), 8, 8)
    assert context.imports == ("import os",)
    assert context.enclosing_headers == ("class Loader:", "def load(self, paths):")
    assert [s.name for s in context.definitions] == ["helper"]


def test_brace_code_that_does_not_parse() -> None:
    java = get_language("java")
    text = (
        "import java.util.Map;\n"
        "class Cache {\n"
        "    int size() { return 0; }\n"
        "    void put(String k, int v) {\n"
        "        if (size() > 10 && \n"  # half an if
        "        \n"
    )
    context = extract_context(SourceDocument("Cache.java", java, text), 5, 8)
    assert context.imports == ("import java.util.Map;",)
    assert context.enclosing_headers == ("class Cache", "void put(String k, int v)")
    assert "size" in {s.name for s in context.definitions}


def test_offset_of_clamps_and_handles_crlf() -> None:
    text = "ab\r\ncde\r\n"
    assert offset_of(text, 0, 2) == 2
    assert offset_of(text, 0, 99) == 2  # before the \r
    assert offset_of(text, 1, 1) == 5
    with pytest.raises(ValueError, match="past the end"):
        offset_of(text, 5, 0)


def test_cache_reuses_and_reparses_incrementally() -> None:
    py = get_language("python")
    cache = ContextCache()
    text = "def f(x):\n    return x\n\n\ndef g(y):\n    return y\n"
    first = cache.tree("file:///m.py", py, text, version=1)
    again = cache.tree("file:///m.py", py, text, version=1)
    assert str(again.root_node) == str(first.root_node)
    assert (cache.full_parses, cache.hits) == (1, 1)

    edited = text.replace("return x", "return x + 1")
    second = cache.tree("file:///m.py", py, edited, version=2)
    assert cache.incremental_parses == 1
    fresh = py.parser().parse(edited.encode())
    assert str(second.root_node) == str(fresh.root_node)
    # The tree handed out first was not mutated by the edit.
    assert first.root_node.end_byte == len(text.encode())


def test_incremental_parse_after_many_random_edits_matches_full_parse() -> None:
    import random

    rng = random.Random(7)
    js = get_language("javascript")
    cache = ContextCache()
    text = (FIXTURES / "javascript" / "report.js").read_text().replace(MARKER, "")
    for version in range(1, 40):
        at = rng.randrange(len(text) + 1)
        end = min(len(text), at + rng.randrange(4))
        text = text[:at] + rng.choice(["", "x", "{", "}", "(a, b)", "\n", "é"]) + text[end:]
        tree = cache.tree("doc", js, text, version)
        assert str(tree.root_node) == str(js.parser().parse(text.encode()).root_node)
    assert cache.incremental_parses >= 35


def test_definitions_are_cached_per_version_and_kept_across_edits() -> None:
    py = get_language("python")
    cache = ContextCache()
    text = "def f(x):\n    return x\n\n\ndef g(y):\n    return y\n\n\nclass C:\n    def m(self):\n        return 1\n"
    first = cache.document("file:///m.py", py, text, version=1)
    again = cache.document("file:///m.py", py, text, version=1)
    assert again.definitions is first.definitions  # the same version is not searched again
    assert [d.name for d in first.definitions] == ["f", "g", "C", "m"]
    before = {d.name: d for d in first.definitions}

    edited = text.replace("return y", "return y * 2")
    second = cache.document("file:///m.py", py, edited, version=2)
    assert (cache.full_parses, cache.incremental_parses) == (1, 1)
    after = {d.name: d for d in second.definitions}
    assert after["f"] is before["f"]  # above the edit: kept as it was
    assert after["g"].text == "def g(y):\n    return y * 2"  # the edited one: found again
    assert after["C"].start_byte == before["C"].start_byte + len(" * 2")  # below: moved...
    assert after["C"].text is before["C"].text  # ... not extracted again
    assert cache.definitions_reused == 3
    fresh = extract_definitions(py.parser().parse(edited.encode()), edited.encode(), py)
    assert second.definitions == fresh


@pytest.mark.parametrize("language", ["python", "java", "cpp", "c", "javascript", "typescript", "go", "rust"])
def test_incremental_definitions_match_a_fresh_search(language: str) -> None:
    """Random edits (typing, deleting, unbalancing braces): the definitions kept and found
    again after each edit are exactly what a search of the whole new tree finds."""
    import random

    lang = get_language(language)
    rng = random.Random(language)
    cache = ContextCache()
    for path in sorted((FIXTURES / language).iterdir()):
        text = path.read_text().replace(MARKER, "")
        for version in range(1, 25):
            at = rng.randrange(len(text) + 1)
            end = min(len(text), at + rng.randrange(5))
            text = text[:at] + rng.choice(["", "x", "{", "}", "(a)", "\n", "é", ":", "int y;", "\ndef g():\n"]) + text[end:]
            got = cache.document(str(path), lang, text, version).definitions
            source = text.encode()
            assert got == extract_definitions(lang.parser().parse(source), source, lang), (path.name, version)
    assert cache.definitions_reused > 0


def test_documents_without_a_key_are_not_cached() -> None:
    py = get_language("python")
    cache = ContextCache()
    window = SourceDocument("a.py", py, "x = 1\n", version=3, cacheable=False)
    assert window.cache_key is None
    assert SourceDocument(None, py, "x = 1\n").cache_key is None
    for _ in range(2):
        cache.document(window.cache_key, py, window.text, window.version)
    assert (cache.full_parses, cache.hits) == (2, 0)
    cache.tree("a.py", py, "x = 1\n", version=3)
    assert (cache.full_parses, cache.hits) == (3, 0)  # the window left nothing under the path


def test_diff_bytes_across_chunks_matches_a_byte_by_byte_diff() -> None:
    import random

    rng = random.Random(3)
    for _ in range(30):
        old = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(20000)))
        at = rng.randrange(len(old) + 1)
        end = min(len(old), at + rng.randrange(9000))
        new = old[:at] + bytes(rng.choice(b"abc") for _ in range(rng.randrange(9000))) + old[end:]
        edit = diff_bytes(old, new)
        start = 0
        while start < min(len(old), len(new)) and old[start] == new[start]:
            start += 1
        assert edit.start_byte == start
        assert old[edit.old_end_byte :] == new[edit.new_end_byte :]
        assert len(old) - edit.old_end_byte == len(new) - edit.new_end_byte
        assert edit.old_end_byte >= start and edit.new_end_byte >= start
        # the common suffix is the longest one that does not overlap the prefix
        tail = len(old) - edit.old_end_byte
        assert tail == min(len(old), len(new)) - start or old[edit.old_end_byte - 1] != new[edit.new_end_byte - 1]


def test_diff_bytes_finds_the_single_edit() -> None:
    edit = diff_bytes(b"hello world", b"hello brave world")
    assert (edit.start_byte, edit.old_end_byte, edit.new_end_byte) == (6, 6, 12)
    edit = diff_bytes(b"aaa", b"aaa")
    assert edit.start_byte == edit.old_end_byte == edit.new_end_byte


def test_cache_evicts_least_recently_used() -> None:
    py = get_language("python")
    cache = ContextCache(max_documents=2)
    for key in ("a", "b", "c"):
        cache.tree(key, py, "x = 1\n")
    cache.tree("a", py, "x = 1\n")
    assert cache.full_parses == 4  # "a" was evicted and parsed again
