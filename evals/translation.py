"""The HumanEval-X translation task: every ordered pair of the six languages.

Prompts are exactly the reference's (``read_translation_dataset`` in the CodeGeeX
release)::

    code translation
    {Src}:
    {source declaration}
    {source canonical solution, right-stripped}
    {Tgt}:
    {target declaration}

with ``Src``/``Tgt`` among Python, C++, Java, JavaScript, Go, Rust. The model continues
the target's declaration; the generation is cut where that function is complete
(``evals.truncation.truncate_generation``) and judged by the target's tests: the
program is the target's declaration + generation + test, assembled and run by the
harness (``evals.assemble`` / ``evals.execute``) as for the generation task.

Layout of a run directory: ``DIR/{src}-to-{tgt}/samples.jsonl`` (task ids are the
target's, e.g. ``CPP/3``; ``source_task_id`` names the source) and
``DIR/{src}-to-{tgt}/results.jsonl``. ``report`` gives pass@k per pair.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

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
from evals.dataset import LANGUAGES, DatasetError, Task, language_id, parse_languages
from evals.generate import GenerateSettings

if TYPE_CHECKING:
    from codeglm.backends.base import Completion

PAIR_SEPARATOR = "-to-"


@dataclass(frozen=True)
class Pair:
    source: str
    target: str

    @property
    def name(self) -> str:
        return f"{self.source}{PAIR_SEPARATOR}{self.target}"

    @property
    def title(self) -> str:
        return f"{LANGUAGES[self.source].display_name} -> {LANGUAGES[self.target].display_name}"


# A report row: the pair, how many problems have results, {"pass@k": value}.
Row = tuple[Pair, int, dict[str, float]]


def all_pairs(languages: Iterable[str] | None = None) -> list[Pair]:
    """Every ordered pair of different languages (30 for the six)."""
    langs = parse_languages(list(languages) if languages is not None else None)
    return [Pair(s, t) for s in langs for t in langs if s != t]


def parse_pairs(spec: str | None) -> list[Pair]:
    """``"python-to-cpp,java-to-go"`` (or ``python:cpp``); None or ``all`` for all 30."""
    if spec is None or spec.strip() in ("", "all"):
        return all_pairs()
    pairs = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, target = item.partition(PAIR_SEPARATOR) if PAIR_SEPARATOR in item else item.partition(":")
        if not sep:
            raise DatasetError(f"bad pair {item!r}: write SOURCE-to-TARGET, e.g. python-to-cpp")
        pair = Pair(language_id(source), language_id(target))
        if pair.source == pair.target:
            raise DatasetError(f"bad pair {item!r}: source and target are the same language")
        pairs.append(pair)
    return pairs


def source_code(task: Task) -> str:
    """The source side of the prompt: declaration + canonical solution (as the reference)."""
    return task.declaration + "\n" + task.canonical_solution.rstrip()


def prompt_for(source_task: Task, target_task: Task) -> str:
    """The reference's translation prompt for one problem."""
    from codeglm.translation.prompts import translation_prompt  # tree-sitter and all: only when prompting

    return translation_prompt(
        LANGUAGES[source_task.language].display_name,
        source_code(source_task),
        LANGUAGES[target_task.language].display_name,
        target_task.declaration,
    )


def scoring_task(target_task: Task) -> Task:
    """The target task as the harness should assemble a translation of it.

    A translation continues the target's *declaration* (no docstring), so that is the
    text before the generation: ``prompt`` becomes the declaration (Rust: the harness
    already puts the declaration first and its prompt is only the doc comment).
    """
    if target_task.language == "rust":
        return replace(target_task, prompt="")
    return replace(target_task, prompt=target_task.declaration)


def generation_prefix(target_task: Task) -> str:
    """The text the generation continues in the assembled program (for truncation)."""
    return target_task.declaration


@dataclass(frozen=True)
class TranslationSettings(GenerateSettings):
    """Generation settings with the translation task's defaults."""

    n: int = 1
    temperature: float = 0.2


def _by_number(tasks: dict[str, Task], language: str) -> dict[int, Task]:
    return {t.number: t for t in tasks.values() if t.language == language}


