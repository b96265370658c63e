"""pass@k against exact combinatorics, the per-language table, and the report formats."""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.metrics import TaskCount, count_per_task, pass_at_k, pass_at_k_table
from evals.report import load_table, markdown, plot, to_json


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_exact_combinatorics(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    assert pass_at_k(200, 199, 100) == 1.0  # fewer than k failures: every draw of k holds a pass
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_table_per_language_and_overall() -> None:
    counts = [TaskCount("Python/0", 4, 1), TaskCount("Python/1", 4, 4), TaskCount("CPP/0", 4, 0)]
    table = pass_at_k_table(counts, [1, 2, 5])
    assert list(table) == ["python", "cpp", "overall"]
    assert table["python"]["pass@1"] == pytest.approx((0.25 + 1.0) / 2)
    assert table["python"]["pass@2"] == pytest.approx((float(exact(4, 1, 2)) + 1.0) / 2)
    assert table["cpp"] == {"pass@1": 0.0, "pass@2": 0.0}  # k=5 > n=4: no estimate
    assert table["overall"]["pass@1"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)


def test_count_per_task() -> None:
    counts = count_per_task([("Go/1", True), ("Go/1", False), ("Go/2", False)])
    assert counts == [TaskCount("Go/1", 2, 1), TaskCount("Go/2", 1, 0)]


def _results_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.jsonl"
    rows = []
    for task, passes in (("Python/0", [True, False]), ("Rust/3", [False, False])):
        for i, ok in enumerate(passes):
            rows.append({"task_id": task, "completion_id": i, "status": "passed" if ok else "failed", "passed": ok, "reason": ""})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_report_markdown_json_and_plot(tmp_path: Path) -> None:
    table, statuses, tasks = load_table(_results_file(tmp_path), [1, 2])
    text = markdown(table, [1, 2], statuses, tasks)
    assert "| Python | 1 | 50.00% | 100.00% |" in text
    assert "| Rust | 1 | 0.00% | 0.00% |" in text
    assert "| overall | 2 | 25.00% | 50.00% |" in text
    assert json.loads(to_json(table)) == {
        "python": {"pass@1": 0.5, "pass@2": 1.0},
        "rust": {"pass@1": 0.0, "pass@2": 0.0},
        "overall": {"pass@1": 0.25, "pass@2": 0.5},
    }
    png = tmp_path / "chart.png"
    plot(table, [1, 2], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codeglm.cli import main

    assert main(["eval", "report", str(_results_file(tmp_path)), "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["python"] == {"pass@1": 0.5}


def test_report_ignores_result_records_of_task_ids_not_in_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from codeglm.cli import main

    clean = _results_file(tmp_path)
    assert main(["eval", "report", str(clean), "--k", "1,2", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    # An older `eval execute` recorded samples of unknown tasks as sandbox errors.
    stale = tmp_path / "stale.jsonl"
    extra = [
        {"task_id": t, "completion_id": 0, "status": "sandbox_error", "passed": False, "reason": "unknown task_id"}
        for t in ("Python/9999", "Rust/164", "Cobol/1")
    ]
    stale.write_text(clean.read_text() + "".join(json.dumps(r) + "\n" for r in extra))
    assert main(["eval", "report", str(stale), "--k", "1,2", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == expected
    assert "ignoring 3 result records of task ids not in the dataset: Cobol/1, Python/9999, Rust/164" in captured.err
    assert main(["eval", "report", str(stale), "--k", "1"]) == 0
    assert "| overall | 2 | 25.00% |" in capsys.readouterr().out
    table, _, tasks = load_table(stale, [1], {"Python/0", "Rust/3"})
    assert table["overall"] == {"pass@1": 0.25} and tasks == {"python": 1, "rust": 1}
