"""``codeglm generate`` as a user runs it: prompt from the argument or stdin, text on
stdout, clear errors on stderr."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _backends_fixtures import PROJECT, shared_tiny_model_dir

from codeglm.backends import GenerationRequest, SamplingParams, load_backend
from codeglm.cli import main
from codeglm.cli.generate import unescape_stop

PROMPT = "def fibonacci(n):\n    "


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_model_dir(tmp_path_factory)


def test_the_command_streams_the_completion_to_stdout(model_dir: Path) -> None:
    [expected] = load_backend(f"native:{model_dir}").generate(GenerationRequest(PROMPT, SamplingParams(max_new_tokens=12)))
    environment = {k: v for k, v in os.environ.items() if k != "CODEGLM_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-m", "codeglm.cli", "generate", PROMPT, "--backend", f"native:{model_dir}",
         "--max-tokens", "12"],
        cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.text + "\n"
    assert "loading" in result.stderr  # the progress bar, on stderr


def test_prompt_from_stdin_and_several_samples(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    monkeypatch.setenv("CODEGLM_BACKEND", f"native:{model_dir}")
    assert main(["generate", "--max-tokens", "6", "--n", "2", "--temperature", "0.8", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert "--- sample 1/2 (" in err and "--- sample 2/2 (" in err and out.count("\n") >= 2
    expected = load_backend(f"native:{model_dir}").generate(
        GenerationRequest(PROMPT, SamplingParams(max_new_tokens=6, temperature=0.8, seed=3), n=2)
    )
    assert out == "".join(c.text + "\n" for c in expected)


def test_dash_reads_stdin_and_stop_strings_understand_escapes(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [completion] = load_backend(f"native:{model_dir}").generate(GenerationRequest(PROMPT, SamplingParams(max_new_tokens=20)))
    full = completion.text
    stop = next(full[i : i + 2] for i in range(2, len(full) - 2) if full[i : i + 2].isprintable())
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    escaped = stop.replace("\\", "\\\\")  # as typed in a shell: a backslash is written twice
    assert main(["generate", "-", "--backend", f"native:{model_dir}", "--max-tokens", "20", "--stop", escaped]) == 0
    assert capsys.readouterr().out == full[: full.find(stop)] + "\n"


def test_unescape_stop() -> None:
    assert unescape_stop(r"\n\n") == "\n\n"
    assert unescape_stop(r"a\tb\\n") == "a\tb\\n"  # an escaped backslash, then a plain n
    assert unescape_stop("plain") == "plain"


@pytest.mark.parametrize(
    ("argv", "stdin", "complaint"),
    [
        (["generate", ""], "", "the prompt is empty"),
        (["generate"], "", "the prompt is empty"),
        (["generate", "x", "--n", "0"], "", "--n must be >= 1, got 0"),
        (["generate", "x", "--top-p", "0", "--max-tokens", "-1"], "",
         "--max-tokens must be >= 0, got -1; --top-p must be in (0, 1], got 0.0"),
        (["generate", "x", "--temperature", "-0.5"], "", "--temperature must be a finite number >= 0"),
        (["generate", "x", "--temperature", "nan"], "", "--temperature must be a finite number >= 0"),
        (["generate", "x", "--seed", str(2**70)], "", "--seed must be from -2**63 to 2**63-1"),
        (["generate", "x", "--stop", ""], "", "--stop must not be empty"),
    ],
)
def test_bad_input_is_refused_before_loading_a_model(
    argv: list[str], stdin: str, complaint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    # A backend that cannot load: the complaint must come first, about the input.
    assert main([*argv, "--backend", "native:/no/such/model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codeglm generate: ") and complaint in err and "does not exist" not in err


@pytest.mark.parametrize(
    ("backend", "complaint", "status"),
    [("gguf:/nowhere", "does not start with a known kind", 1),
     ("native:/no/such/model", "does not exist", 2),  # a model that cannot load: a bad argument
     ("openai:http://127.0.0.1:9/v1#m --device cpu", "unknown option 'device' for a openai backend", 1)],
)
def test_errors_are_messages_not_tracebacks(
    backend: str, complaint: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, *options = backend.split()
    assert main(["generate", "x", "--backend", spec, *options]) == status
    err = capsys.readouterr().err
    assert err.startswith("codeglm generate: ") and complaint in err


def test_without_a_backend_or_default_model_it_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CODEGLM_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "codeglm.defaults", None)  # as if no default model were installed
    assert main(["generate", "x"]) == 1
    assert "--backend native:PATH" in capsys.readouterr().err
