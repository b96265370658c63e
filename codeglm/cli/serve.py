"""``codeglm serve``: the language server, with the same options as ``python -m lsp``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lsp.cli import add_arguments as lsp_arguments

    lsp_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from lsp.cli import run as lsp_run

    return lsp_run(args)
