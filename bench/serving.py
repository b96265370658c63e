"""Decode speed through every door: the engine in this process, ``codeglm serve-api`` and
the language server, on the same random-weight model.

The model has the 135M CodeGeeX shape of ``bench/generation.py`` (``--quick``: its small
shape), saved to a temporary directory with the CodeGeeX tokenizer. Four paths, greedy:

- ``engine``: ``native:DIR`` in this process, one prompt;
- ``serve_api``: ``codeglm serve-api --backend native:DIR`` in a subprocess, the same
  prompt over HTTP (``/v1/completions``, not streamed);
- ``pipeline``: the completion pipeline in this process (``codeglm complete``'s path) on a
  Python document, cursor in a function body;
- ``lsp``: ``python -m lsp --backend native:DIR`` over stdio, the same document and cursor
  (``textDocument/inlineCompletion``, ``codeglm.maxTokens`` set by
  ``workspace/didChangeConfiguration``).

Each path is timed client side for a 1-token and an N-token request; decode speed is
``decode steps / (T_N - T_1)``: the prompt's prefill (a prefix-cache hit after the first
request) and each door's per-request costs are in both and cancel. Decode steps are the
engine's own count: ``Completion.generated_tokens - 1``, serve-api's ``usage`` and
the language server's ``codeglm/stats`` request. Rounds interleave the paths, so each
ratio compares moments of the same machine; each figure is the best of the rounds.

Before anything is timed, each door's answer is checked against its reference path
(serve-api's text and token count against the engine's, the language server's
completion and decode steps against the pipeline's); a difference is an ERROR, no
figure is printed and the script exits 1.

Target (issue #18, item 4): serve-api and the language server decode within 10% of
the in-process path, ratio >= 0.9. The last line printed is one JSON object.

    python bench/serving.py [--quick] [--new-tokens N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
from lsprotocol import types
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import FULL, QUICK, codegeex_model  # noqa: E402

from codeglm.backends import GenerationRequest, SamplingParams, load_backend  # noqa: E402
from codeglm.completion.pipeline import CompletionRequest, complete  # noqa: E402
from codeglm.model.tokenizer import load_tokenizer  # noqa: E402
from codeglm.paths import tokenizer_dir  # noqa: E402

PROMPT = "def fibonacci(n):\n    " * 6
DOCUMENT = (
    "import math\n\n\n"
    "def circle_area(radius):\n"
    "    if radius < 0:\n"
    "        raise ValueError('negative radius')\n"
    "    return math.pi * radius * radius\n\n\n"
    "def sphere_volume(radius):\n"
    "    "
)
RATIO_TARGET = 0.9


@dataclass(frozen=True)
class Answer:
    seconds: float
    decode_steps: int
    text: str


Door = Callable[[int], Awaitable[Answer]]


def save_model(directory: Path, quick: bool) -> None:
    torch.manual_seed(0)
    codegeex_model(QUICK if quick else FULL).save_pretrained(directory)
    load_tokenizer(tokenizer_dir()).save(directory)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeApi:
    def __init__(self, backend: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = asyncio.subprocess.Process  # set in start
        self.command = [sys.executable, "-m", "codeglm.cli", "serve-api", "--backend", backend, "--port", port]
        self.client = httpx.AsyncClient(timeout=300)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(  # type: ignore[assignment]
            *self.command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if (await self.client.get(f"{self.url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.3)
        raise SystemExit("serving: serve-api did not start within 300 s")

    async def complete(self, tokens: int) -> Answer:
        body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0}
        started = time.perf_counter()
        response = await self.client.post(f"{self.url}/v1/completions", json=body)
        seconds = time.perf_counter() - started
        response.raise_for_status()
        data = response.json()
        return Answer(seconds, data["usage"]["completion_tokens"] - 1, data["choices"][0]["text"])

    async def stop(self) -> None:
        await self.client.aclose()
        self.process.terminate()  # type: ignore[call-arg]
        await self.process.wait()  # type: ignore[call-arg]


class LanguageServer:
    def __init__(self, backend: str, document: Path) -> None:
        self.backend = backend
        self.uri = document.as_uri()
        self.client = LanguageClient("codeglm-bench-serving", "1")
        self.version = 1
        self.max_tokens: int | None = None
        self.ready = asyncio.Event()
        self.state = ""

        @self.client.feature("codeglm/status")
        def on_status(params: Any) -> None:
            self.state = params.get("state") if isinstance(params, dict) else getattr(params, "state", "")
            if self.state in ("ready", "error"):
                self.ready.set()

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: types.LogMessageParams) -> None:
            pass  # the server's log: not needed here

    async def start(self) -> None:
        await self.client.start_io(sys.executable, "-m", "lsp", "--log-level", "warning", "--backend", self.backend)
        await self.client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities()))
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), timeout=300)
        if self.state != "ready":
            raise SystemExit("serving: the language server could not load the model")
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=self.uri, language_id="python", version=1, text=DOCUMENT)))

    async def complete(self, tokens: int) -> Answer:
        if tokens != self.max_tokens:
            self.client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(settings={"codeglm": {"maxTokens": tokens}}))
            self.max_tokens = tokens
        # A new version of the same text: the server's answer cache cannot serve it, the
        # engine's prefix cache can (as for the other paths).
        self.version += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=DOCUMENT)]))
        lines = DOCUMENT.split("\n")
        started = time.perf_counter()
        result = await self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri),
            position=types.Position(line=len(lines) - 1, character=len(lines[-1])),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        seconds = time.perf_counter() - started
        stats = await self.client.protocol.send_request_async("codeglm/stats", None)
        last = stats["lastGeneration"] if isinstance(stats, dict) else stats.lastGeneration
        steps = last["decode_steps"] if isinstance(last, dict) else last.decode_steps
        items = list(result.items if isinstance(result, types.InlineCompletionList) else (result or []))
        text = "" if not items else (items[0].insert_text if isinstance(items[0].insert_text, str)
                                     else items[0].insert_text.value)
        return Answer(seconds, int(steps), text)

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


def in_process_paths(backend_spec: str) -> tuple[Door, Door]:
    backend = load_backend(backend_spec)

    def engine(tokens: int) -> Answer:
        started = time.perf_counter()
        [completion] = backend.generate(GenerationRequest(PROMPT, SamplingParams(max_new_tokens=tokens, temperature=0)))
        return Answer(time.perf_counter() - started, completion.generated_tokens - 1, completion.text)

    def pipeline(tokens: int) -> Answer:
        lines = DOCUMENT.split("\n")
        request = CompletionRequest(text=DOCUMENT, line=len(lines) - 1, character=len(lines[-1]),
                                    language_id="python", path="bench.py", max_new_tokens=tokens)
        started = time.perf_counter()
        result = complete(request, backend)
        seconds = time.perf_counter() - started
        stats = backend.last_generation()  # type: ignore[attr-defined]
        return Answer(seconds, int(stats["decode_steps"]), result.text if result is not None else "")

    async def engine_door(tokens: int) -> Answer:
        return await asyncio.to_thread(engine, tokens)

    async def pipeline_door(tokens: int) -> Answer:
        return await asyncio.to_thread(pipeline, tokens)

    return engine_door, pipeline_door


def check(name: str, got: Answer, reference: Answer, reference_name: str) -> bool:
    if (got.text, got.decode_steps) != (reference.text, reference.decode_steps):
        print(f"ERROR: {name} answered {got.text!r} ({got.decode_steps} decode steps), {reference_name} "
              f"{reference.text!r} ({reference.decode_steps}); no figure is reported")
        return False
    print(f"check: {name} equals {reference_name} ({got.decode_steps} decode steps, {len(got.text)} characters)")
    return True


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as directory:
        model_dir = Path(directory, "model")
        save_model(model_dir, args.quick)
        spec = f"native:{model_dir}"
        engine, pipeline = in_process_paths(spec)
        api = ServeApi(spec)
        lsp = LanguageServer(spec, Path(directory, "bench.py"))
        await api.start()
        await lsp.start()
        try:
            n = args.new_tokens
            checks = [
                check("serve-api", await api.complete(n), await engine(n), "the engine"),
                check("the language server", await lsp.complete(n), await pipeline(n), "the pipeline"),
            ]
            if not all(checks):
                return None
            doors: dict[str, Door] = {"engine": engine, "serve_api": api.complete, "pipeline": pipeline,
                                      "lsp": lsp.complete}
            best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in doors}
            steps: dict[str, int] = {}
            for _ in range(args.rounds):
                for name, door in doors.items():
                    one = await door(1)
                    full = await door(n)
                    best[name][0] = min(best[name][0], one.seconds)
                    best[name][1] = min(best[name][1], full.seconds)
                    steps[name] = full.decode_steps - one.decode_steps
        finally:
            await lsp.stop()
            await api.stop()
    for name in ("pipeline", "lsp"):
        if steps[name] < 8:
            print(f"ERROR: the {name} path's completions ended after {steps[name]} decode steps: too few to time")
            return None
    speed = {name: steps[name] / (best[name][1] - best[name][0]) for name in doors}
    return {
        "shape": "quick" if args.quick else "codegeex_135m",
        "new_tokens": n,
        "rounds": args.rounds,
        "decode_steps": steps,
        "engine_decode_tok_s": round(speed["engine"], 1),
        "serve_api_decode_tok_s": round(speed["serve_api"], 1),
        "pipeline_decode_tok_s": round(speed["pipeline"], 1),
        "lsp_decode_tok_s": round(speed["lsp"], 1),
        "serve_api_ratio": round(speed["serve_api"] / speed["engine"], 3),
        "lsp_ratio": round(speed["lsp"] / speed["pipeline"], 3),
        "first_token_ms": {name: round(best[name][0] * 1000, 1) for name in doors},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small shape (smoke run)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens of the long request (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the four paths, best taken (default 5)")
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args))
    if summary is None:
        return 1
    for door, ratio_key, base in (("serve_api", "serve_api_ratio", "engine"), ("lsp", "lsp_ratio", "pipeline")):
        verdict = "met" if summary[ratio_key] >= RATIO_TARGET else "MISSED"
        print(f"{door}: {summary[door + '_decode_tok_s']} tok/s decode, {base} in-process "
              f"{summary[base + '_decode_tok_s']} tok/s: ratio {summary[ratio_key]} "
              f"(target >= {RATIO_TARGET}: {verdict})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
