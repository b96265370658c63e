"""The options every command shares read the same everywhere: ``--backend`` with one help
text, ``--max-tokens`` for the token budget (``--max-new-tokens`` still accepted, hidden)."""

from __future__ import annotations

import argparse
import re

import pytest

from codeglm.backends.options import BACKEND_HELP, add_backend_argument, add_max_tokens_argument
from codeglm.cli import main as codeglm_main

BACKEND_COMMANDS = (["complete"], ["generate"], ["translate"], ["serve"], ["serve-api"],
                    ["eval", "generate"], ["eval", "translate", "generate"], ["eval", "completion"])
TOKEN_COMMANDS = (["complete"], ["generate"], ["translate"], ["serve"], ["eval", "generate"],
                  ["eval", "translate", "generate"], ["eval", "completion"])


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        codeglm_main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps help text; compare it unwrapped


@pytest.mark.parametrize("argv", BACKEND_COMMANDS, ids=" ".join)
def test_backend_option_has_one_help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert " ".join(BACKEND_HELP.split()) in help_of(argv, capsys)


@pytest.mark.parametrize("argv", TOKEN_COMMANDS, ids=" ".join)
def test_token_budget_is_max_tokens_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(argv, capsys)
    assert re.search(r"--max-tokens N\b", text) and "--max-new-tokens" not in text


def test_the_old_spelling_still_works_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="codeglm x")
    add_backend_argument(parser)
    add_max_tokens_argument(parser, default=64)
    assert parser.parse_args([]).max_tokens == 64 and parser.parse_args([]).backend is None
    assert parser.parse_args(["--max-tokens", "7"]).max_tokens == 7
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--max-new-tokens", "9"]).max_tokens == 9
    assert "--max-new-tokens is now --max-tokens" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-tokens", "many"])
    assert "invalid int value: 'many'" in capsys.readouterr().err
