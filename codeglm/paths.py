"""Where shared data lives: the HumanEval-X files and the CodeGeeX tokenizer.

Nothing from ``shared/data`` is committed into the project. A user points at it with
``CODEGLM_DATA`` (a directory holding ``humaneval-x/`` and ``codegeex-tokenizer/``),
or with the more specific ``CODEGLM_TOKENIZER``; tests fall back to the ``shared/data``
directory that sits beside the project checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DataNotFoundError(FileNotFoundError):
    """The shared data directory could not be found."""


def data_dir() -> Path:
    """The directory that holds ``humaneval-x/`` and ``codegeex-tokenizer/``."""
    env = os.environ.get("CODEGLM_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"CODEGLM_DATA={env} is not a directory")
        return path
    for base in (Path.cwd(), _PROJECT_ROOT):
        for parent in (base, *base.parents):
            candidate = parent.parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise DataNotFoundError(
        "shared data not found: set CODEGLM_DATA to a directory holding humaneval-x/ "
        "and codegeex-tokenizer/"
    )


def tokenizer_dir() -> Path:
    """The CodeGeeX tokenizer files (vocab.json, merges.txt, added_tokens.json)."""
    env = os.environ.get("CODEGLM_TOKENIZER")
    if env:
        return Path(env).expanduser()
    return data_dir() / "codegeex-tokenizer"


def humaneval_dir() -> Path:
    """The HumanEval-X ``humaneval_<lang>.jsonl.gz`` files."""
    return data_dir() / "humaneval-x"
