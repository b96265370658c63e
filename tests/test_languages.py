"""The language table: lookups, CodeGeeX names and tags, grammars and their queries."""

from __future__ import annotations

import pytest
import tree_sitter

from codeglm.languages import LANGUAGES, UnsupportedLanguageError, get_language, language_for_path

# One small program per language, to prove each grammar parses it and the query finds its names.
PROGRAMS = {
    "python": ("import os\n\ndef area(r):\n    return 3.14 * r * r\n\nclass Shape:\n    pass\n", {"area", "Shape"}),
    "java": ("class Shape {\n  double area(double r) { return r * r; }\n}\n", {"Shape", "area"}),
    "cpp": ("#include <cmath>\nstruct P { int x; };\ndouble area(double r) { return r * r; }\n", {"P", "area"}),
    "c": ("#include <math.h>\ntypedef struct { int x; } P;\ndouble area(double r) { return r * r; }\n", {"P", "area"}),
    "javascript": ("function area(r) { return r * r; }\nclass Shape {}\n", {"area", "Shape"}),
    "typescript": ("interface Shape { r: number }\nfunction area(s: Shape): number { return s.r; }\n", {"Shape", "area"}),
    "go": ("package main\ntype Shape struct{ R float64 }\nfunc Area(s Shape) float64 { return s.R }\n", {"Shape", "Area"}),
    "rust": ("struct Shape { r: f64 }\nfn area(s: &Shape) -> f64 { s.r * s.r }\n", {"Shape", "area"}),
}


def test_table_has_the_required_languages_and_codegeex_names() -> None:
    rows = {lang.id: lang for lang in LANGUAGES}
    assert set(rows) >= {"python", "java", "cpp", "c", "javascript", "typescript", "go", "rust"}
    assert rows["cpp"].display_name == "C++"
    assert rows["cpp"].codegeex_tag == "// language: C++"
    assert rows["python"].codegeex_tag == "# language: Python"
    assert rows["javascript"].codegeex_tag == "// language: JavaScript"
    assert {r.humaneval_name for r in LANGUAGES} >= {"python", "cpp", "java", "js", "go", "rust"}
    assert rows["typescript"].humaneval_name is None
    for lang in LANGUAGES:
        assert lang.codegeex_tag == f"{lang.line_comment} language: {lang.display_name}"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("python", "python"), ("Python", "python"), (".py", "python"), ("py", "python"),
        ("javascriptreact", "javascript"), ("js", "javascript"), (".jsx", "javascript"),
        ("typescriptreact", "typescript"), (".tsx", "typescript"),
        ("C++", "cpp"), ("cpp", "cpp"), (".hpp", "cpp"), ("cuda-cpp", "cpp"),
        (".h", "c"), ("c", "c"), ("golang", "go"), (".rs", "rust"), ("Java", "java"),
    ],
)
def test_get_language_accepts_ids_names_and_extensions(key: str, expected: str) -> None:
    assert get_language(key).id == expected


def test_unknown_language_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedLanguageError, match="supported: python, java, cpp"):
        get_language("cobol")
    assert issubclass(UnsupportedLanguageError, ValueError)


def test_language_for_path() -> None:
    assert language_for_path("src/app/Main.java").id == "java"
    assert language_for_path("lib.RS").id == "rust"
    assert language_for_path("README.md") is None
    assert language_for_path("Makefile") is None


@pytest.mark.parametrize("language_id", sorted(PROGRAMS))
def test_grammar_parses_and_definition_query_finds_names(language_id: str) -> None:
    lang = get_language(language_id)
    source, names = PROGRAMS[language_id]
    tree = lang.parser().parse(source.encode())
    assert not tree.root_node.has_error
    query = tree_sitter.Query(lang.ts_language(), lang.definition_query)
    found = {
        node.text.decode() for node in tree_sitter.QueryCursor(query).captures(tree.root_node).get("name", [])
    }
    assert found == names
    assert lang.ts_language() is lang.ts_language()  # loaded once


def test_comment_uses_the_language_syntax() -> None:
    assert get_language("python").comment("a\nb") == "# a\n# b\n"
    assert get_language("go").comment("x\n\ny\n") == "// x\n//\n// y\n"


def test_file_naming_conventions() -> None:
    assert get_language("java").file_naming == "PascalCase"
    assert get_language("python").file_naming == "snake_case"
    assert get_language("rust").file_naming == "snake_case"


def test_the_harness_and_translation_read_the_one_table() -> None:
    """HumanEval-X names, task prefixes, assertion patterns and translation's unit nodes
    are columns of the language table; the harness and translation derive theirs from it."""
    from codeglm.languages import ALL_UNIT_NODES, HUMANEVAL_X, TRANSLATION_LANGUAGES, get_language
    from codeglm.translation import units
    from evals import dataset, execute

    assert sorted(HUMANEVAL_X) == sorted(TRANSLATION_LANGUAGES)
    for name in HUMANEVAL_X:
        row = get_language(name)
        assert row.humaneval_name and row.humaneval_task_prefix and row.assertion_pattern
        assert row.unit_nodes.types and row.unit_nodes.functions and row.unit_nodes.leading
        info = dataset.LANGUAGES[name]
        assert (info.file_stem, info.task_prefix, info.display_name) == (
            row.humaneval_name, row.humaneval_task_prefix, row.display_name)
        assert execute.ASSERTION_PATTERNS[name].pattern == row.assertion_pattern
        assert dataset.language_id(row.humaneval_task_prefix) == name == dataset.language_id(row.humaneval_name)
    assert list(dataset.LANGUAGES) == list(HUMANEVAL_X)
    assert units.TYPE_NODES == ALL_UNIT_NODES.types >= get_language("rust").unit_nodes.types
    assert dataset.language_id("rs") == "rust" and dataset.language_id("c++") == "cpp"
    with pytest.raises(dataset.DatasetError, match="unknown language 'typescript'"):
        dataset.language_id("typescript")
