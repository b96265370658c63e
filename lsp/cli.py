"""Command-line options shared by ``python -m lsp`` and ``codeglm serve``."""

from __future__ import annotations

import argparse
import sys

from codeglm.backends.options import add_backend_argument, add_max_tokens_argument
from lsp.logs import LEVELS, configure_logging
from lsp.settings import Settings, SettingsError, apply_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser)
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    transport.add_argument("--tcp", action="store_true", help="listen for one client over TCP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="stderr log level (default info)")
    add_max_tokens_argument(parser, default=None, help="default for codeglm.maxTokens")
    parser.add_argument("--temperature", type=float, help="default for codeglm.temperature")


def run(args: argparse.Namespace) -> int:
    """Serve until the client disconnects."""
    from lsp.server import create_server  # deferred: pygls and the pipeline load to serve, not for --help

    raw: dict[str, object] = {"backend": args.backend}
    if args.max_tokens is not None:
        raw["maxTokens"] = args.max_tokens
    if args.temperature is not None:
        raw["temperature"] = args.temperature
    try:
        settings = apply_settings(Settings(), raw)
    except SettingsError as exc:
        print(f"codeglm serve: {exc}", file=sys.stderr)
        return 2
    server = create_server(settings)
    configure_logging(args.log_level, server.log_to_client)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    server.holder.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lsp", description="codeglm language server: inline completion and translation over LSP"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
