"""The offline completion benchmark (``codeglm eval completion``)."""

from __future__ import annotations

import argparse
import json

import pytest

from codeglm.languages import get_language
from evals import completion_bench as bench


def test_cases_from_a_canonical_solution() -> None:
    problems = {p["task_id"]: p for p in bench.load_problems("python")}
    head, solution = bench.program_parts("python", problems["Python/0"])
    language = get_language("python")

    lines = bench.line_cases("Python/0", language, head, solution)
    # The seven code lines of the solution, each once.
    assert [c.expected for c in lines] == [
        "for idx, elem in enumerate(numbers):",
        "for idx2, elem2 in enumerate(numbers):",
        "if idx != idx2:",
        "distance = abs(elem - elem2)",
        "if distance < threshold:",
        "return True",
        "return False",
    ]
    first = lines[0]
    document_lines = first.text.split("\n")
    assert document_lines[first.line] == "    "  # the line's code removed, indentation kept
    assert first.character == 4

    blocks = bench.block_cases("Python/0", language, head, solution)
    assert blocks[-1].expected == "\n                    return True"
    assert blocks[0].expected.startswith("\n        for idx2, elem2 in enumerate(numbers):")
    assert blocks[0].expected.endswith("return True")
    assert "return False" in blocks[0].text  # the rest of the file stays as suffix


def test_brace_block_case_includes_the_closing_brace() -> None:
    problems = {p["task_id"]: p for p in bench.load_problems("go")}
    head, solution = bench.program_parts("go", problems["Go/0"])
    blocks = bench.block_cases("Go/0", get_language("go"), head, solution)
    assert all(c.expected.rstrip().endswith("}") for c in blocks)


def test_rust_file_has_doc_uses_and_signature() -> None:
    problem = bench.load_problems("rust")[0]
    head, _ = bench.program_parts("rust", problem)
    assert head.index("use rand::Rng;") < head.index("Check if in given list") < head.index("fn has_close_elements")


def test_metrics() -> None:
    assert bench.levenshtein("kitten", "sitting") == 3
    assert bench.edit_similarity("abc", "abc") == 1.0
    assert bench.edit_similarity("", "") == 1.0
    assert bench.edit_similarity("abcd", "abce") == 0.75
    assert bench._percentile([5, 1, 3, 2, 4], 0.5) == 3


def test_run_with_the_oracle_prints_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--backend", "oracle", "--language", "python,go", "--limit", "6", "--json"])
    assert bench.run(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(last)
    for key in ("exact_match", "edit_similarity", "parse_rate", "tokens_per_case", "p50_ms", "p95_ms"):
        assert key in report
        assert key in report["by_language"]["python"] and key in report["by_language"]["go"]
    assert report["cases"] == 12
    # The oracle writes the true code: the cutting rules must recover it.
    assert report["exact_match"] >= 0.9
    assert report["parse_rate"] >= 0.9
    assert report["tokens_per_case"] > 0


def test_unknown_language_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--backend", "oracle", "--language", "typescript"])) == 2
    assert "no HumanEval-X data for typescript" in capsys.readouterr().err
