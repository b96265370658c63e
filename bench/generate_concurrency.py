"""``codeglm eval generate --concurrency N`` through the ``openai:`` backend: samples/s per N.

Two servers, both real HTTP on loopback:

- ``serve-api``: ``codeglm serve-api --backend native:DIR`` over a random-weight model with
  the 135M CodeGeeX shape of ``bench/generation.py`` (``--quick``: its small shape) and the
  CodeGeeX tokenizer; it batches requests that are in flight together, so this is what
  concurrency buys from a batching server on this machine's CPU. Random weights rarely end
  a sample early: every sample decodes about ``--max-tokens`` tokens. The sample sets of
  every N must be equal (seeded): a difference is an ERROR and the script exits 1.
- ``ideal``: a stand-in server that answers each request after a fixed ``--latency``
  seconds whatever else is in flight (a GPU server far from full). Its samples/s show what
  the harness itself can drive: request handling, the cut of each generation, the writes.

Each run generates ``--n`` samples for each of the first ``--limit`` problems (Python unless ``--language``) in
batches of ``--batch-size``, into a fresh file. The last line printed is one JSON object.

    python bench/generate_concurrency.py [--quick] [--concurrency 1,2,4,8] [--limit 8] [--n 8]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import FULL, QUICK, codegeex_model  # noqa: E402

from codeglm.backends import load_backend  # noqa: E402
from codeglm.model.tokenizer import load_tokenizer  # noqa: E402
from codeglm.paths import tokenizer_dir  # noqa: E402
from evals.dataset import load_tasks, parse_languages  # noqa: E402
from evals.generate import GenerateSettings, generate_samples  # noqa: E402
from evals.openai_stub import StubCompletionsServer  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve_api(model_dir: Path) -> tuple[subprocess.Popen, str]:
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "codeglm.cli", "serve-api", "--backend", f"native:{model_dir}",
         "--port", url.rsplit(":", 1)[1]],
        cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("generate_concurrency: serve-api did not start within 300 s")


class IdealServer(StubCompletionsServer):
    """Answers each completion request after a fixed ``latency`` seconds, whatever else is in flight."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        super().__init__("ideal")

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        time.sleep(self.latency)
        text = "    result = []\n    for x in range(10):\n        result.append(x)\n    return result\n\nprint(1)\n"
        choices = [{"index": i, "text": text, "finish_reason": "stop"} for i in range(body["n"])]
        return 200, {"object": "text_completion", "choices": choices}


def run(url: str, tasks: list, settings: GenerateSettings, workdir: Path) -> tuple[float, set]:
    """Seconds for one fresh generation run, and its (task_id, completion_id, generation) set."""
    output = workdir / f"samples-{settings.concurrency}-{time.monotonic_ns()}.jsonl"
    backend = load_backend(f"openai:{url}/v1?timeout=600")
    try:
        backend.model  # noqa: B018 - the first look-ups (model list, server kind) are not timed
        started = time.perf_counter()
        made = generate_samples(backend, tasks, settings, output, progress=False)
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    records = [json.loads(line) for line in output.read_text().splitlines()]
    if made != len(tasks) * settings.n or any("error" in r for r in records):
        raise SystemExit(f"generate_concurrency: ERROR: {made} samples, errors: "
                         f"{[r['error'] for r in records if 'error' in r][:3]}")
    return seconds, {(r["task_id"], r["completion_id"], r["generation"]) for r in records}


def time_serve_api(args: argparse.Namespace, levels: list[int], tasks: list, workdir: Path,
                   report: dict[str, Any]) -> bool:
    """Time each level against serve-api into ``report``; True when the sample sets differed."""
    failed = False
    model_dir = workdir / "model"
    torch.manual_seed(0)
    codegeex_model(QUICK if args.quick else FULL).save_pretrained(model_dir)
    load_tokenizer(tokenizer_dir()).save(model_dir)
    process, url = start_serve_api(model_dir)
    try:
        # Untimed and not compared: the first requests warm the server (kernels, prefix
        # cache) and, with a prefix cache hit later, may sample differently (see the docs).
        warm = GenerateSettings(n=args.n, batch_size=args.batch_size, temperature=0.8,
                                max_new_tokens=args.max_tokens, seed=1)
        run(url, tasks, warm, workdir)
        served: dict[str, float] = {}
        reference: set | None = None
        for level in levels:
            settings = GenerateSettings(n=args.n, batch_size=args.batch_size, temperature=0.8,
                                        max_new_tokens=args.max_tokens, seed=1, concurrency=level)
            seconds, samples = run(url, tasks, settings, workdir)
            served[str(level)] = round(len(samples) / seconds, 2)
            print(f"serve-api --concurrency {level}: {len(samples)} samples in {seconds:.1f} s, "
                  f"{len(samples) / seconds:.2f} samples/s", file=sys.stderr)
            if reference is None:
                reference = samples
            elif samples != reference:
                differ = sorted({(t, c) for t, c, _ in samples ^ reference})
                print(f"ERROR: --concurrency {level} gave other samples than --concurrency {levels[0]}: "
                      f"{len(differ)} of {len(samples)} differ, e.g. {differ[:6]}", file=sys.stderr)
                failed = True
        report["serve_api_samples_per_s"] = served
        report["serve_api_stats"] = httpx.get(f"{url}/stats", timeout=5).json()["batching"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small model shape")
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated N to time (default 1,2,4,8)")
    parser.add_argument("--language", default="python", help="comma-separated languages (default python)")
    parser.add_argument("--limit", type=int, default=8, help="problems per language (default 8)")
    parser.add_argument("--n", type=int, default=8, help="samples per problem (default 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per request (default 4)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per sample (default 32)")
    parser.add_argument("--latency", type=float, default=0.5, help="the ideal server's seconds per request")
    parser.add_argument("--skip-ideal", action="store_true", help="time serve-api only")
    parser.add_argument("--skip-serve-api", action="store_true", help="time the ideal server only")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops serve-api too (the finally blocks)
    levels = [int(n) for n in args.concurrency.split(",")]
    found, _ = load_tasks(parse_languages(args.language))
    tasks = [t for t in found.values() if t.number < args.limit]
    report: dict[str, Any] = {"problems": len(tasks), "n": args.n, "batch_size": args.batch_size,
                              "max_tokens": args.max_tokens, "shape": "quick" if args.quick else "135M"}
    failed = False
    with tempfile.TemporaryDirectory(prefix="generate-concurrency-") as tmp:
        workdir = Path(tmp)
        if not args.skip_serve_api:
            failed = time_serve_api(args, levels, tasks, workdir, report)
        if not args.skip_ideal:
            server = IdealServer(args.latency)
            ideal: dict[str, float] = {}
            try:
                for level in levels:
                    settings = GenerateSettings(n=args.n, batch_size=args.batch_size, seed=1, concurrency=level)
                    seconds, samples = run(server.url, tasks, settings, workdir)
                    ideal[str(level)] = round(len(samples) / seconds, 2)
                    print(f"ideal ({args.latency} s/request) --concurrency {level}: "
                          f"{len(samples) / seconds:.2f} samples/s", file=sys.stderr)
            finally:
                server.stop()
            report["ideal_latency_s"] = args.latency
            report["ideal_samples_per_s"] = ideal
    report["ok"] = not failed
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
