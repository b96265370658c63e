"""``codeglm eval execute --executor ray``: the same samples run as Ray tasks, one per sample.

Only the fan-out changes. The driver keeps everything else of ``evals.execute`` (parsing,
resume, the append-only results file, the final rewrite, the progress bar): this module
supplies a ``run_jobs`` with the local pool's signature. Each program still runs in the
project's sandbox (``evals.execute._work``), on whichever node executes it, with a slot
claimed once per Ray worker (``acquire_slot`` + the slot guard, as a pool worker does).

Why one sample per task: a Ray task costs about 1 ms here (1000 empty tasks in 0.8 s on a
one-CPU node), against 35 ms for the cheapest program (Python); measured end to end, the
164 Python canonical programs took 52-56 ms each on a warm local Ray of 2 CPUs against
50-51 ms in the local pool (busy machine). One sample per task also makes a retry redo
one sample only. Each Ray worker hands its samples to one spawned,
single-threaded sandbox process of its own (``_sandbox_process`` says why). The Task objects are small frozen dataclasses and
travel with each task; the dataset is never shipped.

Ray is imported lazily, only here: ``codeglm[ray]`` is an optional extra.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from evals import execute
from evals.dataset import Task
from evals.execute import REASON_CHARS, Job, JobRunner
from evals.sandbox import probe_isolation
from evals.toolchains import check_toolchain, prepare_shared_caches

INSTALL_HINT = "pip install codeglm[ray]"
IN_FLIGHT_PER_CPU = 4  # tasks submitted per cluster CPU: enough to keep every CPU busy, memory flat
MAX_RETRIES = 3  # a worker or node that dies mid-task: Ray runs the task again elsewhere
POLL_SECONDS = 0.1  # how often the driver looks at the Ctrl-C flag while waiting


class RayUnavailable(RuntimeError):
    """Ray is not installed; the message says how to install it."""


def import_ray() -> ModuleType:
    """Ray, imported after ``_prepare_environment`` (Ray reads its settings at import)."""
    _prepare_environment()
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"--executor ray needs Ray ({exc}): {INSTALL_HINT}") from None
    return ray


def job_runner(executor: str) -> JobRunner:
    """The function that runs jobs for ``--executor``: the local process pool or Ray."""
    if executor == "local":
        return execute.run_jobs
    if executor == "ray":
        import_ray()  # fail now, before any work, when Ray is missing
        return run_jobs
    raise ValueError(f"unknown executor {executor!r} (local or ray)")


# ---- the driver ------------------------------------------------------------------------------


def _prepare_environment() -> None:
    """Settings Ray reads from the environment when it is imported and when it starts.

    No usage statistics (``RAY_USAGE_STATS_ENABLED=0`` unless the user set it). For a
    local cluster (no ``RAY_ADDRESS``), token authentication (Ray's default there: its
    ports listen on every interface) with a token of this run's own, in the environment,
    which the cluster's processes inherit: left to itself, Ray 2.60 writes a token to
    ``~/.ray/auth_token``, and every later ``ray start`` on the machine then turns token
    authentication on. Settings the user made are kept.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not os.environ.get("RAY_ADDRESS") and not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(os.environ):
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)



@dataclass(frozen=True)
class Connection:
    """How this run reached Ray: ``initialized`` (it called ``ray.init``, so it shuts Ray
    down at the end) and ``local`` (that started a cluster of its own, sized by ``workers``)."""

    initialized: bool
    local: bool


def connect(ray: ModuleType, workers: int | None) -> Connection:
    """Join the cluster at ``RAY_ADDRESS``, else start a local one with ``workers`` CPUs; a
    caller that already called ``ray.init`` keeps its connection.

    A local cluster gets no dashboard and sends no usage statistics (``_prepare_environment``).
    """
    if ray.is_initialized():
        return Connection(False, False)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return Connection(True, False)
    ray.init(
        address="local",
        num_cpus=workers or os.cpu_count() or 1,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return Connection(True, True)


def run_jobs(
    jobs: list[Job],
    workers: int | None,
    timeout: float,
    on_result: Callable[[Job, str, str], None],
    base_dir: Path | None = None,
) -> None:
    """Run ``jobs`` as Ray tasks, calling ``on_result`` in the driver as each ends.

    At most ``IN_FLIGHT_PER_CPU`` x the cluster's CPUs are submitted at once (and at most
    ``workers`` on a cluster found at ``RAY_ADDRESS`` when ``workers`` is given), so results
    stream out and the driver's memory stays flat however many samples there are.
    """
    if not jobs:
        return
    ray = import_ray()
    connection = connect(ray, workers)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        limit = IN_FLIGHT_PER_CPU * cpus
        if workers and not connection.local:
            limit = min(limit, workers)
        _drive(ray, jobs, limit, timeout, on_result, base_dir)
    finally:
        if connection.initialized:
            ray.shutdown()


def _drive(
    ray: ModuleType,
    jobs: list[Job],
    limit: int,
    timeout: float,
    on_result: Callable[[Job, str, str], None],
    base_dir: Path | None,
) -> None:
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_sample)
    pending: dict[Any, Job] = {}
    queue: Iterator[Job] = iter(jobs)

    def submit() -> None:
        job = next(queue, None)
        if job is not None:
            pending[remote.remote(job.task, job.generation, timeout, base_dir)] = job

    with execute._ctrl_c_flag() as interrupted:
        try:
            for _ in range(limit):
                submit()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                if ready:  # take every result already there, not one per wait
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in ready:
                    job = pending.pop(ref)
                    status, reason = _outcome(ray, ref)
                    on_result(job, status, reason)
                    submit()
        except BaseException:
            for ref in pending:  # not forced: a running sample cleans its sandbox up
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
                    pass
            raise


