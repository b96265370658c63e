"""``codeglm eval``: generate, execute, report, selfcheck, translate (and ``completion``, the
completion benchmark, when ``evals.completion_bench`` is present)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from evals.arguments import (
    add_data_arguments,
    add_execution_arguments,
    add_k_argument,
    add_progress_argument,
    add_sampling_arguments,
    concurrency_problem,
    executor_of,
    load_tasks_for,
    sampling_settings,
)
from evals.dataset import DatasetError, parse_languages
from evals.toolchains import ToolchainError, check_toolchain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", required=True)

    gen = sub.add_parser("generate", help="sample completions for HumanEval-X problems with a backend")
    gen.add_argument("--language", default="python,cpp,java,js,go,rust", help="comma-separated languages")
    add_sampling_arguments(gen, n=200, temperature=0.8)
    add_progress_argument(gen)
    gen.add_argument("-o", "--output", type=Path, required=True, help="samples file (JSON lines; appended to)")
    add_data_arguments(gen)

    ex = sub.add_parser("execute", help="build and run samples in sandboxes; write results.jsonl")
    ex.add_argument("samples", type=Path)
    ex.add_argument("-o", "--output", type=Path, required=True, help="results file (JSON lines)")
    add_execution_arguments(ex)
    add_progress_argument(ex)
    add_data_arguments(ex)

    rep = sub.add_parser(
        "report", help="pass@k from results.jsonl, or per language pair from a translation run directory"
    )
    rep.add_argument("results", type=Path, help="a results.jsonl file, or a `codeglm eval translate` run directory")
    add_k_argument(rep)
    rep.add_argument("--json", action="store_true", help="print one JSON object {language or pair: {pass@k: x}}")
    rep.add_argument("--plot", type=Path, help="also draw a bar chart to this PNG file (results files only)")
    add_data_arguments(rep)  # the dataset decides which task ids count

    sc = sub.add_parser("selfcheck", help="canonical solutions must pass, empty completions must fail")
    sc.add_argument("--language", default=None, help="comma-separated languages (default: all six)")
    add_execution_arguments(sc, timeout=15.0)
    add_progress_argument(sc)
    add_data_arguments(sc)

    # Here, not at the top, so that `codeglm eval --help` and the other subcommands do not
    # import these modules before they are needed (both defer their own heavy imports too).
    from evals import translation

    tr = sub.add_parser("translate", help="the HumanEval-X translation task: generate, execute, report per language pair")
    translation.add_arguments(tr)

    from evals import context_bench

    ctx = sub.add_parser("context", help="repository context: is the called definition in the prompt (no model needed)")
    context_bench.add_arguments(ctx)

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
    if command == "translate":
        # Deferred: each subcommand imports only what it runs.
        from evals import translation

        return translation.run(args)
    if command == "context":
        from evals import context_bench

        return context_bench.run(args)
    if command == "completion":
        from evals import completion_bench

        return int(completion_bench.run(args) or 0)
    raise AssertionError(command)



def _generate(args: argparse.Namespace) -> int:
    # Deferred: each subcommand imports only what it runs.
    from codeglm.backends import BackendError, ModelFilesError, load_backend
    from evals.generate import GenerateSettings, generate_samples

    problem = concurrency_problem(args)
    if problem is not None:
        print(f"codeglm eval generate: {problem}", file=sys.stderr)
        return 2
    languages = parse_languages(args.language)
    tasks = list(load_tasks_for(args, languages).values())
    if args.limit is not None:
        tasks = [t for t in tasks if t.number < args.limit]
    settings = GenerateSettings(**sampling_settings(args))
    try:
        backend = load_backend(args.backend)
        try:
            made = generate_samples(backend, tasks, settings, args.output, progress=not args.no_progress)
        finally:
            backend.close()
    except BackendError as exc:
        print(f"codeglm eval generate: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ModelFilesError) else 1  # a --backend that cannot load is a bad argument
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
    # Deferred: each subcommand imports only what it runs.
    from evals.execute import execute_file, read_samples

    if not args.samples.is_file():
        print(f"codeglm eval execute: no samples file {args.samples}", file=sys.stderr)
        return 1
    executor = executor_of(args, "codeglm eval execute")
    if executor is None:
        return 2
    samples, _ = read_samples(args.samples)
    languages = parse_languages({s.task_id.split("/")[0] for s in samples}) if samples else []
    # With Ray the programs run on the cluster's nodes: each checks its own toolchains.
    if args.executor == "local" and not _toolchains_ok(languages):
        return 1
    tasks = load_tasks_for(args, languages)
    summary = execute_file(
        args.samples, args.output, tasks, args.workers, args.timeout, not args.no_progress, executor=executor
    )
    print(
        f"execute: {summary.total} samples, {summary.executed} run now, {summary.reused} reused from "
        f"{args.output}, {summary.skipped_lines} malformed lines skipped, "
        f"{summary.unknown_tasks} samples of unknown task ids skipped, "
        f"{summary.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    # Deferred: each subcommand imports only what it runs.
    from evals.execute import read_results
    from evals.report import known_results, markdown, plot, result_languages, table_of, to_json

    if args.results.is_dir():
        return _report_translation(args)
    if not args.results.is_file():
        print(f"codeglm eval report: no results file {args.results}", file=sys.stderr)
        return 1
    results = list(read_results(args.results).values())
    known = load_tasks_for(args, result_languages(results))
    results = known_results(results, known, f"codeglm eval report: {args.results}")
    table, statuses, tasks = table_of(results, args.k)
    if not table:
        print(f"codeglm eval report: no results in {args.results}", file=sys.stderr)
        return 1
    print(to_json(table) if args.json else markdown(table, args.k, statuses, tasks))
    if args.plot:
        plot(table, args.k, args.plot)
        print(f"report: chart written to {args.plot}", file=sys.stderr)
    return 0


def _report_translation(args: argparse.Namespace) -> int:
    """A directory is a translation run: pass@k per language pair."""
    # Deferred: each subcommand imports only what it runs.
    from evals import translation

    if not translation.is_run_dir(args.results):
        print(
            f"codeglm eval report: {args.results} is a directory but not a translation run (no <src>-to-<tgt>/ "
            "inside); give a results.jsonl file or a `codeglm eval translate` run directory",
            file=sys.stderr,
        )
        return 1
    if args.plot:
        print("codeglm eval report: --plot draws a results file's languages; a translation run has no chart "
              "(use --json for its numbers)", file=sys.stderr)
        return 2
    return translation.print_report(args.results, args.k, args.json, "codeglm eval report")


def _selfcheck(args: argparse.Namespace) -> int:
    # Deferred: each subcommand imports only what it runs.
    from evals.selfcheck import print_table, selfcheck

    executor = executor_of(args, "codeglm eval selfcheck")
    if executor is None:
        return 2
    languages = parse_languages(args.language)
    if args.executor == "local" and not _toolchains_ok(languages):
        return 1
    tasks = list(load_tasks_for(args, languages).values())
    found, programs = selfcheck(tasks, args.workers, args.timeout, not args.no_progress, executor)
    print_table(found, programs)
    return 0 if all(d.expected for d in found) else 1
