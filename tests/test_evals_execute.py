"""Execution end to end: data loading, sample files, canonical and wrong programs, resume."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _mutants import WRONG_TASK0

from evals.assemble import assemble, go_missing_imports
from evals.dataset import LANGUAGES, load_language, load_tasks, parse_records
from evals.execute import execute_file, parse_samples, read_results
from evals.toolchains import check_toolchain

PROJECT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")


def _toolchains_present(languages: list[str]) -> None:
    for lang in languages:
        problem = check_toolchain(lang)
        if problem:
            pytest.fail(f"{lang}: {problem}")


# ---- data ---------------------------------------------------------------------------------


def test_every_language_loads_164_valid_tasks() -> None:
    for lang in LANGUAGES:
        tasks, problems = load_language(lang)
        assert problems == []
        assert [t.number for t in tasks] == list(range(164))
        assert all(t.language == lang for t in tasks)


def test_bad_records_are_reported_by_line_and_field() -> None:
    good = {"task_id": "Python/1", "prompt": "p", "declaration": "", "canonical_solution": "c", "test": "t"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "task_id": "Python/2", "test": ""}),
        json.dumps({**good, "task_id": "CPP/3"}),
        json.dumps({**good}),
        json.dumps([1, 2]),
    ]
    tasks, problems = parse_records(lines, "f.jsonl", "python")
    assert [t.task_id for t in tasks] == ["Python/1"]
    assert [(p.line, p.field) for p in problems] == [(2, "-"), (3, "test"), (4, "task_id"), (5, "task_id"), (6, "-")]
    assert str(problems[1]) == "f.jsonl:3: field 'test': missing, empty or not a string"


def test_loads_from_a_directory_given_explicitly(tmp_path: Path) -> None:
    record = {"task_id": "Rust/0", "prompt": "p", "declaration": "d", "canonical_solution": "c", "test": "t"}
    with gzip.open(tmp_path / "humaneval_rust.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(record) + "\n")
    tasks, problems = load_language("rust", tmp_path)
    assert problems == [] and [t.task_id for t in tasks] == ["Rust/0"]


def test_patch_table_is_applied_and_optional() -> None:
    patched, _ = load_tasks(["rust", "javascript"])
    raw, _ = load_tasks(["rust", "javascript"], patched=False)
    assert "gen_range(0, 2)" in raw["Rust/50"].test and "gen_range(0..2)" in patched["Rust/50"].test
    assert "return (z, false)" in raw["JavaScript/112"].canonical_solution
    assert "return [t, false]" in patched["JavaScript/112"].canonical_solution
    assert load_tasks(["python"], patched=False)[0] == load_tasks(["python"])[0]  # no Python patch


@needs_root
@pytest.mark.slow
def test_go_95_patched_canonical_passes_whatever_the_map_order(tmp_path: Path) -> None:
    """Unpatched, Go/95's canonical stops after two keys of a map and fails about one run
    in four; patched, it checks every key: 24 runs (each its own random map order) pass."""
    _toolchains_present(["go"])
    raw, _ = load_tasks(["go"], patched=False)
    tasks, _ = load_tasks(["go"])
    assert "} else {\n            break\n        }\n    }\n    return state" in raw["Go/95"].canonical_solution
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write_samples(samples, [("Go/95", tasks["Go/95"].canonical_solution)] * 24)
    execute_file(samples, output, tasks, workers=2, timeout=20, progress=False)
    results = read_results(output)
    assert len(results) == 24 and all(r.passed for r in results.values()), results


def test_go_imports_come_from_the_whole_file() -> None:
    setup = 'package main\n\nimport (\n    "testing"\n    "math"\n)\n'
    body = 'func F() string { return strings.ToUpper(fmt.Sprint(math.Pi)) } // sort.Ints\nvar s = "os.Exit"\n'
    assert go_missing_imports(setup, body) == ["fmt", "strings"]


def test_go_program_drops_prompt_imports_and_has_a_main() -> None:
    task = {t.task_id: t for t in load_language("go")[0]}["Go/2"]
    source = assemble(task, task.canonical_solution).source
    assert source.count('"math"') == 1 and "func main()" in source
    assert '{"TestTruncateNumber", TestTruncateNumber}' in source


def test_every_dataset_program_prints_the_end_of_checks_line() -> None:
    """Each language's assembled program carries the epilogue; an unusual C++ test shape
    (no single ``int main()`` ending the test) is assembled as is and says so."""
    tasks, _ = load_tasks(LANGUAGES)
    assert all(assemble(t, t.canonical_solution).prints_end_token for t in tasks.values())
    cpp = tasks["CPP/0"]
    source = assemble(cpp, cpp.canonical_solution).source
    assert "int codeglm_checks()" in source and source.count("int main()") == 1
    odd = replace(cpp, test="int main(int argc, char** argv) { return 0; }\n")
    assert not assemble(odd, cpp.canonical_solution).prints_end_token


# ---- samples files --------------------------------------------------------------------------


def test_reference_format_samples_are_accepted() -> None:
    # What codegeex's generation writes: task_id, prompt, generation (no completion_id).
    lines = [
        json.dumps({"task_id": "Python/0", "prompt": "def f():\n", "generation": "    return 1\n"}),
        json.dumps({"task_id": "Python/0", "prompt": "def f():\n", "generation": "    return 2\n"}),
        json.dumps({"task_id": "CPP/5", "generation": "}", "completion_id": 17, "extra": True}),
        json.dumps({"task_id": "Python/1", "prompt": "", "generation": ""}),
    ]
    samples, problems = parse_samples(lines)
    assert problems == []
    assert [(s.task_id, s.completion_id) for s in samples] == [("Python/0", 0), ("Python/0", 1), ("CPP/5", 17), ("Python/1", 0)]


def test_malformed_sample_lines_are_reported_and_skipped() -> None:
    lines = [
        "{broken",
        json.dumps({"task_id": "Python/0"}),
        json.dumps({"generation": "x"}),
        json.dumps({"task_id": "Cobol/1", "generation": "x"}),
        json.dumps({"task_id": "Python/0", "generation": "x", "completion_id": "seven"}),
        "",
        json.dumps({"task_id": "Python/0", "generation": "ok"}),
    ]
    samples, problems = parse_samples(lines)
    assert [p.line for p in problems] == [1, 2, 3, 4, 5]
    assert [(s.task_id, s.completion_id, s.line) for s in samples] == [("Python/0", 0, 7)]


def test_unknown_task_ids_are_reported_and_skipped_at_parse_time() -> None:
    lines = [
        json.dumps({"task_id": "Python/0", "generation": "a"}),
        json.dumps({"task_id": "Python/9999", "generation": "b"}),
        json.dumps({"task_id": "Python/0", "generation": "c"}),
    ]
    samples, problems = parse_samples(lines, {"Python/0", "Python/1"})
    assert [(s.task_id, s.completion_id, s.line) for s in samples] == [("Python/0", 0, 1), ("Python/0", 1, 3)]
    assert [(p.line, p.unknown_task) for p in problems] == [(2, "Python/9999")]
    assert str(problems[0]) == "line 2: task_id 'Python/9999' is not in the dataset"
    assert parse_samples(lines)[1] == []  # without the dataset's ids, no id is judged


# ---- programs --------------------------------------------------------------------------------


def _write_samples(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"task_id": t, "generation": g}) + "\n" for t, g in rows))


@needs_root
@pytest.mark.slow
def test_canonical_pass_and_wrong_programs_fail_in_every_language(tmp_path: Path) -> None:
    _toolchains_present(list(LANGUAGES))
    tasks, _ = load_tasks(LANGUAGES)
    rows: list[tuple[str, str]] = []
    for lang, info in LANGUAGES.items():
        for number in (0, 53, 162):
            task = tasks[f"{info.task_prefix}/{number}"]
            rows.append((task.task_id, task.canonical_solution))
        rows.append((f"{info.task_prefix}/0", WRONG_TASK0[lang]))
        rows.append((f"{info.task_prefix}/1", ""))
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write_samples(samples, rows)
    execute_file(samples, output, tasks, workers=2, timeout=15, progress=False)
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == len(rows)
    for (task_id, generation), result in zip(rows, results, strict=True):
        assert result["task_id"] == task_id
        canonical = generation == tasks[task_id].canonical_solution
        if canonical:
            assert result["status"] == "passed", result["reason"]
        elif generation:
            assert result["status"] == "failed", result
            assert result["reason"]
        else:
            assert result["status"] == "compile_error" if not task_id.startswith(("Python", "JavaScript")) else result["status"] in ("failed", "runtime_error"), result
        assert result["passed"] is (result["status"] == "passed")


@needs_root
@pytest.mark.slow
def test_all_984_canonical_solutions_pass(tmp_path: Path) -> None:
    """The whole dataset (patch table applied): every canonical solution passes, Go/95's included
    (its canonical, which depended on Go's random map order, is patched)."""
    _toolchains_present(list(LANGUAGES))
    tasks, _ = load_tasks(LANGUAGES)
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write_samples(samples, [(t.task_id, t.canonical_solution) for t in tasks.values()])
    execute_file(samples, output, tasks, workers=os.cpu_count(), timeout=20, progress=False)
    results = read_results(output)
    failed = {k[0]: (r.status, r.reason) for k, r in results.items() if not r.passed}
    assert len(results) == 984
    assert not failed, failed


# ---- resume ----------------------------------------------------------------------------------


def _resume_samples(path: Path) -> None:
    tasks, _ = load_tasks(["python"])
    rows = []
    for number in range(12):
        task = tasks[f"Python/{number}"]
        rows.append((task.task_id, "    import time; time.sleep(0.3)\n" + task.canonical_solution))
        rows.append((task.task_id, "    return None\n"))
    _write_samples(path, rows)


@needs_root
def test_resume_after_interruption_gives_the_same_file(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    _resume_samples(samples)
    tasks, _ = load_tasks(["python"])
    whole = tmp_path / "whole.jsonl"
    execute_file(samples, whole, tasks, workers=2, timeout=10, progress=False)

    # A real interruption: Ctrl-C to the CLI once some results are on disk.
    resumed = tmp_path / "resumed.jsonl"
    argv = [sys.executable, "-m", "codeglm.cli", "eval", "execute", str(samples), "-o", str(resumed), "--workers", "2", "--no-progress"]
    process = subprocess.Popen(argv, cwd=PROJECT, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if resumed.exists() and len(resumed.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    process.wait(30)
    partial = resumed.read_text().splitlines()
    assert 4 <= len(partial) < 24, "the run was not interrupted midway"
    # And a crash mid-line on top of it.
    with open(resumed, "a") as handle:
        handle.write('{"task_id": "Python/11", "compl')
    summary = execute_file(samples, resumed, tasks, workers=2, timeout=10, progress=False)
    assert summary.reused == len(set(partial)) and summary.executed == 24 - summary.reused
    assert resumed.read_bytes() == whole.read_bytes()
    statuses = [json.loads(line)["status"] for line in whole.read_text().splitlines()]
    assert statuses[0::2] == ["passed"] * 12
    assert "passed" not in statuses[1::2] and "failed" in statuses[1::2]


@needs_root
def test_unknown_task_ids_are_skipped_by_execute_and_leave_pass_at_k_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from codeglm.cli import main

    tasks, _ = load_tasks(["python"])
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write_samples(
        samples,
        [
            ("Python/0", tasks["Python/0"].canonical_solution),
            ("Python/9999", "    pass\n"),
            ("Python/0", WRONG_TASK0["python"]),
        ],
    )
    # What an older version wrote for the unknown sample: it must not survive the rewrite.
    old = {
        "task_id": "Python/9999",
        "completion_id": 0,
        "status": "sandbox_error",
        "passed": False,
        "reason": "",
    }
    output.write_text(json.dumps(old) + "\n")
    capsys.readouterr()
    summary = execute_file(samples, output, tasks, workers=1, timeout=10, progress=False)
    assert "line 2: task_id 'Python/9999' is not in the dataset (skipped)" in capsys.readouterr().err
    assert (summary.total, summary.unknown_tasks, summary.skipped_lines, summary.executed) == (2, 1, 0, 2)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["task_id"], r["status"]) for r in records] == [("Python/0", "passed"), ("Python/0", "failed")]
    assert main(["eval", "report", str(output), "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["python"] == {"pass@1": 0.5}


def test_codeglm_eval_help_lists_the_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "codeglm.cli", "eval", "--help"], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0
    for name in ("generate", "execute", "report", "selfcheck"):
        assert name in result.stdout

