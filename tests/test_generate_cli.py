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
    assert err.count("--- sample") == 2 and out.count("\n") >= 2


@pytest.mark.parametrize(
    ("backend", "complaint"),
    [("gguf:/nowhere", "does not start with a known kind"), ("native:/no/such/model", "does not exist")],
)
def test_errors_are_messages_not_tracebacks(backend: str, complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "x", "--backend", backend]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codeglm generate: ") and complaint in err


def test_without_a_backend_or_default_model_it_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CODEGLM_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "codeglm.defaults", None)  # as if no default model were installed
    assert main(["generate", "x"]) == 1
    assert "--backend native:PATH" in capsys.readouterr().err
