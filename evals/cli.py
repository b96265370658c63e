"""``codeglm eval``: generate, execute, report, selfcheck (and ``completion``, the completion
benchmark, when ``evals.completion_bench`` is present)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from evals.dataset import DatasetError, load_tasks, parse_languages
from evals.toolchains import ToolchainError, check_toolchain


def _common_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="directory with humaneval_<lang>.jsonl(.gz) (default: CODEGLM_DATA)")
    parser.add_argument("--no-patches", action="store_true", help="use the dataset as shipped, without the patch table")


def _ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k wants integers like 1,10,100, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError("--k values must be >= 1")
    return ks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", required=True)

    gen = sub.add_parser("generate", help="sample completions for HumanEval-X problems with a backend")
    gen.add_argument("--backend", default=None, help="backend spec (see codeglm.backends.load_backend)")
    gen.add_argument("--language", default="python,cpp,java,js,go,rust", help="comma-separated languages")
    gen.add_argument("--n", type=int, default=200, help="samples per problem")
    gen.add_argument("--batch-size", type=int, default=20, help="samples per backend request")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--limit", type=int, default=None, help="only the first N problems per language")
    gen.add_argument("--no-progress", action="store_true")
    gen.add_argument("-o", "--output", type=Path, required=True)
    _common_data(gen)

    ex = sub.add_parser("execute", help="build and run samples in sandboxes; write results.jsonl")
    ex.add_argument("samples", type=Path)
    ex.add_argument("-o", "--output", type=Path, required=True)
    ex.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: one per core)")
    ex.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds per program run")
    ex.add_argument("--no-progress", action="store_true")
    _common_data(ex)

    rep = sub.add_parser("report", help="pass@k from results.jsonl")
    rep.add_argument("results", type=Path)
    rep.add_argument("--k", type=_ks, default=[1, 10, 100])
    rep.add_argument("--json", action="store_true", help="print one JSON object {language: {pass@k: x}}")
    rep.add_argument("--plot", type=Path, help="also draw a bar chart to this PNG file")

    sc = sub.add_parser("selfcheck", help="canonical solutions must pass, empty completions must fail")
    sc.add_argument("--language", default=None, help="comma-separated languages (default: all six)")
    sc.add_argument("--workers", type=int, default=None)
    sc.add_argument("--timeout", type=float, default=15.0)
    sc.add_argument("--no-progress", action="store_true")
    _common_data(sc)

    # The completion benchmark lives in its own module (another area); register it when present.
    if importlib.util.find_spec("evals.completion_bench") is not None:
        from evals import completion_bench

        bench = sub.add_parser("completion", help="completion benchmark")
        completion_bench.add_arguments(bench)


def run(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except (DatasetError, ToolchainError, OSError) as exc:
        print(f"codeglm eval: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    command = args.eval_command
    if command == "generate":
        return _generate(args)
    if command == "execute":
        return _execute(args)
    if command == "report":
        return _report(args)
    if command == "selfcheck":
        return _selfcheck(args)
    if command == "completion":
        from evals import completion_bench

        return int(completion_bench.run(args) or 0)
    raise AssertionError(command)


def _load(languages: list[str], args: argparse.Namespace) -> dict:
    tasks, problems = load_tasks(languages, args.data, patched=not args.no_patches)
    for problem in problems:
        print(f"dataset: {problem} (skipped)", file=sys.stderr)
    return tasks


def _generate(args: argparse.Namespace) -> int:
    from codeglm.backends.base import BackendError
    from evals.generate import GenerateSettings, generate_samples

    if args.n < 1 or args.batch_size < 1:
        print("codeglm eval generate: --n and --batch-size must be >= 1", file=sys.stderr)
        return 2
    languages = parse_languages(args.language)
    tasks = list(_load(languages, args).values())
    if args.limit is not None:
        tasks = [t for t in tasks if t.number < args.limit]
    try:
        from codeglm.backends import load_backend  # provided by the backends work
    except ImportError:
        print("codeglm eval generate: no backend loader (codeglm.backends.load_backend) in this install", file=sys.stderr)
        return 1
    settings = GenerateSettings(
        n=args.n,
        batch_size=args.batch_size,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    try:
        backend = load_backend(args.backend)
        try:
            made = generate_samples(backend, tasks, settings, args.output, progress=not args.no_progress)
        finally:
            backend.close()
    except BackendError as exc:
        print(f"codeglm eval generate: {exc}", file=sys.stderr)
        return 1
    print(f"generate: {made} new samples in {args.output}", file=sys.stderr)
    return 0


def _toolchains_ok(languages: list[str]) -> bool:
    ok = True
    for lang in languages:
        problem = check_toolchain(lang)
        if problem:
            print(f"codeglm eval: {lang}: {problem}", file=sys.stderr)
            ok = False
    return ok


def _execute(args: argparse.Namespace) -> int:
    from evals.execute import execute_file, read_samples

    if not args.samples.is_file():
        print(f"codeglm eval execute: no samples file {args.samples}", file=sys.stderr)
        return 1
    samples, _ = read_samples(args.samples)
    languages = parse_languages({s.task_id.split("/")[0] for s in samples}) if samples else []
    if not _toolchains_ok(languages):
        return 1
    tasks = _load(languages, args)
    summary = execute_file(
        args.samples, args.output, tasks, args.workers or os.cpu_count(), args.timeout, not args.no_progress
    )
    print(
        f"execute: {summary.total} samples, {summary.executed} run now, {summary.reused} reused from "
        f"{args.output}, {summary.skipped_lines} malformed lines skipped, {summary.unknown_tasks} unknown tasks, "
        f"{summary.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from evals.report import load_table, markdown, plot, to_json

    if not args.results.is_file():
        print(f"codeglm eval report: no results file {args.results}", file=sys.stderr)
        return 1
    table, statuses, tasks = load_table(args.results, args.k)
    if not table:
        print(f"codeglm eval report: no results in {args.results}", file=sys.stderr)
        return 1
    print(to_json(table) if args.json else markdown(table, args.k, statuses, tasks))
    if args.plot:
        plot(table, args.k, args.plot)
        print(f"report: chart written to {args.plot}", file=sys.stderr)
    return 0


def _selfcheck(args: argparse.Namespace) -> int:
    from evals.selfcheck import print_table, selfcheck

    languages = parse_languages(args.language)
    if not _toolchains_ok(languages):
        return 1
    tasks = list(_load(languages, args).values())
    found, programs = selfcheck(tasks, args.workers, args.timeout, not args.no_progress)
    print_table(found, programs)
    return 0 if all(d.expected for d in found) else 1
