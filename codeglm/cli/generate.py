"""``codeglm generate [PROMPT]``: continue a prompt with any backend, streamed to stdout.

The prompt is the argument or, when it is absent or ``-``, stdin. One sample streams
to stdout as it is generated; several (``--n``) are printed one after another, each
under a ``--- sample K/N (finish_reason, T tokens)`` line on stderr. Loading progress
and errors go to stderr; bad options are refused before the model is loaded.

    codeglm generate "def fib(n):" --backend native:MODEL_DIR?dtype=int8 --max-tokens 64
    echo "def fib(n):" | codeglm generate --n 4 --temperature 0.8 --seed 1 --stop '\n\n'
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from codeglm.backends import (
    Backend,
    BackendError,
    Completion,
    GenerationRequest,
    ModelFilesError,
    SamplingParams,
    load_backend,
)
from codeglm.backends.options import add_backend_argument, add_device_arguments, add_max_tokens_argument
from codeglm.inference.types import SEED_RANGE

# What ``--stop`` understands, so that ``--stop '\n\n'`` means two newlines.
STOP_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=None, help="the text to continue (absent or -: read stdin)")
    add_backend_argument(parser)
    add_max_tokens_argument(parser, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1] (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (default 0: all)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    parser.add_argument("--n", type=int, default=1, help="samples of the prompt (default 1)")
    parser.add_argument("--stop", action="append", default=[],
                        help=r"a stop string, repeatable; \n, \t and \\ are understood")
    add_device_arguments(parser)


def unescape_stop(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` in a ``--stop`` value as the characters they name."""
    return re.sub(r"\\([nt\\])", lambda m: STOP_ESCAPES[m.group(1)], text)


def read_prompt(argument: str | None, stdin: TextIO) -> str:
    """The prompt from the argument, or from ``stdin`` when it is absent or ``-``."""
    if argument is not None and argument != "-":
        prompt = argument
    else:
        if stdin.isatty():
            print("codeglm generate: reading the prompt from stdin (end it with Ctrl-D)", file=sys.stderr)
        prompt = stdin.read()
    if not prompt:
        raise ValueError("the prompt is empty: give it as the argument or on stdin")
    return prompt


def build_request(prompt: str, args: argparse.Namespace) -> GenerationRequest:
    """The request the options describe; ``ValueError`` names the first bad option."""
    problems = [
        message
        for bad, message in (
            (args.max_tokens < 0, f"--max-tokens must be >= 0, got {args.max_tokens}"),
            (not (math.isfinite(args.temperature) and args.temperature >= 0),
             f"--temperature must be a finite number >= 0, got {args.temperature}"),
            (not 0 < args.top_p <= 1, f"--top-p must be in (0, 1], got {args.top_p}"),
            (args.top_k < 0, f"--top-k must be >= 0, got {args.top_k}"),
            (args.n < 1, f"--n must be >= 1, got {args.n}"),
            (any(not s for s in args.stop), "--stop must not be empty"),
            (args.seed is not None and not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1],
             f"--seed must be from -2**63 to 2**63-1, got {args.seed}"),
        )
        if bad
    ]
    if problems:
        raise ValueError("; ".join(problems))
    params = SamplingParams(
        max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed,
    )
    stop = tuple(unescape_stop(s) for s in args.stop)
    return GenerationRequest(prompt=prompt, params=params, n=args.n, stop=stop)


def sample_header(index: int, total: int, completion: Completion) -> str:
    return f"--- sample {index}/{total} ({completion.finish_reason}, {completion.generated_tokens} tokens)"


def write_stream(deltas: Iterator[str], out: TextIO) -> None:
    """Write a stream's text as it arrives, then a newline."""
    for delta in deltas:
        out.write(delta)
        out.flush()
    out.write("\n")


def write_samples(completions: Sequence[Completion], out: TextIO, err: TextIO) -> None:
    for i, completion in enumerate(completions, start=1):
        print(sample_header(i, len(completions), completion), file=err, flush=True)
        print(completion.text, file=out, flush=True)


def generate(backend: Backend, request: GenerationRequest, out: TextIO, err: TextIO) -> None:
    if request.n == 1:
        write_stream(backend.stream(request), out)
    else:
        write_samples(backend.generate(request), out, err)


def run(args: argparse.Namespace) -> int:
    try:
        request = build_request(read_prompt(args.prompt, sys.stdin), args)
        backend = load_backend(args.backend, progress=True, device=args.device, dtype=args.dtype)
    except (BackendError, ValueError) as error:
        print(f"codeglm generate: {error}", file=sys.stderr)
        return 2 if isinstance(error, ModelFilesError) else 1  # a --backend that cannot load is a bad argument
    try:
        generate(backend, request, sys.stdout, sys.stderr)
    except BackendError as error:
        print(f"codeglm generate: {error}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    return 0


__all__ = ["add_arguments", "build_request", "read_prompt", "run", "unescape_stop"]
