"""The translation pipeline's pure parts: prompts, validation, trimming, failure marking,
joining in the target's conventions, output names, and the retry schedule.

The pipeline with a real model is in test_translate_pipeline.py; the CLI in
test_translate_cli.py.
"""

from __future__ import annotations

import pytest

from codeglm.completion.parse_cache import parse_text
from codeglm.languages import TRANSLATION_LANGUAGES, get_language
from codeglm.translation.join import join_translations, signatures_of
from codeglm.translation.naming import output_name
from codeglm.translation.pipeline import failure_comment, resolve_pair
from codeglm.translation.prompts import sampling_for_attempt, stop_strings, translation_prompt
from codeglm.translation.types import TranslationError, TranslationRequest, UnitResult
from codeglm.translation.units import Unit
from codeglm.translation.validation import check_translation, make_finished, trim_translation


def _unit(kind: str, name: str, container: str | None = None, text: str = "x") -> Unit:
    return Unit(kind, name, text, 0, 0, container)


def _ok(index: int, kind: str, name: str, text: str, container: str | None = None) -> UnitResult:
    return UnitResult(index, _unit(kind, name, container), text, True, 1)


def test_prompt_is_the_codegeex_translation_format() -> None:
    prompt = translation_prompt("Python", "def f(x):\n    return x", "C++", "int f(int x){\n")
    assert prompt == "code translation\nPython:\ndef f(x):\n    return x\nC++:\nint f(int x){\n"
    assert stop_strings(get_language("python"), get_language("cpp")) == (
        "\ncode translation",
        "\nPython:\n",
        "\nC++:\n",
    )


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("FooBar.java", "python", "foo_bar.py"),
        ("foo_bar.py", "java", "FooBar.java"),
        ("FooBar.java", "go", "foo_bar.go"),
        ("FooBar.java", "rust", "foo_bar.rs"),
        ("foo_bar.py", "javascript", "fooBar.js"),
        ("fooBar.js", "cpp", "foo_bar.cpp"),
        ("HTTPServer.java", "python", "http_server.py"),
        ("src/stock-ledger.rs", "java", "StockLedger.java"),
    ],
)
def test_output_names_follow_the_target_convention(source: str, target: str, expected: str) -> None:
    assert output_name(source, target) == expected


def test_every_ordered_pair_is_accepted_and_others_refused() -> None:
    for source in TRANSLATION_LANGUAGES:
        for target in TRANSLATION_LANGUAGES:
            if source != target:
                assert resolve_pair(source, target)[1].id == target
    with pytest.raises(TranslationError, match="nothing to translate"):
        resolve_pair("go", "golang")
    with pytest.raises(TranslationError, match="TypeScript is not one of them"):
        resolve_pair("python", "typescript")


@pytest.mark.parametrize(
    ("language", "kind", "text", "problem"),
    [
        ("python", "function", "def f(x):\n    return x", None),
        ("python", "function", "x = 1", "no function"),
        ("python", "function", "def f(x:\n    return", "does not parse as Python near line 1"),
        ("java", "function", "public static int f(int x) { return x; }", None),
        ("go", "type", "type Ledger struct {\n\tcounts map[string]int\n}", None),
        ("rust", "function", "fn f() -> u32 { 1 ", "does not parse as Rust"),
        ("cpp", "constant", "const int N = 3;", None),
        ("javascript", "function", "const f = (x) => x + 1;", None),
        ("javascript", "statement", "// only a comment", "no code"),
        ("python", "imports", "", None),  # an import may have no counterpart
    ],
)
def test_check_translation(language: str, kind: str, text: str, problem: str | None) -> None:
    found = check_translation(get_language(language), kind, text)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_trim_drops_junk_after_a_complete_definition_only() -> None:
    python = get_language("python")
    assert trim_translation(python, "function", "def f():\n    return 1\n\ndef g(:\n  junk") == "def f():\n    return 1"
    # Nothing complete before the junk: unchanged, so validation reports it.
    assert trim_translation(python, "function", "def g(:\n  junk") == "def g(:\n  junk"
    # What is left must still be the kind of code the unit needs.
    assert trim_translation(python, "function", "import os\ndef g(:") == "import os\ndef g(:"


def test_finished_stops_after_the_first_definition_of_a_function_unit() -> None:
    python = get_language("python")
    finished = make_finished(python, "function")
    text = "def f():\n    return 1\n\ndef g():\n"
    assert text[: finished(text)] == "def f():\n    return 1"
    assert finished("import os\ndef f():\n    return 1\n") is None  # imports first are fine
    assert finished("def f():\n    return") is None  # checked at line ends only
    imports = "import os\nimport sys\n\ndef f():\n"
    assert imports[: make_finished(python, "imports")(imports)] == "import os\nimport sys"
    # A class unit may hold several items, but a repeated one means the model loops.
    java = get_language("java")
    looping = "class A {\n}\nclass B {\n}\nclass A {\n}\nclass C\n"
    assert looping[: make_finished(java, "type")(looping)] == "class A {\n}\nclass B {\n}"


