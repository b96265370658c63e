"""``codeglm serve``: the language server, with the same options as ``python -m lsp``."""

from __future__ import annotations

import argparse

from lsp.cli import add_arguments as lsp_arguments
from lsp.cli import run as lsp_run


def add_arguments(parser: argparse.ArgumentParser) -> None:

    lsp_arguments(parser)


def run(args: argparse.Namespace) -> int:

    return lsp_run(args)
