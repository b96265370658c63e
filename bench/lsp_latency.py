"""Completion latency of the language server while someone types.

Starts ``python -m lsp`` over stdio (the default model, or ``--backend``), opens a
document and replays typing a source file one character at a time: after each character
an incremental ``didChange`` and one ``textDocument/inlineCompletion`` request at the
cursor, awaited before the next character, as an editor with debounce sends them when
each keystroke pause outlasts the debounce. Latency is measured per request, client side.

Two passes over the same text: "cold" right after the model has loaded, "warm" a second
replay in a fresh document (the answer cache cannot help: every version is new; the
engine's prefix cache and the process's warmed-up code paths can). The last line printed
is one JSON object whose ``p50_ms``/``p95_ms`` are the warm numbers.

Before anything is timed, the server's completions with the cursor at the end of each
typed line (fresh documents) are checked against the reference path,
``codeglm.completion.pipeline.complete`` in this process with the same backend and settings, taking
the same requests in the same order; if one differs (or all are empty, which proves
nothing) it is printed as an ERROR, no latency is reported, and the script exits 1.

    python bench/lsp_latency.py [--backend SPEC] [--chars N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

DEFAULT_PREFIX = "import math\n\n\n"
# What gets typed after DEFAULT_PREFIX: a small function, as a person would write it.
DEFAULT_TYPED = (
    "def circle_area(radius):\n"
    "    if radius < 0:\n"
    "        raise ValueError(\"negative radius\")\n"
    "    return math.pi * radius * radius\n"
)


@dataclass(frozen=True)
class PassResult:
    latencies_ms: list[float]
    non_empty: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def _advance(line: int, character: int, char: str) -> tuple[int, int]:
    # UTF-16 columns: the default text is ASCII; count astral characters as two units.
    if char == "\n":
        return line + 1, 0
    return line, character + (2 if ord(char) > 0xFFFF else 1)


async def type_document(
    client: LanguageClient, uri: str, language_id: str, prefix: str, typed: str
) -> PassResult:
    """Open ``prefix`` and type ``typed`` into it, one completion request per character."""
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=prefix)
        )
    )
    line = prefix.count("\n")
    character = len(prefix) - (prefix.rfind("\n") + 1)
    version = 1
    latencies: list[float] = []
    non_empty = 0
    for char in typed:
        version += 1
        position = types.Position(line=line, character=character)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=position, end=position), text=char)],
            )
        )
        line, character = _advance(line, character, char)
        started = time.perf_counter()
        items = await inline_items(client, uri, line, character)
        latencies.append((time.perf_counter() - started) * 1000.0)
        non_empty += 1 if items else 0
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    return PassResult(latencies, non_empty)


async def inline_items(client: LanguageClient, uri: str, line: int, character: int) -> list[types.InlineCompletionItem]:
    """The server's inline completion items at a position, asked as an editor does while typing."""
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
    )
    return list(result.items if isinstance(result, types.InlineCompletionList) else (result or []))


async def request_completion(client: LanguageClient, uri: str, line: int, character: int) -> str:
    """The text of the server's first inline completion at a position ("" for none)."""
    items = await inline_items(client, uri, line, character)
    if not items:
        return ""
    insert = items[0].insert_text
    return insert if isinstance(insert, str) else insert.value


def reference_completions(args: argparse.Namespace, checks: list[tuple[Path, str]]) -> list[str]:
    """The reference path: the completion pipeline in this process, as ``codeglm complete`` runs
    it, on one backend taking the requests in the server's order (so its prefix cache is in
    the same state for each)."""
    from codeglm.backends import load_backend
    from codeglm.completion.pipeline import CompletionRequest, complete

    backend = load_backend(args.backend)
    texts = []
    for path, text in checks:
        lines = text.split("\n")
        request = CompletionRequest(text=text, line=len(lines) - 1, character=len(lines[-1]),
                                    language_id=args.language, path=str(path), max_new_tokens=args.max_tokens)
        result = complete(request, backend)
        texts.append(result.text if result is not None else "")
    return texts


