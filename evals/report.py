"""Reports from a results file: a markdown table, one JSON object, or a bar chart (PNG)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from evals.dataset import LANGUAGES, language_of_task
from evals.execute import read_results
from evals.metrics import count_per_task, pass_at_k_table


def _display(name: str) -> str:
    return LANGUAGES[name].display_name if name in LANGUAGES else name


def load_table(results_path: Path, ks: list[int]) -> tuple[dict[str, dict[str, float]], dict[str, Counter[str]], dict[str, int]]:
    """pass@k per language, status counts per language and tasks per language."""
    results = list(read_results(results_path).values())
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
