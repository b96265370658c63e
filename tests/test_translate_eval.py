"""The HumanEval-X translation task: prompts identical to the reference's, samples scored
by the target language's tests through the harness, pass@k per pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_translate_pipeline import ScriptedBackend

from codeglm.cli import main as codeglm_main
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
    args = argparse.Namespace(translate_command="report", run_dir=tmp_path, k=[1], json=False)
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


# --- ``codeglm eval report`` / ``codeglm eval translate`` on the command line ---------------


def _write_results(path: Path, outcomes: list[tuple[str, int, bool]]) -> None:
    """A results.jsonl as ``evals.execute`` writes it (one line per sample)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"task_id": t, "completion_id": c, "status": "passed" if ok else "failed", "passed": ok, "reason": ""})
        for t, c, ok in outcomes
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A two-pair translation run, built by hand: 2 samples per problem."""
    # python-to-cpp: CPP/0 passes 1 of 2, CPP/1 passes 0 of 2 -> pass@1 = (0.5 + 0) / 2, pass@2 = (1 + 0) / 2.
    _write_results(
        tmp_path / "python-to-cpp" / "results.jsonl",
        [("CPP/0", 0, True), ("CPP/0", 1, False), ("CPP/1", 0, False), ("CPP/1", 1, False)],
    )
    # java-to-python: Python/0 passes 2 of 2, Python/1 1 of 2, Python/2 0 of 2 -> pass@1 = 1.5 / 3, pass@2 = 2 / 3.
    _write_results(
        tmp_path / "java-to-python" / "results.jsonl",
        [("Python/0", 0, True), ("Python/0", 1, True), ("Python/1", 0, False), ("Python/1", 1, True),
         ("Python/2", 0, False), ("Python/2", 1, False)],
    )
    (tmp_path / "go-to-rust").mkdir()  # a pair not executed yet: left out of the table
    return tmp_path


def test_eval_report_on_a_translation_run_prints_pass_at_k_per_pair(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert codeglm_main(["eval", "report", str(run_dir), "--k", "1,2,10"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines == [
        "| pair | problems | pass@1 | pass@2 | pass@10 |",
        "|---|---:|---:|---:|---:|",
        # Table order: source language, then target, as the harness lists languages.
        "| Python -> C++ | 2 | 25.00% | 50.00% | n/a |",
        "| Java -> Python | 3 | 50.00% | 66.67% | n/a |",
    ]
    assert codeglm_main(["eval", "report", str(run_dir), "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"python-to-cpp": {"pass@1": 0.25}, "java-to-python": {"pass@1": 0.5}}
    # The same table from the translate command itself.
    assert codeglm_main(["eval", "translate", "report", str(run_dir), "--k", "1,2,10"]) == 0
    assert capsys.readouterr().out.strip().split("\n") == lines


def test_eval_report_explains_a_directory_it_cannot_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert codeglm_main(["eval", "report", str(tmp_path)]) == 1
    assert "not a translation run" in capsys.readouterr().err
    (tmp_path / "cpp-to-go").mkdir()
    assert codeglm_main(["eval", "report", str(tmp_path)]) == 1
    assert f"run `codeglm eval translate execute {tmp_path}` first" in capsys.readouterr().err
    assert codeglm_main(["eval", "report", str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 2
    assert "--plot" in capsys.readouterr().err and not (tmp_path / "c.png").exists()


def test_eval_translate_help_and_shared_argument_checks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        codeglm_main(["eval", "translate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: codeglm eval translate" in out and all(c in out for c in ("generate", "execute", "report"))
    with pytest.raises(SystemExit) as exit_info:
        codeglm_main(["eval", "translate", "generate", "--help"])
    out = capsys.readouterr().out
    # The options shared with ``codeglm eval generate``, with the translation task's defaults.
    for option in ("--backend", "--n", "--batch-size", "--temperature", "--top-p", "--max-tokens", "--seed",
                   "--limit", "--output", "--data", "--pairs"):
        assert option in out, option
    assert "samples per problem (default 1)" in out and "(default 0.2)" in out
    for argv in (["eval", "translate", "generate", "--n", "0", "-o", "x"], ["eval", "generate", "--top-p", "2", "-o", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            codeglm_main(argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --n: must be >= 1, got 0" in err and "argument --top-p: must be in (0, 1], got 2" in err
