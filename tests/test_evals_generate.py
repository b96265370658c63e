"""Generation against the Backend interface: prompts, batches, cuts, sample lines, resume.

The backend here replays each task's canonical solution followed by junk, so the test
checks what the harness does with a generation, not a model (the model's end-to-end run
comes with the backends work).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeglm.backends.base import Backend, CancelToken, Completion, GenerationRequest
from evals.dataset import load_tasks
from evals.execute import parse_samples
from evals.generate import GenerateSettings, generate_samples, model_prompt, reference_cut


class ReplayBackend:
    """Answers each prompt with the matching canonical solution plus text past the function."""

    name = "replay"
    context_length = 2048
    supports_fim = False

    def __init__(self, answers: dict[str, str], fail_after: int | None = None) -> None:
        self.answers = answers
        self.requests: list[GenerationRequest] = []
        self.fail_after = fail_after

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run
        self.requests.append(request)
        return [Completion(self.answers[request.prompt], "length", 10) for _ in range(request.n)]

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Iterator[str]:
        yield self.answers[request.prompt]

    def close(self) -> None:
        pass


JUNK = {"python": "\n\ndef unrelated():\n    pass\n", "cpp": "\nint other() { return 1; }\n", "go": "\nfunc Other() int {\n    return 1\n}\n"}


@pytest.fixture(scope="module")
def tasks() -> list:
    found, _ = load_tasks(["python", "cpp", "go"])
    return [t for t in found.values() if t.number < 2]


def test_prompts_carry_the_codegeex_language_tag(tasks: list) -> None:
    by_id = {t.task_id: t for t in tasks}
    assert model_prompt(by_id["Python/0"]).startswith("# language: Python\nfrom typing import List")
    assert model_prompt(by_id["CPP/0"]).startswith("// language: C++\n")
    go_prompt = model_prompt(by_id["Go/0"])
    assert go_prompt.startswith("// language: Go\n") and "import" not in go_prompt


def test_generate_batches_cuts_and_resumes(tasks: list, tmp_path: Path) -> None:
    answers = {model_prompt(t): t.canonical_solution + JUNK[t.language] for t in tasks}
    settings = GenerateSettings(n=5, batch_size=2, temperature=0.8, top_p=0.95, seed=1)
    out = tmp_path / "samples.jsonl"

    interrupted = ReplayBackend(answers, fail_after=4)
    assert isinstance(interrupted, Backend)
    with pytest.raises(KeyboardInterrupt):
        generate_samples(interrupted, tasks, settings, out, progress=False)
    first = out.read_text().splitlines()
    assert len(first) == 2 + 2 + 1 + 2  # task 1 done (2+2+1), task 2's first batch
    with open(out, "a") as handle:
        handle.write('{"task_id": "Python/1", "gener')  # a crash mid-line

    backend = ReplayBackend(answers)
    made = generate_samples(backend, tasks, settings, out, progress=False)
    assert made == 5 * len(tasks) - len(first)
    assert [r.n for r in backend.requests][:2] == [2, 1]  # Python/1 resumes at sample 2
    assert all(r.params.temperature == 0.8 and r.params.top_p == 0.95 for r in backend.requests)

    lines = out.read_text().splitlines()
    samples, problems = parse_samples(lines)
    assert problems == [] and len(samples) == 5 * len(tasks)
    for task in tasks:
        mine = [json.loads(line) for line in lines if json.loads(line)["task_id"] == task.task_id]
        assert [m["completion_id"] for m in mine] == list(range(5))
        assert all(m["prompt"] == task.prompt for m in mine)
        generation = mine[0]["generation"]
        assert "unrelated" not in generation and "Other" not in generation  # cut after the function
        assert generation.strip() == task.canonical_solution.strip()


def test_reference_cut_rules() -> None:
    assert reference_cut("python", "", "    return 1\n\ndef g():\n    pass") == "    return 1"
    assert reference_cut("java", "", "        return 1;\n    }\n}\nclass X {}") == "        return 1;\n    }\n}"
    assert reference_cut("go", "", "    return 1\n}\nfunc X() {}") == "    return 1\n}"


def test_a_prompt_over_the_context_fails_its_samples_not_the_run(tasks: list, tmp_path: Path) -> None:
    from _backends_fixtures import make_tiny_model_dir

    from codeglm.backends import load_backend
    from evals.execute import execute_file

    # a real model whose context is too short for the longer HumanEval-X prompts
    backend = load_backend(f"native:{make_tiny_model_dir(tmp_path / 'model', context=136)}")
    fits = [t for t in tasks if backend.count_tokens(model_prompt(t)) < 126]  # Go's (~120 tokens)
    too_long = [t for t in tasks if backend.count_tokens(model_prompt(t)) >= 136]  # C++'s (~145)
    assert fits and too_long
    out = tmp_path / "samples.jsonl"
    settings = GenerateSettings(n=2, batch_size=2, temperature=0.0, max_new_tokens=8)
    try:
        made = generate_samples(backend, [too_long[0], fits[0]], settings, out, progress=False)
    finally:
        backend.close()
    assert made == 4
    samples, problems = parse_samples(out.read_text().splitlines())
    assert not problems
    errors = {s.task_id: s.error for s in samples}
    assert errors[fits[0].task_id] is None
    assert "does not fit the model's context" in (errors[too_long[0].task_id] or "")

    # execute scores them failed with that reason, without building anything
    results = tmp_path / "results.jsonl"
    only_failed = tmp_path / "failed.jsonl"
    only_failed.write_text("".join(line + "\n" for line in out.read_text().splitlines() if '"error"' in line))
    summary = execute_file(only_failed, results, {t.task_id: t for t in tasks}, workers=1, progress=False)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert summary.executed == 0
    assert [(r["status"], r["passed"]) for r in rows] == [("failed", False), ("failed", False)]
    assert rows[0]["reason"].startswith("generation error: prompt of")
