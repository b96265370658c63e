"""The HumanEval-X translation task: prompts identical to the reference's, samples scored
by the target language's tests through the harness, pass@k per pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_translate_pipeline import ScriptedBackend

from codeglm.paths import humaneval_dir
from evals import translation
from evals.dataset import LANGUAGES, load_tasks
from evals.execute import execute_file, read_results

STEMS = {lang: info.file_stem for lang, info in LANGUAGES.items()}


@pytest.fixture(scope="module")
def raw_tasks() -> dict:
    tasks, problems = load_tasks(list(LANGUAGES), patched=False)
    assert not problems
    return tasks


def test_thirty_ordered_pairs() -> None:
    pairs = translation.all_pairs()
    assert len(pairs) == 30 and len({p.name for p in pairs}) == 30
    assert translation.parse_pairs("python-to-cpp,js:go") == [
        translation.Pair("python", "cpp"),
        translation.Pair("javascript", "go"),
    ]


def test_prompts_match_the_reference_for_every_pair(raw_tasks: dict) -> None:
    reference = pytest.importorskip("codegeex.benchmark.utils")
    checked = 0
    for pair in translation.all_pairs():
        expected = reference.read_translation_dataset(
            str(humaneval_dir() / f"humaneval_{STEMS[pair.source]}.jsonl.gz"),
            str(humaneval_dir() / f"humaneval_{STEMS[pair.target]}.jsonl.gz"),
            lang_src=STEMS[pair.source],
            lang_tgt=STEMS[pair.target],
            dataset_type="humaneval",
        )
        for task_id, record in expected.items():
            number = int(task_id.split("/")[1])
            source = raw_tasks[f"{LANGUAGES[pair.source].task_prefix}/{number}"]
            target = raw_tasks[f"{LANGUAGES[pair.target].task_prefix}/{number}"]
            assert translation.prompt_for(source, target) == record["prompt"], (pair.name, task_id)
            checked += 1
    assert checked == 30 * 164


def test_prompt_shape_on_a_sample_task(raw_tasks: dict) -> None:
    prompt = translation.prompt_for(raw_tasks["Python/0"], raw_tasks["CPP/0"])
    assert prompt.startswith("code translation\nPython:\nfrom typing import List\n\n\ndef has_close_elements(")
    assert "\n    return False\nC++:\n#include<stdio.h>\n" in prompt
    assert prompt.endswith("bool has_close_elements(vector<float> numbers, float threshold){\n")


def test_scoring_task_continues_the_declaration(raw_tasks: dict) -> None:
    from evals.assemble import assemble

    for lang in LANGUAGES:
        task = raw_tasks[f"{LANGUAGES[lang].task_prefix}/3"]
        program = assemble(translation.scoring_task(task), "GENERATION").source
        declaration_body = task.declaration.strip().split("\n")[-1]
        # The generation directly follows the declaration's last line, and the docstring prompt is gone.
        assert declaration_body + "\nGENERATION" in program, lang
        assert program.count(declaration_body) == 1, lang


@pytest.mark.slow
def test_generate_execute_report_one_pair(tmp_path: Path) -> None:
    tasks, _ = load_tasks(["cpp", "python"])
    python = {t.number: t for t in tasks.values() if t.language == "python"}
    # The "model" writes the right body for problem 0 (then rambles on) and a wrong one for 1.
    backend = ScriptedBackend([python[0].canonical_solution + "\n\ndef unrelated(:\n", "    return None\n"])
    pair = translation.Pair("cpp", "python")
    samples = tmp_path / pair.name / "samples.jsonl"
    made = translation.generate_pair(backend, pair, tasks, translation.TranslationSettings(n=1), samples, limit=2, progress=False)
    assert made == 2
    records = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    assert [r["task_id"] for r in records] == ["Python/0", "Python/1"]
    assert [r["source_task_id"] for r in records] == ["CPP/0", "CPP/1"]
    assert records[0]["prompt"] == translation.prompt_for(tasks["CPP/0"], tasks["Python/0"])
    assert "unrelated" not in records[0]["generation"]  # cut where the function ends
    # Resumable: a second run has nothing left to do.
    assert translation.generate_pair(backend, pair, tasks, translation.TranslationSettings(n=1), samples, limit=2, progress=False) == 0
    execute_file(samples, tmp_path / pair.name / "results.jsonl", translation.scoring_tasks(tasks), workers=2, progress=False)
    results = read_results(tmp_path / pair.name / "results.jsonl")
    assert results[("Python/0", 0)].passed and not results[("Python/1", 0)].passed
    table = translation.report_markdown(tmp_path, [1])
    assert "| C++ -> Python | 2 | 50.00% |" in table
    args = argparse.Namespace(translate_command="report", run_dir=tmp_path, k=[1])
    assert translation.run(args) == 0


@pytest.mark.slow
@pytest.mark.parametrize("target", ["python", "cpp", "java", "javascript", "go", "rust"])
def test_canonical_translation_passes_and_empty_fails(target: str, tmp_path: Path) -> None:
    tasks, _ = load_tasks([target])
    task = next(t for t in tasks.values() if t.number == 2)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"task_id": task.task_id, "generation": task.canonical_solution}) + "\n"
        + json.dumps({"task_id": task.task_id, "generation": ""}) + "\n",
        encoding="utf-8",
    )
    execute_file(samples, tmp_path / "results.jsonl", translation.scoring_tasks(tasks), workers=1, timeout=20, progress=False)
    results = read_results(tmp_path / "results.jsonl")
    assert results[(task.task_id, 0)].passed, results[(task.task_id, 0)].reason
    assert not results[(task.task_id, 1)].passed
