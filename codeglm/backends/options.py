"""The command-line options every command shares, defined once: which backend, and how
many tokens to generate. ``codeglm complete``, ``generate``, ``translate``, ``serve``,
``serve-api`` and ``eval`` all take them from here, so they have the same names, the same
defaults rules and the same help everywhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from codeglm.backends import BACKEND_ENV

BACKEND_HELP = (
    "backend spec: native:MODEL_DIR, hf:MODEL_DIR (or a hub id), openai:URL#MODEL "
    f"(default: ${BACKEND_ENV}, else the default model shipped with codeglm)"
)


def add_backend_argument(parser: argparse.ArgumentParser, more_help: str = "") -> None:
    """``--backend SPEC``; None when absent (``load_backend`` then reads ``$CODEGLM_BACKEND``)."""
    parser.add_argument("--backend", default=None, help=BACKEND_HELP + more_help)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` for the backends that load weights here (native, hf)."""
    parser.add_argument("--device", default=None, help="torch device for native/hf backends, e.g. cpu or cuda:0")
    parser.add_argument("--dtype", default=None, help="weights dtype for native/hf backends (fp32, fp16, bf16, int8)")


class _OldSpelling(argparse.Action):
    """A hidden alias kept for one release: stores like the new option and says so once."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is now {self.new}; the old spelling goes away in the next release",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_max_tokens_argument(
    parser: argparse.ArgumentParser,
    default: int | None,
    help: str = "tokens to generate at most",
    type: Callable[[str], int] = int,
) -> None:
    """``--max-tokens N`` (``args.max_tokens``); ``--max-new-tokens`` still works, hidden."""
    shown = help if default is None else f"{help} (default {default})"
    parser.add_argument("--max-tokens", dest="max_tokens", type=type, default=default, metavar="N", help=shown)
    parser.add_argument("--max-new-tokens", dest="max_tokens", type=type, action=_OldSpelling, new="--max-tokens")


__all__ = ["BACKEND_HELP", "add_backend_argument", "add_device_arguments", "add_max_tokens_argument"]
