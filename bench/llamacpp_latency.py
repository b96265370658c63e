"""Keystroke-to-suggestion time through llama.cpp's server, beside this project's engine.

Builds the small random Llama of the tests (tests/_llamacpp_fixtures.py: hidden 64, two
layers, the GPT-2 BPE vocabulary plus Qwen's FIM tokens), writes it as an f32 GGUF,
starts ``python -m llama_cpp.server`` on a loopback port, and replays a typing session
through the language server with bench/lsp_latency.py twice: ``--backend native:DIR``
and ``--backend openai:URL#MODEL`` (llama.cpp). The session types a comment line (random
weights write words, which the pipeline shows only where words are valid: in a comment;
in code every answer would be dropped and nothing would be timed but the drop). Each pass
first checks that the language server's completions equal the in-process pipeline's
(lsp_latency does); before timing, this script also checks that the two backends complete
the line alike at every sixth character (same weights, greedy), so both columns time the
same work. Prints both runs and the ratios llama.cpp / native of the p50 and p95.

    python bench/llamacpp_latency.py [--max-tokens 32] [--chars N] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import lsp_latency  # noqa: E402 (bench/, beside this file)
from _llamacpp_fixtures import LlamaCppServer, as_llama_cpp_python_decodes, llamacpp_missing, make_llama_dir  # noqa: E402 (tests/)

# lsp_latency splits a session at the first newline after its first third: this prefix's
# last line is long enough that the typed part is the comment line alone.
SESSION_PREFIX = "import math\n\nRADII = [0.5, 1.0, 2.5, 4.0, 10.0]  # metres, as measured on the site last spring\n"
SESSION_TYPED = "# the area of a circle of radius r, in square metres"


def same_completions(native_spec: str, llama_spec: str, max_tokens: int) -> bool:
    """Whether both backends complete the typed line alike, cursor at every sixth character."""
    from codeglm.backends import load_backend
    from codeglm.completion.pipeline import CompletionRequest, complete

    text = SESSION_PREFIX + SESSION_TYPED
    cuts = list(range(len(SESSION_PREFIX) + 6, len(text) + 1, 6))
    answers: dict[str, list[str]] = {}
    for spec in (native_spec, llama_spec):
        backend = load_backend(spec)
        answers[spec] = []
        for cut in cuts:
            lines = text[:cut].split("\n")
            request = CompletionRequest(text=text[:cut], line=len(lines) - 1, character=len(lines[-1]),
                                        language_id="python", path="bench.py", max_new_tokens=max_tokens)
            result = complete(request, backend)
            answers[spec].append(result.text if result is not None else "")
        backend.close()
    # Bytes that are not UTF-8 are U+FFFD in the engine's text, dropped by llama-cpp-python.
    if [as_llama_cpp_python_decodes(t) for t in answers[native_spec]] != answers[llama_spec]:
        print(f"ERROR: native and llama.cpp complete differently; no latency is reported\n"
              f"  native:    {answers[native_spec]}\n  llama.cpp: {answers[llama_spec]}")
        return False
    print(f"check: native and llama.cpp give the same {len(cuts)} completions "
          f"({sum(map(bool, answers[native_spec]))} non-empty)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=32, help="codeglm.maxTokens (default 32)")
    parser.add_argument("--chars", type=int, default=0, help="type only this many characters (0: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of each engine: llama.cpp's --n_threads and the native language server's "
                             "OMP_NUM_THREADS (default 1)")
    args = parser.parse_args(argv)
    # The same number of threads for both engines; on a shared machine two-thread OpenMP
    # teams suffer from other jobs far more than one thread does, which would time that.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    missing = llamacpp_missing()
    if missing:
        raise SystemExit(f"llamacpp_latency: {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        from codeglm.model.gguf_export import write_gguf

        directory = make_llama_dir(Path(tmp) / "model")
        gguf = write_gguf(directory, Path(tmp) / "model-f32.gguf").path
        session = Path(tmp) / "session.py"
        session.write_text(SESSION_PREFIX + SESSION_TYPED, encoding="utf-8")
        server = LlamaCppServer(gguf, Path(tmp) / "server.log", threads=args.threads)
        try:
            specs = {"native": f"native:{directory}", "llama.cpp": server.backend_spec("retries=0&timeout=60")}
            if not same_completions(specs["native"], specs["llama.cpp"], args.max_tokens):
                return 1
            results = {}
            for name, spec in specs.items():
                run_args = argparse.Namespace(
                    backend=spec, session=str(session), language="python", chars=args.chars, max_tokens=args.max_tokens,
                    load_timeout=300.0, verbose=False,
                )
                results[name] = asyncio.run(lsp_latency.run(run_args))
                print(f"{name}: warm p50 {results[name]['p50_ms']} ms, p95 {results[name]['p95_ms']} ms "
                      f"(cold p50 {results[name]['cold_p50_ms']} ms) over {results[name]['requests']} keystrokes, "
                      f"{results[name]['warm_non_empty']} non-empty")
        finally:
            server.stop()
    native, llama = results["native"], results["llama.cpp"]
    ratios = {key: round(llama[key] / native[key], 2) for key in ("p50_ms", "p95_ms", "cold_p50_ms")}
    print(f"llama.cpp / native: warm p50 {ratios['p50_ms']}x, p95 {ratios['p95_ms']}x, cold p50 {ratios['cold_p50_ms']}x")
    print(json.dumps({"native": native, "llama.cpp": llama, "ratio_llamacpp_over_native": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
