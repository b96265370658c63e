"""``translate()`` end to end.

With a real native backend over a tiny random CodeGeeX model (its 512-token context
forces unit splitting; its output is junk, so units fail, are retried and end up marked
in comments: the failure path, honestly exercised). With the default model when it is
installed. And with a scripted backend where a test needs to know what the "model"
says: that a retry that parses is kept, and what each prompt carries as context.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _backends_fixtures import make_tiny_model_dir

from codeglm.backends import load_backend
from codeglm.backends.base import CancelledError, CancelToken, Completion, GenerationRequest
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import get_language
from codeglm.translation.pipeline import plan_units, translate
from codeglm.translation.types import TranslationRequest, UnitEvent
from codeglm.translation.validation import check_translation

FIXTURES = Path(__file__).parent / "fixtures" / "translate"


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    directory = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-translate"))
    backend = load_backend(f"native:{directory}")
    yield backend
    backend.close()


def test_real_model_run_splits_retries_and_marks_failures(tiny_backend) -> None:
    source = (FIXTURES / "StockLedger.java").read_text(encoding="utf-8")
    request = TranslationRequest(source, "java", "python", max_retries=1, max_new_tokens=12, seed=3)
    events: list[UnitEvent] = []
    result = translate(request, tiny_backend, on_unit=events.append)
    units = plan_units(request, get_language("java"), get_language("python"), tiny_backend)
    assert len(units) > 1  # the file does not fit a 512-token context in one piece
    assert [r.unit for r in result.units] == units
    assert [e.status for e in events].count("start") == len(units)
    assert [e.status for e in events].count("retry") == result.retries
    assert result.retries == sum(r.attempts - 1 for r in result.units)
    for unit_result in result.units:
        if unit_result.ok:
            assert unit_result.text.strip() == "" or unit_result.text.strip().split("\n")[-1] in result.text
        else:
            assert unit_result.attempts == 2  # the first try and one retry
            assert f"# codeglm: FAILED to translate {unit_result.unit.label}" in result.text
            assert unit_result.problem
    # Random weights write junk: class units cannot come out as Python classes.
    assert any(r.unit.kind in ("type", "head", "member") for r in result.failed_units)
    assert result.parses and not parse_text(get_language("python"), result.text).root_node.has_error
    assert "unit(s)" in result.summary() and "failed:" in result.summary()


def test_default_model_run_produces_a_file_that_parses_or_reports_failures(tmp_path: Path) -> None:
    from codeglm.backends import default_backend_spec

    # The default model ships inside the package: its absence is a defect, not a skip.
    backend = load_backend(default_backend_spec())
    try:
        source = "def add(a, b):\n    return a + b\n\n\ndef is_even(n):\n    return n % 2 == 0\n"
        request = TranslationRequest(source, "python", "go", max_retries=1, max_new_tokens=64, split="units")
        result = translate(request, backend)
    finally:
        backend.close()
    assert [r.unit.label for r in result.units] == ["function add", "function is_even"]
    assert result.parses
    for unit_result in result.units:
        if unit_result.ok:
            assert check_translation(get_language("go"), "function", unit_result.text) is None
        else:
            assert f"codeglm: FAILED to translate {unit_result.unit.label}" in result.text
    assert result.text.startswith("package ")


def test_cancel_stops_before_the_next_unit(tiny_backend) -> None:
    token = CancelToken()
    token.cancel()
    request = TranslationRequest("def f():\n    return 1\n", "python", "rust")
    with pytest.raises(CancelledError):
        translate(request, tiny_backend, cancel=token)


class ScriptedBackend:
    """A backend whose "model" answers from a script, recording every request.

    Stands in for the model only where a test must know the answer in advance; the
    pipeline around it (prompts, validation, retries, joining) is the real one.
    """

    name = "scripted"
    supports_fim = False

    def __init__(self, answers: list[str], context_length: int = 2048) -> None:
        self.answers = list(answers)
        self.context_length = context_length
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        self.requests.append(request)
        text = self.answers.pop(0)
        for stop in request.stop:
            if stop in text:
                text = text[: text.index(stop)]
        return [Completion(text, "stop", self.count_tokens(text))]

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Iterator[str]:
        yield from (c.text for c in self.generate(request, cancel))

    def close(self) -> None:
        pass


PY_SOURCE = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef double(x):\n    return 2 * x\n"


def test_a_retry_that_parses_is_kept() -> None:
    backend = ScriptedBackend(
        [
            'import "math"\n',
            "func Area(r float64) float64 {\n\treturn math.Pi * r *\n",  # cut short: does not parse
            "func Area(r float64) float64 {\n\treturn math.Pi * r * r\n}\n",
            "func Double(x int) int {\n\treturn 2 * x\n}\n\ncode translation\nPython:\n",
        ]
    )
    events: list[UnitEvent] = []
    request = TranslationRequest(PY_SOURCE, "python", "go", split="units", max_retries=2, seed=5)
    result = translate(request, backend, on_unit=events.append)
    assert [r.unit.kind for r in result.units] == ["imports", "function", "function"]
    assert [r.attempts for r in result.units] == [1, 2, 1]
    assert result.retries == 1 and not result.failed_units
    retry = next(e for e in events if e.status == "retry")
    assert retry.label == "function area" and "does not parse as Go" in retry.message
    # The retry sampled hotter, with another seed.
    first, second = backend.requests[1].params, backend.requests[2].params
    assert (first.temperature, first.seed) == (0.0, 5)
    assert second.temperature > first.temperature and second.seed == 6
    # Later prompts carry the translated imports and signatures of earlier units.
    last_prompt = backend.requests[3].prompt
    assert last_prompt.startswith("code translation\nPython:\nimport math\n\ndef double(x):\n    return 2 * x\nGo:\n")
    assert last_prompt.endswith('\nGo:\nimport "math"\n\n// Already translated:\n// func Area(r float64) float64\n')
    assert result.text == (
        'package main\n\nimport (\n\t"math"\n)\n\n'
        "func Area(r float64) float64 {\n\treturn math.Pi * r * r\n}\n\n"
        "func Double(x int) int {\n\treturn 2 * x\n}\n"
    )
    assert result.parses


def test_a_unit_that_never_parses_is_reported_after_all_retries() -> None:
    backend = ScriptedBackend(["def area(r:\n"] * 3)
    request = TranslationRequest("int area(int r) { return r * r; }\n", "cpp", "python", max_retries=2)
    result = translate(request, backend)
    assert len(backend.requests) == 3 and result.retries == 2
    (failed,) = result.failed_units
    assert failed.attempts == 3 and "does not parse as Python" in failed.problem
    assert result.text.startswith("# codeglm: FAILED to translate file (source lines 1-2) after 3 attempt(s)")
    assert "# def area(r:" in result.text  # the last attempt is shown
    assert result.parses


def test_a_unit_too_long_for_the_context_is_reported_without_calling_the_model() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = f"def small():\n    return 1\n\n\ndef huge():\n{body}\n    return x0\n"
    backend = ScriptedBackend(["fn small() -> i32 {\n    1\n}\n"], context_length=200)
    result = translate(TranslationRequest(source, "python", "rust"), backend)
    assert [r.ok for r in result.units] == [True, False]
    assert "too long for the model's context (200 tokens)" in result.failed_units[0].problem
    assert len(backend.requests) == 1