@pytest.mark.parametrize("target", TRANSLATION_LANGUAGES)
def test_failure_comment_is_marked_and_parses(target: str) -> None:
    language = get_language(target)
    source = get_language("java" if target != "java" else "python")
    unit = Unit("function", "bad", "int bad() { return 1 */ 2; } /* evil */", 4, 6)
    text = failure_comment(language, source, unit, 3, "does not parse", "junk */ more junk (")
    assert "codeglm: FAILED to translate function bad (source lines 5-7) after 3 attempt(s)" in text
    assert "The last attempt" in text and "more junk" in text
    tree = parse_text(language, text + "\n")
    assert not tree.root_node.has_error
    assert all(c.type in ("comment", "line_comment", "block_comment") for c in tree.root_node.children)


def test_join_java_gathers_imports_merges_a_split_class_and_wraps_free_functions() -> None:
    java = get_language("java")
    results = [
        _ok(0, "imports", "i", "import java.util.*;"),
        _ok(1, "head", "Ledger", "public class Ledger {\n    private int x;\n}", "Ledger"),
        _ok(2, "member", "add", "import java.util.List;\nclass Ledger {\n    void add(int a) {\n        x += a;\n    }\n}", "Ledger"),
        _ok(3, "member", "total", "int total() {\n    return x;\n}", "Ledger"),
        _ok(4, "function", "pages", "static int pages(int a, int b) {\n    return a / b;\n}"),
    ]
    text = join_translations(java, results, "StockLedger")
    assert text.startswith("import java.util.*;\nimport java.util.List;\n\n")
    assert text.count("class Ledger") == 1
    assert "void add(int a)" in text and "int total()" in text
    assert "public class StockLedger {\n    static int pages(int a, int b) {" in text
    assert not parse_text(java, text).root_node.has_error
    tree = parse_text(java, text)
    ledger = next(c for c in tree.root_node.children if c.type == "class_declaration")
    methods = [c for c in ledger.child_by_field_name("body").named_children if c.type == "method_declaration"]
    assert len(methods) == 2


def test_join_python_puts_methods_back_and_keeps_failures_marked() -> None:
    python = get_language("python")
    bad = failure_comment(python, get_language("go"), _unit("function", "broken", text="func broken() {}"), 2, "no function", "")
    results = [
        _ok(0, "imports", "i", "import math"),
        _ok(1, "head", "Ledger", 'class Ledger:\n    """doc"""', "Ledger"),
        _ok(2, "member", "add", "class Ledger:\n    def add(self, a):\n        self.x += a", "Ledger"),
        _ok(3, "member", "total", "def total(self):\n    return self.x", "Ledger"),
        _ok(4, "function", "pages", "from typing import List\n\ndef pages(a: List[int]) -> int:\n    return len(a)"),
        UnitResult(5, _unit("function", "broken"), bad, False, 2, "no function"),
    ]
    text = join_translations(python, results)
    assert text.startswith("import math\nfrom typing import List\n\n")
    assert 'class Ledger:\n    """doc"""\n\n    def add(self, a):\n        self.x += a\n\n    def total(self):' in text
    assert "# codeglm: FAILED to translate function broken" in text
    assert not parse_text(python, text).root_node.has_error


def test_join_go_has_a_package_and_one_import_block() -> None:
    go = get_language("go")
    results = [
        _ok(0, "imports", "i", 'import "fmt"'),
        _ok(1, "function", "f", 'import (\n\t"math"\n\t"fmt"\n)\n\nfunc F() float64 {\n\treturn math.Pi\n}'),
    ]
    text = join_translations(go, results)
    assert text.startswith('package main\n\nimport (\n\t"fmt"\n\t"math"\n)\n\nfunc F()')
    assert not parse_text(go, text).root_node.has_error


def test_join_rust_merges_impl_blocks_of_a_split_type() -> None:
    rust = get_language("rust")
    results = [
        _ok(0, "head", "Ledger", "struct Ledger {\n    x: u32,\n}\n\nimpl Ledger {\n    fn new() -> Self { Ledger { x: 0 } }\n}", "Ledger"),
        _ok(1, "member", "add", "impl Ledger {\n    fn add(&mut self, a: u32) {\n        self.x += a;\n    }\n}", "Ledger"),
    ]
    text = join_translations(rust, results)
    assert text.count("impl Ledger") == 1 and "fn add(&mut self, a: u32)" in text
    assert not parse_text(rust, text).root_node.has_error


def test_signatures_of_a_translation() -> None:
    java = get_language("java")
    assert signatures_of(java, "public class A {\n  public int f(int x) { return x; }\n}") == [
        "public class A",
        "public int f(int x)",
    ]


def test_retries_sample_hotter_with_other_seeds() -> None:
    request = TranslationRequest("x", "python", "java", temperature=0.0, seed=7)
    params = [sampling_for_attempt(request, attempt, 100) for attempt in range(5)]
    assert [p.temperature for p in params] == pytest.approx([0.0, 0.4, 0.6, 0.8, 1.0])
    assert [p.seed for p in params] == [7, 8, 9, 10, 11]
    assert all(p.max_new_tokens == 100 for p in params)
