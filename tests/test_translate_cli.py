"""``codeglm translate``: output naming, never overwriting without --force, stdin/stdout,
per-unit progress and the summary; end to end in a subprocess over a real model."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
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


def big_java(methods: int, name: str = "Big") -> str:
    """A class of ``methods`` one-line static methods (the issue's file had 13,755)."""
    body = "".join(f"    static int m{i}(int x) {{\n        return x + {i};\n    }}\n\n" for i in range(methods))
    return f"public class {name} {{\n{body}}}\n"


def test_a_file_past_the_unit_limit_is_refused_before_any_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "Big.java"
    source.write_text(big_java(5000), encoding="utf-8")
    output = tmp_path / "big.py"
    backend = ScriptedBackend([])  # no answers: any generation would fail the test
    started = time.perf_counter()
    status = translate_cli.translate_file(_args(str(source), "--to", "python"), backend)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert status == 1 and backend.requests == []
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["Big.java"]
    assert f"{source}: 5,001 units to translate, more than the limit of 500" in err
    assert "nothing was translated or written" in err and "--max-units 5001" in err
    assert "roughly " in err and "tok/s, assumed" in err
    assert seconds < 30, f"refusing took {seconds:.1f} s"  # splitting is not quadratic any more
    # The limit is the option's: a lower one refuses a smaller file too.
    small = tmp_path / "Small.java"
    small.write_text(big_java(60, "Small"), encoding="utf-8")
    status = translate_cli.translate_file(_args(str(small), "--to", "python", "--max-units", "5"), backend)
    assert status == 1 and "61 units to translate, more than the limit of 5" in capsys.readouterr().err
    assert backend.requests == [] and not (tmp_path / "small.py").exists()


def test_under_the_limit_the_units_and_a_rough_time_come_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "Small.java"
    source.write_text(big_java(6, "Small"), encoding="utf-8")
    answers = ["class Small:\n    pass\n"] + [f"def m{i}(x):\n    return x + {i}\n" for i in range(6)]
    args = _args(str(source), "--to", "python", "--max-units", "7", "--decode-speed", "2")
    # A context this small splits the class: its head and one unit per method.
    status = translate_cli.translate_file(args, ScriptedBackend(answers, context_length=240))
    err = capsys.readouterr().err
    assert status in (0, translate_cli.EXIT_UNITS_FAILED), err
    first = err.splitlines()[0]
    assert first.startswith(f"codeglm translate: {source}: 7 units to translate, roughly ")
    assert "tok/s, configured" in first and "rough guess" in first
    assert err.index(first) < err.index("unit 1 of 7: translating")
    assert (tmp_path / "small.py").exists()
    # --max-units 0: no limit; bad values are usage errors.
    assert translate_cli.translate_file(_args(str(source), "--to", "python", "--max-units", "-1"), ScriptedBackend([])) == 2
    assert "--max-units must be >= 0" in capsys.readouterr().err
    assert translate_cli.translate_file(_args(str(source), "--to", "python", "--decode-speed", "0"), ScriptedBackend([])) == 2
