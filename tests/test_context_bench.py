"""``codeglm eval context`` on a project made here: cases are call sites of names defined in
another file of the project (not builtins, not names the cursor's file defines), and the
report has the figures the issue asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeglm.cli import main
from codeglm.completion.workspace_index import WorkspaceIndex
from evals.context_bench import Project, cases_of, evaluate


def make_project(root: Path) -> Path:
    package = root / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "geometry.py").write_text(
        "def area(width: float, height: float) -> float:\n    return width * height\n\n\n"
        "def perimeter(width, height):\n    return 2 * (width + height)\n"
    )
    (package / "report.py").write_text(
        "from pkg.geometry import area\n\n\ndef local_helper(x):\n    return x\n\n\n"
        "def summary(w, h):\n    total = area(w, h)\n    size = len([w, h])\n    edge = perimeter(w, h)\n"
        "    return local_helper(total + size + edge)\n"
    )
    return package


def test_cases_are_calls_of_definitions_in_other_files(tmp_path: Path) -> None:
    package = make_project(tmp_path)
    index = WorkspaceIndex(package)
    index.build()
    cases = cases_of(Project("python", package), index, 10)
    assert sorted(c.name for c in cases) == ["area", "perimeter"]  # not len (builtin), not local_helper (here)
    area = next(c for c in cases if c.name == "area")
    assert area.text.split("\n")[area.line] == "    total = area("  # the rest of the line is not typed yet
    assert area.signatures == ("def area(width: float, height: float) -> float:",)


def test_report_has_the_figures(tmp_path: Path) -> None:
    package = make_project(tmp_path)
    report = evaluate([Project("python", package)], per_language=10, budget=1024)
    assert report["cases"] == 2 and report["recall"] == 1.0 and report["recall_by_language"] == {"python": 1.0}
    for key in ("prompt_tokens_p50", "build_ms_p50", "build_ms_p95", "build_cpu_ms_p95"):
        assert report[key] > 0
    # A budget too small for any snippet beside the cursor's line: the definitions are lost.
    assert evaluate([Project("python", package)], per_language=10, budget=24)["recall"] == 0.0


def test_cli_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = make_project(tmp_path)
    (tmp_path / "python").mkdir()
    package.rename(tmp_path / "python" / "json")  # a package name the benchmark looks for
    assert main(["eval", "context", "--json", "--python-root", str(tmp_path / "python"),
                 "--go-root", str(tmp_path / "none"), "--cargo-root", str(tmp_path / "none")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["cases"], report["recall"], report["budget_tokens"]) == (2, 1.0, 1024)
    assert main(["eval", "context", "--python-root", str(tmp_path / "none"), "--go-root", str(tmp_path / "none"),
                 "--cargo-root", str(tmp_path / "none")]) == 1
    assert "no projects found" in capsys.readouterr().err
