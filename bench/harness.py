"""Benchmark: execute every canonical HumanEval-X solution (984 programs) with codeglm's
harness, then the reference harness (codegeex==1.0) and codeglm on the same subset.

    .venv/bin/python bench/harness.py [--workers 2] [--reference-tasks 20] [--languages ...] [--executor-ray]

Every canonical solution must pass (docs/humaneval-x.md: 984 of 984 with the patch table):
a language where one does not is printed as an ERROR, its time is left out of the totals,
and the script exits 1, since a fast harness that scores wrongly is no figure.
Prints programs/s per language and in total; the last line is one JSON object with
``seconds_total`` (codeglm, all programs) and ``ratio_vs_reference`` (reference seconds /
codeglm seconds on the same subset, measured back to back in this run; > 1: codeglm is
faster). The reference runs through its own ``evaluate_functional_correctness`` with the
same number of workers, in a child process (it changes the working directory). Rust is
left out of the comparison: the reference runs Rust through ``cargo`` in a project inside
its package that fetches crates from the network, which this offline setup cannot do.

With ``--executor-ray`` (needs ``codeglm[ray]``; off by default, so the figures above stay
comparable with earlier runs), the same canonical programs then run once more through
``--executor ray`` on a local Ray cluster started with ``num_cpus = --workers``
(``RAY_ADDRESS`` is ignored: the figure is for this machine), and the JSON line gains
``ray_seconds_total`` and ``ray_programs_per_second`` (Ray's start-up included, its
shutdown not). A canonical program that does not pass through Ray is an ERROR too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.dataset import LANGUAGES, Task, load_language, parse_languages  # noqa: E402
from evals.execute import JobRunner, execute_file, read_results, run_jobs  # noqa: E402
from evals.toolchains import cache_dir  # noqa: E402

REFERENCE_LANGUAGES = ("python", "cpp", "java", "javascript", "go")

# `fire` (the reference's command-line wrapper) is only used by its main(): not needed here.
REFERENCE_SCRIPT = """
import os, sys, types
sys.modules.setdefault("fire", types.ModuleType("fire"))
from codegeex.benchmark.evaluate_humaneval_x import evaluate_functional_correctness
samples, tmp_dir, workers, problem_file, out_dir = sys.argv[1:6]
evaluate_functional_correctness(input_file=samples, tmp_dir=tmp_dir, n_workers=int(workers),
                                timeout=10.0, problem_file=problem_file, out_dir=out_dir, k=[1])
