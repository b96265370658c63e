"""Execute samples: assemble, build and run each in its own sandbox; write results.jsonl.

A samples line is ``{"task_id": ..., "generation": ...}`` (the reference harness's
fields; ``completion_id``, ``prompt`` and anything else are optional). A result line is
``{"task_id", "completion_id", "status", "passed", "reason"}``. Results are appended as
they finish; a rerun skips the (task_id, completion_id) pairs already there, and the
file is finally rewritten in samples order, so an interrupted and resumed run ends with
the same file as an uninterrupted one. Malformed samples lines, and samples of task ids
that are not in the dataset, are reported and skipped: neither is a sample of a task, so
neither may count in pass@k.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from codeglm.languages import HUMANEVAL_X, get_language
from evals import cpp_pch, javac_daemon
from evals.assemble import END_TOKEN_ENV, assemble
from evals.dataset import DatasetError, Task, language_of_task
from evals.sandbox import Isolation, Sandbox, StepResult, acquire_slot, probe_isolation, reclaim_slot
from evals.toolchains import CPP_FLAGS, Toolchain, cache_dir, go_build_steps, prepare_shared_caches, toolchain

STATUSES = ("passed", "failed", "timeout", "compile_error", "runtime_error", "sandbox_error")
REASON_CHARS = 300

# Output that means a test assertion failed (as opposed to a crash), per language: from the language table.
ASSERTION_PATTERNS = {
    name: re.compile(str(get_language(name).assertion_pattern), re.M) for name in HUMANEVAL_X
}


@dataclass(frozen=True)
class Sample:
    """One line of a samples file; ``index`` is its position among the task's samples."""

    task_id: str
    generation: str
    completion_id: int
    line: int
    error: str | None = None  # why generation made no text (e.g. the prompt did not fit)


@dataclass(frozen=True)
class Result:
    task_id: str
    completion_id: int
    status: str
    passed: bool
    reason: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass(frozen=True)
