"""``codeglm generate [PROMPT]``: continue a prompt with any backend, streamed to stdout.

The prompt comes from the argument or, without one, from stdin. One sample streams to
stdout as it is generated; several (``--n``) are printed one after another, each under
a ``--- sample i`` header on stderr. Loading progress and errors go to stderr.

    codeglm generate "def fib(n):" --backend native:MODEL_DIR?dtype=int8 --max-tokens 64
    echo "def fib(n):" | codeglm generate --n 4 --temperature 0.8 --seed 1
"""

from __future__ import annotations

import argparse
import sys

from codeglm.backends import BACKEND_ENV, BackendError, GenerationRequest, SamplingParams, load_backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=None, help="the text to continue (default: read stdin)")
    parser.add_argument(
        "--backend",
        default=None,
        help=f"backend spec, e.g. native:MODEL_DIR, hf:MODEL_DIR, openai:URL#MODEL "
        f"(default: ${BACKEND_ENV} or the default model)",
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n", type=int, default=1, help="samples of the prompt (default 1)")
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt is None else args.prompt
    try:
        params = SamplingParams(
            max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            top_k=args.top_k, seed=args.seed,
        )
        request = GenerationRequest(prompt=prompt, params=params, n=args.n, stop=tuple(args.stop))
        backend = load_backend(args.backend, progress=True)
        try:
            if request.n == 1:
                for delta in backend.stream(request):
                    sys.stdout.write(delta)
                    sys.stdout.flush()
                sys.stdout.write("\n")
                return 0
            completions = backend.generate(request)
        finally:
            backend.close()
    except (BackendError, ValueError) as error:
        print(f"codeglm generate: {error}", file=sys.stderr)
        return 1
    for i, completion in enumerate(completions, start=1):
        print(f"--- sample {i} ({completion.finish_reason}, {completion.generated_tokens} tokens)", file=sys.stderr)
        sys.stderr.flush()
        print(completion.text)
    return 0