"""


def write_samples(tasks: list[Task], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            line = {"task_id": task.task_id, "prompt": task.prompt, "generation": task.canonical_solution}
            handle.write(json.dumps(line) + "\n")


def run_ours(
    tasks: list[Task], workers: int, work: Path, name: str, executor: JobRunner = run_jobs
) -> tuple[float, int]:
    samples, results = work / f"{name}.jsonl", work / f"{name}-results.jsonl"
    write_samples(tasks, samples)
    started = time.monotonic()
    execute_file(samples, results, {t.task_id: t for t in tasks}, workers, 15.0, progress=False, executor=executor)
    seconds = time.monotonic() - started
    return seconds, sum(r.passed for r in read_results(results).values())


def run_reference(language: str, tasks: list[Task], workers: int, work: Path) -> tuple[float, int]:
    stem = LANGUAGES[language].file_stem
    root = work / f"ref-{stem}"
    (root / stem / "evaluation").mkdir(parents=True)
    samples = root / f"samples_{stem}.jsonl"
    write_samples(tasks, samples)
    from codeglm.paths import humaneval_dir

    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOPROXY": "off",
        "GOCACHE": str(cache_dir() / "gocache"),  # warm, as for a fair comparison
        "NODE_PATH": str(cache_dir() / "node" / "node_modules"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE_SCRIPT, str(samples), str(root), str(workers),
         str(humaneval_dir() / f"humaneval_{stem}.jsonl.gz"), str(root / "out")],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )
    seconds = time.monotonic() - started
    passed = 0
    for path in (root / "out").glob("*_results.jsonl"):
        passed += sum(1 for line in path.read_text().splitlines() if json.loads(line).get("passed"))
    if done.returncode != 0:
        print(f"  reference {language}: exited {done.returncode}: {done.stderr.strip()[-300:]}", file=sys.stderr)
    return seconds, passed


def run_canonical(
    languages: list[str], workers: int, work: Path, wrong: list[str], executor: JobRunner, label: str,
    through: str = "", start_up: float = 0.0,
) -> tuple[float, int, dict[str, dict[str, float]]]:
    """Every canonical program of ``languages`` through ``executor``, a language at a time, each
    printed under ``label`` (``through``: the executor's name in messages, "" for the local one):
    (seconds, programs, per-language figures) over the languages that all passed, ``start_up``
    seconds included. A language where one did not pass is an ERROR, added to ``wrong``."""
    seconds, programs = start_up, 0
    per_language: dict[str, dict[str, float]] = {}
    for lang in languages:
        tasks, _ = load_language(lang)
        lang_seconds, passed = run_ours(tasks, workers, work, f"{label}-{lang}", executor)
        if passed != len(tasks):
            wrong.append(f"{lang} ({label})" if through else lang)
            via = f" through {through}" if through else ""
            print(f"ERROR: {lang}: {passed} of {len(tasks)} canonical solutions passed{via}; its time is not "
                  "reported", flush=True)
            continue
        per_language[lang] = {"programs": len(tasks), "passed": passed, "seconds": round(lang_seconds, 2),
                              "programs_per_second": round(len(tasks) / lang_seconds, 2)}
        seconds += lang_seconds
        programs += len(tasks)
        print(f"{label:<8} {lang:<10} {len(tasks)} programs, {passed} passed, {lang_seconds:7.1f} s, "
              f"{len(tasks) / lang_seconds:6.2f} programs/s", flush=True)
    if seconds:
        with_start_up = f" (with {through}'s start-up)" if through else ""
        print(f"{label:<8} total      {programs} programs, {seconds:7.1f} s{with_start_up}, "
              f"{programs / seconds:6.2f} programs/s", flush=True)
    return seconds, programs, per_language


def run_ray(languages: list[str], workers: int, work: Path, wrong: list[str]) -> tuple[float, int]:
    """Every canonical program of ``languages`` through the Ray executor on one local
    cluster of ``workers`` CPUs: (seconds, programs) over the languages that all passed."""
    from evals import ray_executor

    os.environ.pop("RAY_ADDRESS", None)  # this machine's figure, not a cluster's
    ray = ray_executor.import_ray()
    started = time.monotonic()
    ray_executor.connect(ray, workers)  # started here once, not once per language
    try:
        seconds, programs, _ = run_canonical(languages, workers, work, wrong, ray_executor.run_jobs, "ray",
                                             through="Ray", start_up=time.monotonic() - started)
    finally:
        ray.shutdown()
    return seconds, programs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--languages", default=None, help="comma-separated (default: all six)")
    parser.add_argument("--reference-tasks", type=int, default=20, help="tasks per language for the comparison (0: skip)")
    parser.add_argument("--executor-ray", action="store_true",
                        help="then the same programs through --executor ray on a local Ray cluster (needs codeglm[ray])")
    args = parser.parse_args()
    languages = parse_languages(args.languages)
    with tempfile.TemporaryDirectory(prefix="codeglm-bench-") as tmp:
        work = Path(tmp)
        wrong: list[str] = []
        total_seconds, total_programs, per_language = run_canonical(languages, args.workers, work, wrong, run_jobs,
                                                                    "codeglm")
        ray_seconds, ray_programs = run_ray(languages, args.workers, work, wrong) if args.executor_ray else (0.0, 0)

        ours_subset = reference_subset = 0.0
        compared = [lang for lang in languages if lang in REFERENCE_LANGUAGES] if args.reference_tasks > 0 else []
        for lang in compared:
            subset = load_language(lang)[0][: args.reference_tasks]
            ref_seconds, ref_passed = run_reference(lang, subset, args.workers, work)
            our_seconds, our_passed = run_ours(subset, args.workers, work, f"subset-{lang}")
            if our_passed != len(subset):
                wrong.append(f"{lang} (subset)")
                print(f"ERROR: {lang}: {our_passed} of {len(subset)} canonical solutions passed in the comparison; "
                      "left out of the ratio", flush=True)
                continue
            reference_subset += ref_seconds
            ours_subset += our_seconds
            print(f"subset   {lang:<10} {len(subset)} programs: reference {ref_seconds:6.1f} s ({ref_passed} passed), "
                  f"codeglm {our_seconds:6.1f} s ({our_passed} passed)", flush=True)
    ratio = round(reference_subset / ours_subset, 3) if ours_subset else None
    summary = {
        "errors": wrong,
        "seconds_total": round(total_seconds, 2),
        "programs": total_programs,
        "programs_per_second": round(total_programs / total_seconds, 2) if total_seconds else None,
        "workers": args.workers,
        "per_language": per_language,
        "reference_languages": compared,
        "reference_tasks_per_language": args.reference_tasks if compared else 0,
        "reference_seconds": round(reference_subset, 2),
        "codeglm_seconds_same_subset": round(ours_subset, 2),
        "ratio_vs_reference": ratio,
    }
    if args.executor_ray:
        summary["ray_seconds_total"] = round(ray_seconds, 2)
        summary["ray_programs_per_second"] = round(ray_programs / ray_seconds, 2) if ray_seconds else None
    print(json.dumps(summary))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