async def check_completions(client: LanguageClient, args: argparse.Namespace, checks: list[tuple[Path, str]]) -> bool:
    """Whether the server completes each (path, text), cursor at the end, as the reference path does."""
    served = []
    for path, text in checks:
        uri = path.as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id=args.language, version=1, text=text)
            )
        )
        lines = text.split("\n")
        served.append(await request_completion(client, uri, len(lines) - 1, len(lines[-1])))
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
    expected = await asyncio.to_thread(reference_completions, args, checks)
    for (path, _), want, got in zip(checks, expected, served, strict=True):
        if want != got:
            print(f"ERROR: the server's completion in {path.name} differs from the in-process pipeline's; "
                  f"no latency is reported\n  reference: {want!r}\n  server:    {got!r}")
            return False
    if not any(served):
        print("ERROR: every check completion was empty, so the check proved nothing; no latency is reported")
        return False
    print(f"check: the server's {len(served)} completions equal the in-process pipeline's "
          f"({sum(map(bool, served))} non-empty)")
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = LanguageClient("codeglm-bench", "1")
    ready = asyncio.Event()
    status: dict[str, str] = {}

    @client.feature("codeglm/status")
    def on_status(params: Any) -> None:
        state = params.get("state") if isinstance(params, dict) else getattr(params, "state", "")
        message = params.get("message") if isinstance(params, dict) else getattr(params, "message", "")
        status.update(state=state, message=message)
        if state in ("ready", "error"):
            ready.set()

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def on_log(params: types.LogMessageParams) -> None:
        if args.verbose:
            print(f"server: {params.message}", file=sys.stderr)

    command = [sys.executable, "-m", "lsp", "--log-level", "warning"]
    if args.backend:
        command += ["--backend", args.backend]
    started = time.perf_counter()
    await client.start_io(*command)
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"codeglm": {"maxTokens": args.max_tokens}},
        )
    )
    initialize_ms = (time.perf_counter() - started) * 1000.0
    client.initialized(types.InitializedParams())
    await asyncio.wait_for(ready.wait(), timeout=args.load_timeout)
    if status.get("state") == "error":
        raise SystemExit(f"lsp_latency: the server could not load its model: {status.get('message')}")
    load_ms = (time.perf_counter() - started) * 1000.0

    text = Path(args.session).read_text(encoding="utf-8") if args.session else DEFAULT_PREFIX + DEFAULT_TYPED
    split = len(DEFAULT_PREFIX) if not args.session else text.find("\n", len(text) // 3) + 1
    prefix, typed = text[:split], text[split:]
    if args.chars:
        typed = typed[: args.chars]
    with tempfile.TemporaryDirectory() as directory:
        suffix = Path(args.session).suffix if args.session else ".py"
        # Cursor at the end of each typed line (fresh documents), before anything is timed.
        cuts = [i + 1 for i, char in enumerate(typed) if char == "\n"] or [len(typed)]
        checks = [(Path(directory, f"check{i}{suffix}"), prefix + typed[:cut]) for i, cut in enumerate(cuts)]
        if not await check_completions(client, args, checks):
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()
            raise SystemExit(1)
        cold = await type_document(client, Path(directory, f"cold{suffix}").as_uri(), args.language, prefix, typed)
        warm = await type_document(client, Path(directory, f"warm{suffix}").as_uri(), args.language, prefix, typed)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {
        "requests": len(typed),
        "initialize_ms": round(initialize_ms, 1),
        "model_ready_ms": round(load_ms, 1),
        "cold_p50_ms": round(cold.percentile(50), 1),
        "cold_p95_ms": round(cold.percentile(95), 1),
        "cold_non_empty": cold.non_empty,
        "warm_non_empty": warm.non_empty,
        "p50_ms": round(warm.percentile(50), 1),
        "p95_ms": round(warm.percentile(95), 1),
        "backend": args.backend or "default model",
        "max_tokens": args.max_tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="backend spec for the server (default: the default model)")
    parser.add_argument("--session", help="a source file to type (default: a small Python function)")
    parser.add_argument("--language", default="python", help="LSP languageId of the session file (default python)")
    parser.add_argument("--chars", type=int, default=0, help="type only this many characters (0: all)")
    parser.add_argument("--max-tokens", type=int, default=32, help="codeglm.maxTokens (default 32)")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds to wait for the model")
    parser.add_argument("--verbose", action="store_true", help="print the server's log messages")
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args))
    print(f"typed {summary['requests']} characters, one inline completion request each")
    print(f"initialize answered in {summary['initialize_ms']} ms; model ready after {summary['model_ready_ms']} ms")
    print(f"cold: p50 {summary['cold_p50_ms']} ms, p95 {summary['cold_p95_ms']} ms")
    print(f"warm: p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
