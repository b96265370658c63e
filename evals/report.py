"""Reports from a results file: a markdown table, one JSON object, or a bar chart (PNG)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Container, Iterable
from pathlib import Path

from evals.dataset import LANGUAGES, DatasetError, language_of_task
from evals.execute import Result, read_results
from evals.metrics import count_per_task, pass_at_k_table


def _display(name: str) -> str:
    return LANGUAGES[name].display_name if name in LANGUAGES else name


Table = tuple[dict[str, dict[str, float]], dict[str, Counter[str]], dict[str, int]]
UNKNOWN_NAMED = 20  # task ids a warning names before it only counts the rest


def result_languages(results: Iterable[Result]) -> list[str]:
    """The languages of the well-formed task ids, to load those parts of the dataset."""
    found: set[str] = set()
    for result in results:
        try:
            found.add(language_of_task(result.task_id))
        except DatasetError:
            continue
    return sorted(found)


def known_results(results: list[Result], known_tasks: Container[str], warn_prefix: str) -> list[Result]:
    """The records of tasks in the dataset; the others are named in a warning on stderr.

    A record of another id (an older ``execute`` wrote one ``sandbox_error`` per sample
    of an unknown task) is not a problem solved or failed: counted, it lowers pass@k.
    """
    kept = [r for r in results if r.task_id in known_tasks]
    unknown = sorted({r.task_id for r in results if r.task_id not in known_tasks})
    if unknown:
        more = len(unknown) - UNKNOWN_NAMED
        named = ", ".join(unknown[:UNKNOWN_NAMED]) + (f" and {more} more" if more > 0 else "")
        ignored = len(results) - len(kept)
        print(f"{warn_prefix}: ignoring {ignored} result records of task ids not in the dataset: {named}", file=sys.stderr)
    return kept


def load_table(results_path: Path, ks: list[int], known_tasks: Container[str] | None = None) -> Table:
    """pass@k per language, status counts per language and tasks per language; records
    of task ids outside ``known_tasks`` (when given) are left out with a warning."""
    results = list(read_results(results_path).values())
    if known_tasks is not None:
        results = known_results(results, known_tasks, str(results_path))
    return table_of(results, ks)


def table_of(results: list[Result], ks: list[int]) -> Table:
    """pass@k per language, status counts per language and tasks per language."""
    counts = count_per_task((r.task_id, r.passed) for r in results)
    table = pass_at_k_table(counts, ks)
    statuses: dict[str, Counter[str]] = {}
    tasks: dict[str, int] = {}
    for r in results:
        statuses.setdefault(language_of_task(r.task_id), Counter())[r.status] += 1
    for c in counts:
        lang = language_of_task(c.task_id)
        tasks[lang] = tasks.get(lang, 0) + 1
    return table, statuses, tasks


def markdown(table: dict[str, dict[str, float]], ks: list[int], statuses: dict[str, Counter[str]], tasks: dict[str, int]) -> str:
    columns = [f"pass@{k}" for k in sorted(set(ks))]
    lines = [
        "| language | tasks | " + " | ".join(columns) + " | statuses |",
        "|---|---:|" + "---:|" * len(columns) + "---|",
    ]
    for name, row in table.items():
        cells = [f"{100 * row[c]:.2f}%" if c in row else "n/a" for c in columns]
        if name == "overall":
            count = sum(tasks.values())
            status = sum(statuses.values(), Counter())
        else:
            count = tasks.get(name, 0)
            status = statuses.get(name, Counter())
        status_text = ", ".join(f"{s} {n}" for s, n in sorted(status.items()))
        lines.append(f"| {_display(name)} | {count} | " + " | ".join(cells) + f" | {status_text} |")
    return "\n".join(lines)


def to_json(table: dict[str, dict[str, float]]) -> str:
    return json.dumps(table, sort_keys=False)


def plot(table: dict[str, dict[str, float]], ks: list[int], path: Path) -> None:
    """A grouped bar chart: one group per language, one bar per k."""
    # Deferred: matplotlib (slow to import) only when a plot is asked for.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    columns = [f"pass@{k}" for k in sorted(set(ks))]
    width = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    for i, column in enumerate(columns):
        values = [100 * table[n].get(column, 0.0) for n in names]
        xs = [j + i * width for j in range(len(names))]
        bars = ax.bar(xs, values, width, label=column)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(names))], [_display(n) for n in names])
    ax.set_ylabel("% of problems")
    ax.set_ylim(0, 105)
    ax.set_title("HumanEval-X pass@k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
