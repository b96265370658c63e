"""Command-line arguments shared by ``codeglm eval`` and ``codeglm eval translate``.

Both sample from a backend, run samples in sandboxes and report pass@k; the options
for those steps are defined once here so their names, checks and help stay the same.
Defaults that differ per task (samples per problem, temperature) are parameters.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeglm.backends.options import add_backend_argument, add_max_tokens_argument
from evals.dataset import load_tasks

if TYPE_CHECKING:
    from evals.execute import JobRunner


def k_list(text: str) -> list[int]:
    """``--k 1,10,100`` as a list of positive integers."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k wants integers like 1,10,100, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def _number(
    convert: Callable[[str], float], ok: Callable[[float], bool], requirement: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then refuse values outside ``requirement``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"want a number {requirement}, got {text!r}") from None
        if not ok(value):  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, ">= 1")
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
positive_float = _number(float, lambda v: v > 0, "> 0")
non_negative_float = _number(float, lambda v: v >= 0, ">= 0")
probability = _number(float, lambda v: 0 < v <= 1, "in (0, 1]")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="directory with humaneval_<lang>.jsonl(.gz) (default: CODEGLM_DATA)"
    )
    parser.add_argument(
        "--no-patches", action="store_true", help="use the dataset as shipped, without the patch table"
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, *, n: int, temperature: float) -> None:
    """Backend, samples per problem, sampling settings, seed and problem limit."""
    add_backend_argument(parser)
    parser.add_argument("--n", type=positive_int, default=n, help=f"samples per problem (default {n})")
    parser.add_argument(
        "--batch-size", type=positive_int, default=20, help="samples per backend request (default 20)"
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=temperature,
        help=f"sampling temperature, 0 greedy (default {temperature})",
    )
    parser.add_argument(
        "--top-p", type=probability, default=0.95, help="nucleus sampling probability mass (default 0.95)"
    )
    parser.add_argument(
        "--top-k",
        type=non_negative_int,
        default=0,
        help="sample from the k likeliest tokens only (default 0: off)",
    )
    add_max_tokens_argument(parser, default=512, help="tokens per sample at most", type=positive_int)
    parser.add_argument(
        "--seed", type=int, default=None, help="base seed; each sample's seed derives from it"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help="backend requests in flight at once, for an openai: server (vLLM, TGI, llama.cpp, "
        "codeglm serve-api); the requests sent do not depend on it, only the order of the lines written (default 1)",
    )
    parser.add_argument(
        "--limit",
        type=non_negative_int,
        default=None,
        help="only problems numbered below N (the first N per language)",
    )


def load_tasks_for(args: argparse.Namespace, languages: list[str]) -> dict[str, Any]:
    """The tasks of ``languages`` from ``--data`` (patched unless ``--no-patches``); a
    problem with the dataset is said on stderr and its task skipped, not fatal."""

    tasks, problems = load_tasks(languages, args.data, patched=not args.no_patches)
    for problem in problems:
        print(f"dataset: {problem} (skipped)", file=sys.stderr)
    return tasks


def sampling_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``add_sampling_arguments`` defined, as keyword arguments for a
    settings dataclass (``GenerateSettings``, ``TranslationSettings``)."""
    return {
        "n": args.n,
        "batch_size": args.batch_size,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_tokens,
        "seed": args.seed,
        "concurrency": args.concurrency,
    }


EXECUTORS = ("local", "ray")

# Backends that serve several requests at once: a server. native: and hf: run the model in
# this process one request at a time (the model thread, a lock), so more requests in flight
# would only queue behind each other.
CONCURRENT_KINDS = ("openai",)


def concurrency_problem(args: argparse.Namespace) -> str | None:
    """Why ``--concurrency`` cannot be honoured with ``--backend``, or None.

    Asked before the backend loads. A backend string that does not parse (or no default)
    is left for ``load_backend`` to report."""
    from codeglm.backends import BackendError, default_backend_spec, parse_backend_spec

    if args.concurrency == 1:
        return None
    try:
        spec = parse_backend_spec(args.backend or default_backend_spec())
    except BackendError:
        return None
    if spec.kind in CONCURRENT_KINDS:
        return None
    return (
        f"--concurrency {args.concurrency} needs a backend that serves requests concurrently (openai:URL); "
        f"the {spec.kind} backend {spec} runs the model in this process one request at a time, so the "
        "requests would only queue. Use --concurrency 1, or serve the model with "
        f"`codeglm serve-api --backend {spec}` (it batches concurrent requests) and generate with "
        "--backend openai:http://127.0.0.1:PORT/v1"
    )


def add_execution_arguments(parser: argparse.ArgumentParser, *, timeout: float = 10.0) -> None:
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="parallel sandboxes (default: one per core; with --executor ray: the CPUs of the local Ray "
        "started when RAY_ADDRESS is unset, else a cap on the samples in flight)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where samples run: local (processes on this machine, the default) or ray (Ray tasks on the "
        "cluster at RAY_ADDRESS, else on a local Ray; one sandbox per Ray CPU; needs codeglm[ray])",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=timeout,
        help=f"wall-clock seconds per program run (default {timeout:g})",
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


def add_k_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--k", type=k_list, default=[1, 10, 100], help="comma-separated k for pass@k (default 1,10,100)"
    )


def executor_of(args: argparse.Namespace, command: str) -> JobRunner | None:
    """The job runner ``--executor`` names; None (said on stderr, exit status 2 for the
    caller) when it is ray and Ray is not installed."""
    # Deferred: the executors pull in the sandbox and, for ray, Ray itself.
    from evals.ray_executor import RayUnavailable, job_runner

    try:
        return job_runner(args.executor)
    except RayUnavailable as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None
