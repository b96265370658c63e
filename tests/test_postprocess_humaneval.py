"""``truncate_generation`` on HumanEval-X: a generation that is the canonical solution
followed by more code (here the problem's own test code, as a model rambling on would
write) must be cut back to the canonical solution."""

from __future__ import annotations

import pytest

from evals.completion_bench import load_problems
from evals.truncation import truncate_generation

# Canonical solutions that hold more than the one function (a helper after it, stray
# preprocessor lines) are cut after the first function, as they should be; they are the
# only misses, so at least this share must come back exactly.
MIN_EXACT = 0.95


def harness_prompt(language: str, problem: dict) -> str:
    # Rust's prompt is only a doc comment: the harness puts the declaration first.
    return problem["declaration"] + problem["prompt"] if language == "rust" else problem["prompt"]


@pytest.mark.parametrize("language", ["python", "cpp", "java", "js", "go", "rust"])
def test_canonical_solution_is_recovered(language: str) -> None:
    problems = load_problems(language)
    exact = 0
    for problem in problems:
        generation = problem["canonical_solution"] + "\n" + problem["test"]
        got = truncate_generation(language, harness_prompt(language, problem), generation)
        exact += got.rstrip() == problem["canonical_solution"].rstrip()
    assert exact / len(problems) >= MIN_EXACT


def test_java_generation_that_stops_after_the_method_gets_the_class_closed() -> None:
    prompt = "import java.util.*;\n\nclass Solution {\n    public int twice(int x) {\n"
    got = truncate_generation("java", prompt, "        return 2 * x;\n    }\n\n    public int other() {\n")
    assert got == "        return 2 * x;\n    }\n}"
    got = truncate_generation("java", prompt, "        return 2 * x;\n    }\n}\n\nclass Main {}\n")
    assert got == "        return 2 * x;\n    }\n}"


def test_python_stops_at_the_dedent_not_at_nested_blocks() -> None:
    prompt = 'def f(xs):\n    """Sum of positives."""\n'
    generation = "    s = 0\n    for x in xs:\n        if x > 0:\n            s += x\n    return s\n\n\nprint(f([1]))\n"
    assert truncate_generation("python", prompt, generation) == (
        "    s = 0\n    for x in xs:\n        if x > 0:\n            s += x\n    return s"
    )


def test_whole_function_when_the_prompt_opens_nothing() -> None:
    prompt = "/*\n Add two numbers.\n*/\n"
    generation = "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nfn main() {\n    println!(\"{}\", add(1, 2));\n}\n"
    assert truncate_generation("rust", prompt, generation) == "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}"


def test_generation_still_open_is_kept_whole() -> None:
    prompt = "int f(int x) {\n"
    assert truncate_generation("cpp", prompt, "    int y = x;\n    return y") == "    int y = x;\n    return y"


def test_reference_rules_apply_only_where_the_tree_cannot_decide() -> None:
    # The prompt itself is broken (an unclosed parenthesis): no tree to trust; the
    # reference's brace counting cuts at the first unmatched "}".
    prompt = "int f(int x {\n"
    got = truncate_generation("cpp", prompt, "    return x;\n}\nint main() {}\n")
    assert got == "    return x;\n}"