class SampleProblem:
    """Why one samples line is skipped; ``unknown_task`` is set when only its task id is wrong."""

    line: int
    problem: str
    unknown_task: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def parse_samples(
    lines: Iterable[str], known_tasks: Container[str] | None = None
) -> tuple[list[Sample], list[SampleProblem]]:
    """Samples from JSON lines; each unusable line becomes a problem, never an error.

    With ``known_tasks`` (the dataset's ids), a sample of any other id is a problem too:
    executed, it could only be a ``sandbox_error`` that pass@k would count as a task.
    """
    samples: list[Sample] = []
    problems: list[SampleProblem] = []
    counters: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(SampleProblem(number, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append(SampleProblem(number, "not a JSON object"))
            continue
        task_id, generation = record.get("task_id"), record.get("generation")
        if not isinstance(task_id, str):
            problems.append(SampleProblem(number, "field 'task_id' missing or not a string"))
            continue
        try:
            language_of_task(task_id)
        except DatasetError as exc:
            problems.append(SampleProblem(number, f"field 'task_id': {exc}"))
            continue
        if not isinstance(generation, str):
            problems.append(SampleProblem(number, "field 'generation' missing or not a string"))
            continue
        given = record.get("completion_id")
        if given is not None and (not isinstance(given, int) or isinstance(given, bool)):
            problems.append(SampleProblem(number, "field 'completion_id' is not an integer"))
            continue
        if known_tasks is not None and task_id not in known_tasks:
            problems.append(SampleProblem(number, f"task_id {task_id!r} is not in the dataset", task_id))
            continue
        index = counters.get(task_id, 0)
        counters[task_id] = index + 1
        error = record.get("error")
        samples.append(
            Sample(task_id, generation, index if given is None else given, number, error if isinstance(error, str) else None)
        )
    return samples, problems


def read_samples(
    path: Path, known_tasks: Container[str] | None = None
) -> tuple[list[Sample], list[SampleProblem]]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse_samples(handle, known_tasks)


def _short(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # The most telling lines are usually the first error ones.
    keep = (
        [line for line in lines if re.search(r"\.\w+:\d+:(\d+:)?.*[Ee]rror|^error", line)]
        or [line for line in lines if re.search(r"error|Error|panic|Exception|failed|FAIL", line)]
        or lines
    )
    out = " | ".join(keep[:3])
    return out[:REASON_CHARS]


MEMORY_LIMIT_REASON = "memory limit exceeded (memory held by its processes, shared memory included); killed"
EARLY_EXIT_REASON = "exited before the checks finished (status 0 without the end-of-checks line)"


def classify(
    language: str, builds: list[StepResult], run: StepResult | None, timeout: float, end_token: str | None = None
) -> tuple[str, str]:
    """Status and a short, deterministic reason from what the steps did.

    ``end_token``: the line the program's epilogue prints after its last check; a run that
    exits 0 without it left early (``os._exit(0)`` and the like) and has not passed.
    """
    for step in builds:
        if step.timed_out:
            return "timeout", f"compilation did not finish in {step_limit(step):g} s"
        if step.returncode is None:
            return "sandbox_error", _short(step.stderr)
        if step.returncode != 0:
            if step.output_limit_hit:
                return "compile_error", "compiler output or binary exceeded the file size limit"
            if step.memory_limit_hit:
                return "compile_error", f"compiler: {MEMORY_LIMIT_REASON}"
            return "compile_error", _short(step.stderr + "\n" + step.stdout) or f"compiler exited {step.returncode}"
    assert run is not None
    if run.returncode is None:
        return "sandbox_error", _short(run.stderr)
    if run.timed_out:
        return "timeout", f"no result within {timeout:g} s (wall clock); process tree killed"
    if run.memory_limit_hit:
        return "runtime_error", MEMORY_LIMIT_REASON
    if run.output_limit_hit:
        return "runtime_error", "output limit exceeded (RLIMIT_FSIZE); killed"
    if run.returncode == 0:
        if end_token is not None and end_token not in run.stdout.splitlines():
            return "failed", EARLY_EXIT_REASON
        return "passed", ""
    signal_name = run.signal_name
    if signal_name == "SIGXCPU":
        return "timeout", "CPU time limit exceeded"
    output = run.stderr + "\n" + run.stdout
    if language == "go" and "panic:" in output and "Error Trace:" not in output:
        return "runtime_error", _short(output)
    if ASSERTION_PATTERNS[language].search(output):
        return "failed", _short(output) or "assertion failed"
    if signal_name:
        return "runtime_error", f"killed by {signal_name}" + (f": {_short(output)}" if output.strip() else "")
    return "runtime_error", _short(output) or f"exited with status {run.returncode}"


def step_limit(step: StepResult) -> float:
    return round(step.wall_seconds)


def run_program(
    task: Task, generation: str, slot: int, isolation: Isolation, timeout: float, base_dir: Path | None = None
) -> tuple[str, str]:
    """Build and run one sample in a fresh sandbox: (status, reason)."""
    chain = toolchain(task.language)
    program = assemble(task, generation)
    build = chain.build
    if task.language == "cpp":  # the prompt's standard headers, precompiled (evals/cpp_pch.py)
        source, build = cpp_pch.apply(program.source, task.prompt, build, cache_dir() / "cpp-pch", CPP_FLAGS)
        files = tuple((name, source if name == program.source_name else text) for name, text in program.files)
        program = replace(program, files=files)
    if task.language == "go":  # testify without net/http unless the program calls an HTTP assertion
        build = go_build_steps(program.source)
    run_limits = replace(chain.run_limits, wall_seconds=timeout, cpu_seconds=max(1, int(timeout + 0.999)))
    env = dict(chain.env)
    with Sandbox(slot, isolation, base_dir) as box:
        for name, text in program.files:
            box.write(name, text)
        builds: list[StepResult] = []
        for argv in build:
            step = _build_step(task.language, chain, box, argv, env, slot, isolation)
            builds.append(step)
            if not step.ok:
                return classify(task.language, builds, None, timeout)
        # A fresh token per run, given to the run step only: the build cannot bake it in.
        end_token = secrets.token_hex(16) if program.prints_end_token else None
        run_env = {**env, END_TOKEN_ENV: end_token or ""}
        run = box.run(list(chain.run), run_limits, run_env)
        return classify(task.language, builds, run, timeout, end_token)


def _build_step(
    language: str, chain: Toolchain, box: Sandbox, argv: tuple[str, ...], env: dict[str, str], slot: int, isolation: Isolation
) -> StepResult:
    """One build step: javac through the slot's warm server where it runs, else the command."""
    if language == "java":
        server = javac_daemon.server_for(slot, isolation, chain.build_limits, cache_dir())
        if server is not None:
            try:
                return server.compile(box, javac_daemon.javac_arguments(argv), chain.source_name)
            except javac_daemon.ServerUnavailable:
                pass  # the javac command below
    return box.run(list(argv), chain.build_limits, env, build=True)


# ---- the worker pool ---------------------------------------------------------------------

_WORKER: dict[str, object] = {}
PR_SET_PDEATHSIG = 1


def _init_worker(isolation: Isolation, base_dir: Path | None, driver: int) -> None:
    # Ctrl-C is the parent's business: it stops handing out work; a worker finishes its
    # sample (bounded by its limits) and cleans its sandbox up instead of dying midway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_driver(driver)
    slot = acquire_slot()
    if isolation.switch_user:
        _start_slot_guard(slot)
    _WORKER["slot"] = slot
    _WORKER["isolation"] = isolation
    _WORKER["base_dir"] = base_dir


def _die_with_driver(driver: int) -> None:
    """SIGKILL this worker when the driver dies, however it dies: an orphaned worker
    waits for work forever, holding its slot and the driver's results file. The driver
    may have died before the request was made, so its pid is checked after it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != driver:
        os._exit(1)


def _start_slot_guard(slot: int) -> None:
    """Fork a guard that kills every process of the slot's uid once this worker is gone.

    A worker killed mid-sample (with its driver, say) cannot clean its sandbox up, and
    its programs run in sessions of their own, outliving it. The guard waits for EOF on a
    pipe whose only write end is this worker's, so it wakes however the worker ends. It
    holds the slot's lock (an inherited descriptor of the same open file), so no run can
    take the slot before its leftovers are dead, and it is in a session of its own, so a
    SIGKILL to the driver's process group does not reach it.
    """
    read_end, write_end = os.pipe()
    if os.fork() == 0:  # the guard: never return into the worker's code
        try:
            os.close(write_end)
            os.setsid()
            while os.read(read_end, 1):
                pass
            reclaim_slot(slot)
        finally:
            os._exit(0)
    os.close(read_end)
    _WORKER["guard_pipe"] = write_end  # closed by the kernel when this worker exits


def _work(task: Task, generation: str, timeout: float) -> tuple[str, str]:
    outcome = ("sandbox_error", "")
    for _ in range(2):  # a sandbox failure is the harness's, not the sample's: retry once
        try:
            outcome = run_program(
                task, generation, int(_WORKER["slot"]), _WORKER["isolation"], timeout, _WORKER["base_dir"]  # type: ignore[arg-type]
            )
        except Exception as exc:  # noqa: BLE001 - any harness failure is this sample's sandbox_error
            outcome = ("sandbox_error", f"{type(exc).__name__}: {exc}"[:REASON_CHARS])
        if outcome[0] != "sandbox_error":
            break
    return outcome


@dataclass(frozen=True)
class Job:
    key: tuple[str, int]
    task: Task
    generation: str


# How jobs are run: ``run_jobs`` below (a process pool on this machine) or
# ``evals.ray_executor.run_jobs`` (Ray tasks). Called as (jobs, workers, timeout, on_result,
# base_dir); ``on_result(job, status, reason)`` runs in the caller's process as each job ends.
# ``workers`` None: the runner's default.
JobRunner = Callable[[list[Job], int | None, float, Callable[[Job, str, str], None], Path | None], None]


def run_jobs(
    jobs: list[Job],
    workers: int | None,
    timeout: float,
    on_result: Callable[[Job, str, str], None],
    base_dir: Path | None = None,
) -> None:
    """Run ``jobs`` on ``workers`` processes (default: one per core), calling ``on_result``
    in the parent as each ends."""
    if not jobs:
        return
    workers = workers or os.cpu_count() or 1
    isolation = probe_isolation()
    if isolation.reason:
        print(f"codeglm eval: sandbox: {isolation.reason}", file=sys.stderr)
    prepare_shared_caches(isolation.switch_user)
    context = multiprocessing.get_context("fork")
    pending: dict[Future[tuple[str, str]], Job] = {}
    queue: Iterator[Job] = iter(jobs)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(isolation, base_dir, os.getpid())
    )
    with pool, _ctrl_c_flag() as interrupted:
        try:
            for job in queue:  # keep a bounded number in flight: results stream out as they finish
                pending[pool.submit(_work, job.task, job.generation, timeout)] = job
                if len(pending) >= workers * 4:
                    break
            while pending:
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                for future in done:
                    job = pending.pop(future)
                    status, reason = future.result()
                    on_result(job, status, reason)
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(_work, nxt.task, nxt.generation, timeout)] = nxt
        except BaseException:
            for future in pending:
                future.cancel()
            raise


@contextmanager
def _ctrl_c_flag() -> Iterator[threading.Event]:
    """An event Ctrl-C sets, on the main thread. Python raises KeyboardInterrupt wherever
    the main thread happens to be, and one that lands in a finalizer or a weakref
    callback (the process pool runs some) is printed and dropped, and the run goes on to
    the end. A handler that only sets a flag cannot be dropped; the loop polls it."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals reach the main thread only; its own handler stays
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- results files --------------------------------------------------------------------------


def read_results(path: Path) -> dict[tuple[str, int], Result]:
    """Results already in ``path`` (a partial last line from a crash is ignored)."""
    found: dict[tuple[str, int], Result] = {}
    if not path.exists():
        return found
    with open(path, encoding="utf-8", errors="replace") as handle:
        for text in handle:
            try:
                record = json.loads(text)
                result = Result(
                    str(record["task_id"]),
                    int(record["completion_id"]),
                    str(record["status"]),
                    bool(record["passed"]),
                    str(record.get("reason", "")),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            found[(result.task_id, result.completion_id)] = result
    return found


@dataclass(frozen=True)
class ExecuteSummary:
    total: int
    executed: int
    reused: int
    skipped_lines: int
    unknown_tasks: int
    seconds: float


def execute_file(
    samples_path: Path,
    output: Path,
    tasks: dict[str, Task],
    workers: int | None = None,
    timeout: float = 10.0,
    progress: bool = True,
    base_dir: Path | None = None,
    executor: JobRunner = run_jobs,
) -> ExecuteSummary:
    """Execute every sample of ``samples_path`` not already in ``output``; rewrite ``output`` in order.

    ``executor`` runs the jobs (``evals.ray_executor.job_runner`` picks one by name): the
    local pool by default, or Ray; whichever runs them, this function alone reads and
    writes the results file, so resume and the final order do not depend on the choice.
    """
    started = time.monotonic()
    samples, problems = read_samples(samples_path, tasks)
    for problem in problems:
        print(f"{samples_path}: {problem} (skipped)", file=sys.stderr)
    unknown = sum(1 for p in problems if p.unknown_task is not None)
    results = read_results(output)
    reused = sum(1 for s in samples if (s.task_id, s.completion_id) in results)
    jobs: list[Job] = []
    for sample in samples:
        key = (sample.task_id, sample.completion_id)
        if key in results:
            continue
        task = tasks[sample.task_id]
        if sample.error is not None:  # nothing to run: the sample failed at generation
            results[key] = Result(sample.task_id, sample.completion_id, "failed", False, sample.error)
            continue
        jobs.append(Job(key, task, sample.generation))
    # Keep what an earlier run wrote, minus a torn last line, then append as results arrive.
    output.parent.mkdir(parents=True, exist_ok=True)
    _rewrite(output, [r for r in results.values()])
    bar = _progress_bar(len(jobs), progress)
    with open(output, "a", encoding="utf-8") as handle:

        def on_result(job: Job, status: str, reason: str) -> None:
            result = Result(job.key[0], job.key[1], status, status == "passed", reason)
            results[job.key] = result
            handle.write(result.to_json() + "\n")
            handle.flush()
            if bar is not None:
                bar.update(1)

        try:
            executor(jobs, workers, timeout, on_result, base_dir)
        finally:
            if bar is not None:
                bar.close()
    ordered = [results[(s.task_id, s.completion_id)] for s in samples if (s.task_id, s.completion_id) in results]
    _rewrite(output, ordered)
    return ExecuteSummary(
        len(samples), len(jobs), reused, len(problems) - unknown, unknown, time.monotonic() - started
    )


def _rewrite(path: Path, results: list[Result]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for result in results:
            handle.write(result.to_json() + "\n")
    os.replace(temporary, path)


def _progress_bar(total: int, enabled: bool):  # noqa: ANN202 - tqdm's type
    if not enabled or total == 0:
        return None

    return tqdm(total=total, unit="prog", desc="execute", file=sys.stderr, smoothing=0.1)
