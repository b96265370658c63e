"""The ``codeglm`` command: a thin dispatcher over subcommands.

Each subcommand lives in a module that exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their subcommand runs, so ``codeglm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a row to add a command.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("codeglm.cli.convert", "convert an original CodeGeeX checkpoint into a model directory"),
    "eval": ("evals.cli", "HumanEval-X: generate, execute, report, selfcheck, translate, completion benchmark"),
    "complete": ("codeglm.cli.complete", "complete code at a position in a file"),
    "generate": ("codeglm.cli.generate", "continue a prompt with any backend, streamed to the terminal"),
    "serve-api": ("codeglm.cli.serve_api", "serve an OpenAI-compatible completions API in front of any backend"),
    "translate": ("codeglm.cli.translate", "translate a file into another language (Python, Java, C++, JS, Go, Rust)"),
    "serve": ("codeglm.cli.serve", "run the language server (LSP over stdio, or --tcp --port N)"),
    "train": ("codeglm.cli.train", "train a CodeGeeX-architecture model on source trees"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeglm",
        description="codeglm: a CodeGeeX-style code model, language server, translator and evaluator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<12} {h}" for n, (_, h) in SUBCOMMANDS.items()),
    )
    parser.add_argument("command", nargs="?", help="one of the commands below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        top.print_usage(sys.stderr)
        print(f"codeglm: unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"codeglm {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

