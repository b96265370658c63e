"""Unbiased pass@k (Chen et al. 2021), numerically stable, per language and overall.

pass@k for one task with n samples of which c pass is ``1 - C(n-c, k) / C(n, k)``,
computed as ``1 - prod_{i=n-c+1..n} (1 - k/i)`` so large n never overflows. A language's
figure is the mean over its tasks; "overall" is the mean over all tasks. A k larger
than a task's n has no unbiased estimate: such (language, k) pairs are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from evals.dataset import LANGUAGES, language_of_task


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class TaskCount:
    task_id: str
    n: int
    correct: int


def count_per_task(outcomes: Iterable[tuple[str, bool]]) -> list[TaskCount]:
    """(task_id, passed) pairs -> samples and passes per task, in first-seen order."""
    totals: dict[str, list[int]] = {}
    for task_id, passed in outcomes:
        entry = totals.setdefault(task_id, [0, 0])
        entry[0] += 1
        entry[1] += int(passed)
    return [TaskCount(t, n, c) for t, (n, c) in totals.items()]


def pass_at_k_table(counts: Iterable[TaskCount], ks: Iterable[int]) -> dict[str, dict[str, float]]:
    """``{language: {"pass@k": mean}, ..., "overall": {...}}``; languages in table order."""
    by_language: dict[str, list[TaskCount]] = {}
    for count in counts:
        by_language.setdefault(language_of_task(count.task_id), []).append(count)
    groups = [(lang, by_language[lang]) for lang in LANGUAGES if lang in by_language]
    if len(groups) > 1:
        groups.append(("overall", [c for _, group in groups for c in group]))
    table: dict[str, dict[str, float]] = {}
    for name, group in groups:
        row: dict[str, float] = {}
        for k in sorted(set(ks)):
            if all(c.n >= k for c in group):
                row[f"pass@{k}"] = float(np.mean([pass_at_k(c.n, c.correct, k) for c in group]))
        table[name] = row
    return table
