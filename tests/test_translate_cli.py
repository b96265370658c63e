"""``codeglm translate``: output naming, never overwriting without --force, stdin/stdout,
per-unit progress and the summary; end to end in a subprocess over a real model."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _backends_fixtures import make_tiny_model_dir
from test_translate_pipeline import ScriptedBackend

from codeglm.cli import translate as translate_cli
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import get_language

PROJECT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "translate"
PY_SOURCE = "def double(x):\n    return 2 * x\n"
JAVA_DOUBLE = "static int doubleIt(int x) {\n    return 2 * x;\n}\n"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    translate_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def _codeglm(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeglm.cli", "translate", *argv],
        cwd=PROJECT, input=stdin, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-translate-cli"))


def test_default_output_name_java_class_wrapper_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "math_utils.py"
    source.write_text(PY_SOURCE, encoding="utf-8")
    status = translate_cli.translate_file(_args(str(source), "--to", "java"), ScriptedBackend([JAVA_DOUBLE]))
    assert status == 0
    output = tmp_path / "MathUtils.java"
    text = output.read_text(encoding="utf-8")
    # Free functions go into a class named after the file.
    assert text.startswith("public class MathUtils {\n    static int doubleIt(int x) {")
    assert not parse_text(get_language("java"), text).root_node.has_error
    err = capsys.readouterr().err
    assert "unit 1 of 1: translating the whole file\n" in err and "unit 1 of 1: translated the whole file\n" in err
    assert "Python -> Java: 1 unit(s), 0 retries, 0 failed" in err and f"wrote {output} (parses)" in err


def test_existing_output_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "math_utils.py"
    source.write_text(PY_SOURCE, encoding="utf-8")
    output = tmp_path / "MathUtils.java"
    output.write_text("// mine\n", encoding="utf-8")
    # Refused before any model is loaded: the backend named here does not even exist.
    status = translate_cli.run(_args(str(source), "--to", "java", "--backend", "native:/nonexistent/model"))
    assert status == 1
    assert f"{output} exists; pass --force" in capsys.readouterr().err
    assert output.read_text(encoding="utf-8") == "// mine\n"
    status = translate_cli.translate_file(_args(str(source), "--to", "java", "--force"), ScriptedBackend([JAVA_DOUBLE]))
    assert status == 0 and "doubleIt" in output.read_text(encoding="utf-8")


def test_failed_units_give_status_3_and_are_named_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(PY_SOURCE, encoding="utf-8")
    out = tmp_path / "out.rs"
    status = translate_cli.translate_file(
        _args(str(source), "--to", "rust", "-o", str(out), "--retries", "1"), ScriptedBackend(["fn double(x: i32 {"] * 2)
    )
    assert status == translate_cli.EXIT_UNITS_FAILED
    err = capsys.readouterr().err
    # One unit, tried twice: the retry is "retry 1 of 1" of unit 1, not a second unit.
    assert "unit 1 of 1: retry 1 of 1 for the whole file (does not parse as Rust" in err
    assert "unit 1 of 1: could not translate the whole file after 2 attempts (does not parse as Rust" in err
    assert "unit 2" not in err
    assert "1 unit(s), 1 retry, 1 failed" in err and "failed: file (lines 1-3" in err
    assert out.read_text(encoding="utf-8").startswith("/* codeglm: FAILED to translate file")


def test_usage_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert translate_cli.run(_args("-", "--to", "go")) == 2
    assert "pass --from LANG" in capsys.readouterr().err
    odd = tmp_path / "notes.txt"
    odd.write_text("x", encoding="utf-8")
    assert translate_cli.run(_args(str(odd), "--to", "go")) == 2
    assert "cannot tell the language" in capsys.readouterr().err
    assert translate_cli.run(_args(str(odd), "--from", "python", "--to", "kotlin")) == 2
    assert "unsupported language 'kotlin'" in capsys.readouterr().err
    assert translate_cli.run(_args(str(tmp_path / "missing.py"), "--to", "go", "-o", "-")) == 1
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_subprocess_with_a_real_model(tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "StockLedger.java"
    shutil.copy(FIXTURES / "StockLedger.java", source)
    run = _codeglm(str(source), "--to", "python", "--backend", f"native:{tiny_model}", "--max-new-tokens", "8", "--retries", "1")
    output = tmp_path / "stock_ledger.py"
    assert run.returncode in (0, translate_cli.EXIT_UNITS_FAILED), run.stderr
    text = output.read_text(encoding="utf-8")
    assert not parse_text(get_language("python"), text).root_node.has_error
    assert "unit 1 of " in run.stderr and "Java -> Python:" in run.stderr and f"wrote {output} (parses)" in run.stderr
    if run.returncode == translate_cli.EXIT_UNITS_FAILED:
        assert "# codeglm: FAILED to translate" in text and "failed: " in run.stderr
    # A second run refuses to overwrite.
    again = _codeglm(str(source), "--to", "python", "--backend", f"native:{tiny_model}")
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    assert output.read_text(encoding="utf-8") == text


@pytest.mark.slow
def test_stdin_to_stdout(tiny_model: Path) -> None:
    run = _codeglm("-", "--from", "python", "--to", "cpp", "--backend", f"native:{tiny_model}",
                   "--max-tokens", "8", "--retries", "0", "--quiet", stdin=PY_SOURCE)
    assert run.returncode in (0, translate_cli.EXIT_UNITS_FAILED), run.stderr
    assert run.stdout.strip()
    assert not parse_text(get_language("cpp"), run.stdout).root_node.has_error
    assert "unit 1 of " not in run.stderr  # --quiet: no per-unit lines
    assert "Python -> C++: 1 unit(s)" in run.stderr and "wrote stdout" in run.stderr