def _outcome(ray: ModuleType, ref: Any) -> tuple[str, str]:
    """The task's (status, reason); a Ray failure after all retries is the sample's sandbox_error."""
    try:
        status, reason = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - a lost worker or node must not stop the run
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        return "sandbox_error", f"ray: {type(exc).__name__}: {first}"[:REASON_CHARS]
    return str(status), str(reason)


# ---- the worker (runs in a Ray worker process, on any node) ---------------------------------

_CHECKED: dict[str, str | None] = {}
_SANDBOX_PROCESS: list[ProcessPoolExecutor] = []  # at most one per Ray worker process


def run_sample(task: Task, generation: str, timeout: float, base_dir: Path | None) -> tuple[str, str]:
    """One sample in this node's sandbox: (status, reason). Never raises: any failure here
    is the harness's, so the sample's ``sandbox_error``."""
    try:
        problem = _toolchain_problem(task.language)
        if problem is not None:
            return "sandbox_error", f"{problem} (on node {node_name()})"[:REASON_CHARS]
        for attempt in range(2):  # a sandbox process that died is replaced once
            try:
                return _sandbox_process().submit(_work_in, base_dir, task, generation, timeout).result()
            except BrokenProcessPool:
                _SANDBOX_PROCESS.pop().shutdown(wait=False)
                if attempt:
                    raise
        raise AssertionError("unreachable")
    except Exception as exc:  # noqa: BLE001 - any harness failure is this sample's sandbox_error
        return "sandbox_error", f"{type(exc).__name__}: {exc} (on node {node_name()})"[:REASON_CHARS]


def _toolchain_problem(language: str) -> str | None:
    """This node's toolchain for ``language``, checked once per worker process: a node
    without it must give ``sandbox_error`` (the harness's fault), never ``failed``."""
    if language not in _CHECKED:
        _CHECKED[language] = check_toolchain(language)
    return _CHECKED[language]


def _sandbox_process() -> ProcessPoolExecutor:
    """The single-threaded process this Ray worker runs its samples in, started once.

    Not the Ray worker itself: it has many threads (gRPC, Ray's own), and a sandbox forks
    and runs Python between fork and exec (``preexec_fn``), which can deadlock in a child
    of a threaded process on a lock another thread held. A spawned process has no such
    threads; it is set up exactly as a local pool worker (``evals.execute._init_worker``:
    a slot held until it exits, the slot guard, death with its parent), after the node's
    own isolation probe and cache preparation.
    """
    if not _SANDBOX_PROCESS:
        context = multiprocessing.get_context("spawn")
        _SANDBOX_PROCESS.append(
            ProcessPoolExecutor(1, mp_context=context, initializer=_init_sandbox_process, initargs=(os.getpid(),))
        )
    return _SANDBOX_PROCESS[0]


def _init_sandbox_process(parent: int) -> None:
    isolation = probe_isolation()  # the node's own, not the driver's
    if isolation.reason:
        print(f"codeglm eval: sandbox on {node_name()}: {isolation.reason}", file=sys.stderr)
    prepare_shared_caches(isolation.switch_user)
    execute._init_worker(isolation, None, parent)


def _work_in(base_dir: Path | None, task: Task, generation: str, timeout: float) -> tuple[str, str]:
    """``evals.execute._work`` with this run's ``base_dir`` (one Ray worker may serve several runs)."""
    execute._WORKER["base_dir"] = base_dir
    return execute._work(task, generation, timeout)


def node_name() -> str:
    """``hostname (ip)`` of the node this process runs on, to name it in a reason."""
    try:
        import ray

        address = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside a Ray worker: the hostname alone
        return socket.gethostname()
    return f"{socket.gethostname()} ({address})"
