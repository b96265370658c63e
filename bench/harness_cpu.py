"""CPU seconds per canonical HumanEval-X program, per language and per step (build, run).

    .venv/bin/python bench/harness_cpu.py [--languages cpp,java] [--limit N] [--workers 2]

Wall time of a whole run is noisy on a shared machine; CPU seconds (user + sys) of what
the sandbox steps ran are not (much). Two figures per language:

* ``steps``: the programs are run one after the other in this process (one sandbox slot),
  and each step's CPU is the change of ``RUSAGE_CHILDREN`` around it: the compiler's and
  the program's processes (and everything they waited for), split into build and run;
  a Java build through the slot's javac server (``evals.javac_daemon``) counts the
  server's CPU during the compilation (its start included, on the first program);
* ``pool``: the same programs through ``execute_file`` with ``--workers`` workers, wall
  seconds and ``RUSAGE_CHILDREN`` of the whole run (the workers' own Python, the memory
  watch and the kills included; the workers stop their javac servers, and wait for them,
  before they exit).

Every canonical solution must pass (else the language is an ERROR and the script exits 1).
The last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals import execute as execute_module  # noqa: E402
from evals import javac_daemon  # noqa: E402
from evals import sandbox as sandbox_module  # noqa: E402
from evals.dataset import load_language, parse_languages  # noqa: E402
from evals.execute import execute_file, read_results, run_program  # noqa: E402
from evals.sandbox import acquire_slot, probe_isolation  # noqa: E402
from evals.toolchains import prepare_shared_caches  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def steps(language: str, limit: int | None, slot: int) -> dict[str, float]:
    """Build/run CPU and wall seconds per program, run one at a time in this process."""
    tasks = load_language(language)[0][:limit]
    isolation = probe_isolation()
    prepare_shared_caches(isolation.switch_user)
    totals = {"build_cpu": 0.0, "run_cpu": 0.0, "build_wall": 0.0, "run_wall": 0.0}
    original_run, original_build = sandbox_module.Sandbox.run, execute_module._build_step

    def cpu_now() -> tuple[float, dict[int, float]]:
        return _children_cpu(), javac_daemon.server_cpu_seconds()

    def spent(before: tuple[float, dict[int, float]]) -> float:
        children, servers = cpu_now()
        # A server's CPU is in RUSAGE_CHILDREN only once it has been waited for.
        return children - before[0] + sum(cpu - before[1].get(pid, 0.0) for pid, cpu in servers.items())

    def measured_run(self, argv, limits, env=None, build=False):  # noqa: ANN001, ANN202
        before = cpu_now()
        result = original_run(self, argv, limits, env, build)
        if not build:
            totals["run_cpu"] += spent(before)
            totals["run_wall"] += result.wall_seconds
        return result

    def measured_build(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        before = cpu_now()
        result = original_build(*args, **kwargs)
        totals["build_cpu"] += spent(before)
        totals["build_wall"] += result.wall_seconds
        return result

    sandbox_module.Sandbox.run = measured_run  # type: ignore[method-assign]
    execute_module._build_step = measured_build
    failed = []
    try:
        for task in tasks:
            status, reason = run_program(task, task.canonical_solution, slot, isolation, 15.0)
            if status != "passed":
                failed.append(f"{task.task_id}: {status} {reason[:120]}")
    finally:
        sandbox_module.Sandbox.run = original_run  # type: ignore[method-assign]
        execute_module._build_step = original_build
        javac_daemon.stop_all()
    out = {key: round(value / len(tasks), 3) for key, value in totals.items()}
    out["programs"] = len(tasks)
    out["failed"] = failed  # type: ignore[assignment]
    return out


def pool(language: str, limit: int | None, workers: int, work: Path) -> dict[str, float]:
    tasks = load_language(language)[0][:limit]
    samples, results = work / f"{language}.jsonl", work / f"{language}-results.jsonl"
    with open(samples, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps({"task_id": task.task_id, "generation": task.canonical_solution}) + "\n")
    before, started = _children_cpu(), time.monotonic()
    execute_file(samples, results, {t.task_id: t for t in tasks}, workers, 15.0, progress=False)
    wall, cpu = time.monotonic() - started, _children_cpu() - before
    passed = sum(r.passed for r in read_results(results).values())
    return {"programs": len(tasks), "passed": passed, "wall": round(wall, 2), "cpu_per_program": round(cpu / len(tasks), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default=None, help="comma-separated (default: all six)")
    parser.add_argument("--limit", type=int, default=None, help="first N tasks per language")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-steps", action="store_true", help="only the pool run")
    parser.add_argument("--no-pool", action="store_true", help="only the per-step run")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    errors = []
    slot = acquire_slot()
    with tempfile.TemporaryDirectory(prefix="codeglm-cpu-") as tmp:
        for lang in parse_languages(args.languages):
            entry: dict = {}
            if not args.no_steps:
                entry["steps"] = steps(lang, args.limit, slot)
                if entry["steps"]["failed"]:
                    errors.append(lang)
                s = entry["steps"]
                print(f"{lang:<10} steps: build {s['build_cpu']:.3f} CPU s ({s['build_wall']:.3f} wall), "
                      f"run {s['run_cpu']:.3f} CPU s ({s['run_wall']:.3f} wall) per program; "
                      f"failed {len(s['failed'])}", flush=True)
                for line in s["failed"]:
                    print(f"  FAILED {line}", flush=True)
            if not args.no_pool:
                entry["pool"] = pool(lang, args.limit, args.workers, Path(tmp))
                p = entry["pool"]
                if p["passed"] != p["programs"]:
                    errors.append(f"{lang} (pool)")
                print(f"{lang:<10} pool: {p['programs']} programs, {p['passed']} passed, {p['wall']:.1f} s wall, "
                      f"{p['cpu_per_program']:.3f} CPU s per program", flush=True)
            figures[lang] = entry
    print(json.dumps({"errors": errors, "figures": figures}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