def generate_pair(
    backend: object,
    pair: Pair,
    tasks: dict[str, Task],
    settings: TranslationSettings,
    output: Path,
    limit: int | None = None,
    progress: bool = True,
) -> int:
    """Append samples for one pair until each problem has ``settings.n``; returns how many were made."""
    # Deferred: generating and executing pull in the backends, tree-sitter and the toolchains; a report needs none.
    from evals.batches import Batch, plan_batches, run_batches
    from evals.generate import Answer, ask_batch, batch_lines, existing_ids
    from evals.truncation import truncate_generation

    sources, targets = _by_number(tasks, pair.source), _by_number(tasks, pair.target)
    numbers = sorted(set(sources) & set(targets))
    if limit is not None:
        numbers = [n for n in numbers if n < limit]
    present = existing_ids(output)
    prompts = {number: prompt_for(sources[number], targets[number]) for number in numbers}
    batches = [
        batch
        for number in numbers
        for batch in plan_batches(
            targets[number].task_id, number, settings.n, settings.batch_size,
            present.get(targets[number].task_id, set()),
        )
    ]
    left = {number: sum(1 for b in batches if b.number == number) for number in numbers}
    output.parent.mkdir(parents=True, exist_ok=True)
    made = 0

    def ask(batch: Batch) -> Answer:
        return ask_batch(backend, batch, prompts[batch.number], settings, label=f"{pair.name} {batch.number}")

    with open(output, "a", encoding="utf-8") as handle:
        for batch, answer in run_batches(batches, ask, settings.concurrency):
            source, target, prompt = sources[batch.number], targets[batch.number], prompts[batch.number]

            def line(
                completion_id: int, completion: Completion, source: Task = source, target: Task = target,
                prompt: str = prompt,
            ) -> dict:
                text = truncate_generation(pair.target, generation_prefix(target), completion.text)
                return {"task_id": target.task_id, "completion_id": completion_id, "source_task_id": source.task_id,
                        "prompt": prompt, "generation": text}

            lines = batch_lines(batch, answer, line)
            handle.write("".join(lines))
            handle.flush()
            made += len(lines)
            left[batch.number] -= 1
            if progress and not left[batch.number]:
                print(f"translate {pair.name}: {target.task_id} done", file=sys.stderr)
    return made


def scoring_tasks(tasks: dict[str, Task]) -> dict[str, Task]:
    """Every task rewritten for scoring translations into its language."""
    return {task_id: scoring_task(task) for task_id, task in tasks.items()}


def pair_dirs(run_dir: Path) -> list[tuple[Pair, Path]]:
    """The pair directories of a run, in table order."""
    found = []
    for pair in all_pairs():
        path = run_dir / pair.name
        if path.is_dir():
            found.append((pair, path))
    return found


def report_rows(run_dir: Path, ks: list[int]) -> list[Row]:
    """(pair, problems, {pass@k: value}) for every pair with results."""
    # Deferred: generating and executing pull in the backends, tree-sitter and the toolchains; a report needs none.
    from evals.execute import read_results
    from evals.metrics import count_per_task, pass_at_k_table

    rows = []
    for pair, path in pair_dirs(run_dir):
        results_path = path / "results.jsonl"
        if not results_path.is_file():
            continue
        results = list(read_results(results_path).values())
        counts = count_per_task((r.task_id, r.passed) for r in results)
        if not counts:
            continue
        table = pass_at_k_table(counts, ks)
        rows.append((pair, len(counts), table.get("overall", next(iter(table.values())))))
    return rows


def report_markdown(run_dir: Path, ks: list[int]) -> str:
    return rows_markdown(report_rows(run_dir, ks), ks)


def rows_markdown(rows: list[Row], ks: list[int]) -> str:
    """| pair | problems | pass@k ... | with "n/a" where k exceeds a problem's samples."""
    columns = [f"pass@{k}" for k in sorted(set(ks))]
    lines = ["| pair | problems | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for pair, problems, row in rows:
        cells = [f"{100 * row[c]:.2f}%" if c in row else "n/a" for c in columns]
        lines.append(f"| {pair.title} | {problems} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> str:
    """``{"python-to-cpp": {"pass@1": x, ...}, ...}``."""
    return json.dumps({pair.name: row for pair, _, row in rows})


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a translation run directory (has ``<src>-to-<tgt>`` subdirectories)."""
    return path.is_dir() and bool(pair_dirs(path))


def print_report(run_dir: Path, ks: list[int], as_json: bool, command: str) -> int:
    """Print the per-pair pass@k of ``run_dir`` (markdown or JSON); 1 with a message when it has none."""
    if not is_run_dir(run_dir):
        print(f"{command}: {run_dir} is not a translation run directory (no <src>-to-<tgt>/ inside)", file=sys.stderr)
        return 1
    rows = report_rows(run_dir, ks)
    if not rows:
        print(
            f"{command}: no results under {run_dir}; run `codeglm eval translate execute {run_dir}` first",
            file=sys.stderr,
        )
        return 1
    print(rows_json(rows) if as_json else rows_markdown(rows, ks))
    return 0


# --- ``codeglm eval translate`` ----------------------------------------------------------

COMMAND = "codeglm eval translate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="translate_command", required=True)
    gen = sub.add_parser("generate", help="sample translations for every pair with a backend")
    gen.add_argument("--pairs", default=None, help="e.g. python-to-cpp,java-to-go (default: all 30)")
    add_sampling_arguments(gen, n=1, temperature=0.2)
    add_progress_argument(gen)
    gen.add_argument("-o", "--output", type=Path, required=True, help="run directory (one subdirectory per pair)")
    add_data_arguments(gen)
    ex = sub.add_parser("execute", help="run the target language's tests on every pair's samples")
    ex.add_argument("run_dir", type=Path)
    add_execution_arguments(ex)
    add_progress_argument(ex)
    add_data_arguments(ex)
    rep = sub.add_parser("report", help="pass@k per pair")
    rep.add_argument("run_dir", type=Path)
    add_k_argument(rep)
    rep.add_argument("--json", action="store_true", help="print one JSON object {pair: {pass@k: x}}")


def run(args: argparse.Namespace) -> int:
    try:
        if args.translate_command == "generate":
            return _generate(args)
        if args.translate_command == "execute":
            return _execute(args)
        return print_report(args.run_dir, args.k, args.json, COMMAND)
    except (DatasetError, OSError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 1



def _generate(args: argparse.Namespace) -> int:
    # Deferred: generating and executing pull in the backends, tree-sitter and the toolchains; a report needs none.
    from codeglm.backends import BackendError, load_backend

    problem = concurrency_problem(args)
    if problem is not None:
        print(f"{COMMAND}: {problem}", file=sys.stderr)
        return 2
    pairs = parse_pairs(args.pairs)
    tasks = load_tasks_for(args, sorted({p.source for p in pairs} | {p.target for p in pairs}))
    settings = TranslationSettings(**sampling_settings(args))
    try:
        backend = load_backend(args.backend)
    except (BackendError, ValueError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 1
    try:
        for pair in pairs:
            output = args.output / pair.name / "samples.jsonl"
            made = generate_pair(backend, pair, tasks, settings, output, args.limit, not args.no_progress)
            print(f"translate {pair.name}: {made} new samples", file=sys.stderr)
    except BackendError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    return 0


def _execute(args: argparse.Namespace) -> int:
    # Deferred: generating and executing pull in the backends, tree-sitter and the toolchains; a report needs none.
    from evals.execute import execute_file
    from evals.toolchains import check_toolchain

    found = [(pair, path) for pair, path in pair_dirs(args.run_dir) if (path / "samples.jsonl").is_file()]
    if not found:
        print(f"{COMMAND}: no <src>-to-<tgt>/samples.jsonl under {args.run_dir}", file=sys.stderr)
        return 1
    executor = executor_of(args, COMMAND)
    if executor is None:
        return 2
    targets = sorted({pair.target for pair, _ in found})
    # With Ray the programs run on the cluster's nodes: each checks its own toolchains.
    missing = {lang: problem for lang in targets if args.executor == "local" and (problem := check_toolchain(lang))}
    for lang, problem in missing.items():
        print(f"{COMMAND}: {lang}: {problem} (its pairs are skipped)", file=sys.stderr)
    scoring = scoring_tasks(load_tasks_for(args, [t for t in targets if t not in missing]))
    for pair, path in found:
        if pair.target in missing:
            continue
        summary = execute_file(
            path / "samples.jsonl",
            path / "results.jsonl",
            scoring,
            args.workers,
            args.timeout,
            not args.no_progress,
            executor=executor,
        )
        print(f"execute {pair.name}: {summary.total} samples, {summary.executed} run, {summary.seconds:.1f}s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m evals.translation ...``: the same as ``codeglm eval translate ...``."""
    parser = argparse.ArgumentParser(prog="python -m evals.translation", description="HumanEval-X translation task")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
