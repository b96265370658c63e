"""``codeglm eval execute --executor ray`` on a real two-node Ray cluster (both nodes on this machine).

The cluster is started with ``ray start`` (head + one more node, one CPU each) and torn down
by killing the processes of the sessions it was started in: ``ray stop`` kills every Ray
process of the machine, other developers' and other tests' clusters included.

Ray 2.60 turns ``--node-ip-address 127.0.0.1`` into the machine's own address (a multi-node
cluster on loopback is refused); traffic to the machine's own address still never leaves it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _mutants import WRONG_TASK0

from evals.dataset import LANGUAGES, Task, load_tasks
from evals.execute import execute_file, read_results

PROJECT = Path(__file__).resolve().parent.parent
RAY_BIN = Path(sys.executable).parent / "ray"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")

# Bodies for task 0 (has_close_elements), besides the wrong answer (WRONG_TASK0, tests/_mutants.py): a crash, no end.
CRASH = {
    "python": "    raise RuntimeError('boom')\n",
    "cpp": "    int* p = nullptr; return *p == 1;\n}\n",
    "java": '        throw new RuntimeException("boom");\n    }\n}\n',
    "javascript": "  throw new Error('boom')\n}\n",
    "go": '    panic("boom")\n}\n',
    "rust": '    panic!("boom");\n}\n',
}
LOOP = {
    "python": "    while True:\n        pass\n",
    "javascript": "  while (true) {}\n}\n",
}
# Put first in a Python body: the program sleeps once (the body runs once per check).
SLEEP = (
    "    import builtins, time\n"
    "    if not getattr(builtins, 'codeglm_slept', False):\n"
    "        builtins.codeglm_slept = True\n"
    "        time.sleep({seconds})\n"
)


@dataclass(frozen=True)
class Cluster:
    address: str
    sessions: tuple[int, ...]  # the session ids of the `ray start` processes: everything they started
    env: dict[str, str]  # what a driver needs in its environment besides RAY_ADDRESS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session_pids(sessions: tuple[int, ...]) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) in sessions:
                    found.append(int(name))
            except OSError:
                continue
    return found


def _kill_sessions(sessions: tuple[int, ...]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = _session_pids(sessions)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"Ray processes left: {_session_pids(sessions)}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Not imported here: Ray reads its settings (token authentication) from the environment
    # when it is first imported, which must be after `on_cluster` sets them.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install codeglm[ray])")
    if os.geteuid() != 0:
        pytest.skip("the sandbox's isolation needs root")
    temp = tempfile.mkdtemp(prefix="cgray", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_port()
    # Token authentication with a token of the test's own, in the environment: nothing is
    # written to ~/.ray (where a token file turns authentication on for every later cluster).
    auth = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth}
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--num-cpus", "1",
              "--object-store-memory", "100000000", "--temp-dir", temp]
    commands = [
        [str(RAY_BIN), "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
        [str(RAY_BIN), "start", "--address", f"127.0.0.1:{port}", *common],
    ]
    sessions: list[int] = []
    try:
        for argv in commands:
            # A session of its own: every process it starts (and their workers) is found by it.
            process = subprocess.Popen(argv, env=env, cwd=temp, start_new_session=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            sessions.append(process.pid)
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0, out[-2000:]
        yield Cluster(f"127.0.0.1:{port}", tuple(sessions), auth)
    finally:
        _kill_sessions(tuple(sessions))
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def on_cluster(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    return cluster


def _ray_runner():  # noqa: ANN202 - evals.execute.JobRunner
    from evals.ray_executor import job_runner

    return job_runner("ray")


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"task_id": t, "generation": g}) + "\n" for t, g in rows))


def _records(path: Path) -> list[dict]:
    # A sandbox directory's random name is the only text that may differ between two runs.
    text = re.sub(r"codeglm-sample-\w+", "codeglm-sample-X", path.read_text())
    return [json.loads(line) for line in text.splitlines()]


def _mutants(tasks: dict[str, Task]) -> list[tuple[str, str]]:
    rows = []
    for lang, info in LANGUAGES.items():
        prefix = info.task_prefix
        rows += [(f"{prefix}/{n}", tasks[f"{prefix}/{n}"].canonical_solution) for n in (0, 1)]
        rows += [(f"{prefix}/0", WRONG_TASK0[lang]), (f"{prefix}/0", CRASH[lang]), (f"{prefix}/1", "")]
        if lang in LOOP:
            rows.append((f"{prefix}/0", LOOP[lang]))
    return rows


# ---- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["execute", "s.jsonl", "-o", "r.jsonl"], ["selfcheck"], ["translate", "execute", "d"]],
                         ids=" ".join)
def test_an_unknown_executor_is_refused_naming_the_option(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from codeglm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *command, "--executor", "dask"])
    assert exit_info.value.code == 2
    assert "argument --executor: invalid choice: 'dask'" in capsys.readouterr().err


def test_without_ray_installed_the_ray_executor_says_how_to_get_it(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    _write(samples, [("Python/0", "    return True\n")])
    # `import ray` fails as on a machine without it (a None entry in sys.modules).
    code = ("import sys; sys.modules['ray'] = None; from codeglm.cli import main; "
            f"sys.exit(main(['eval', 'execute', {str(samples)!r}, '-o', {str(tmp_path / 'r.jsonl')!r}, "
            "'--executor', 'ray']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install codeglm[ray]" in done.stderr
    assert not (tmp_path / "r.jsonl").exists()


# ---- on the cluster ---------------------------------------------------------------------------


@needs_root
@pytest.mark.slow
def test_mutants_in_every_language_give_the_local_results(on_cluster: Cluster, tmp_path: Path) -> None:
    tasks, _ = load_tasks(LANGUAGES)
    samples = tmp_path / "samples.jsonl"
    _write(samples, _mutants(tasks))
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    execute_file(samples, local, tasks, workers=2, timeout=6, progress=False)
    summary = execute_file(samples, remote, tasks, timeout=6, progress=False, executor=_ray_runner())
    assert summary.executed == summary.total == len(_mutants(tasks))
    assert _records(remote) == _records(local)
    statuses = {r["status"] for r in _records(remote)}
    assert {"passed", "failed", "compile_error", "runtime_error", "timeout"} <= statuses


@needs_root
@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_without_duplicates(on_cluster: Cluster, tmp_path: Path) -> None:
    tasks, _ = load_tasks(["python"])
    rows = []
    for number in range(10):
        task = tasks[f"Python/{number}"]
        rows += [(task.task_id, SLEEP.format(seconds=0.5) + task.canonical_solution), (task.task_id, WRONG_TASK0["python"])]
    samples, output, local = tmp_path / "samples.jsonl", tmp_path / "results.jsonl", tmp_path / "local.jsonl"
    _write(samples, rows)
    argv = [sys.executable, "-m", "codeglm.cli", "eval", "execute", str(samples), "-o", str(output),
            "--executor", "ray", "--no-progress"]
    driver = subprocess.Popen(argv, cwd=PROJECT, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and driver.poll() is None:
        if output.exists() and len(output.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(30)
    partial = {(r.task_id, r.completion_id) for r in read_results(output).values()}
    assert 3 <= len(partial) < len(rows), "the driver was not killed midway"

    done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(rows) - len(partial)} run now, {len(partial)} reused" in done.stderr
    execute_file(samples, local, tasks, workers=2, timeout=10, progress=False)
    assert output.read_bytes() == local.read_bytes()  # every sample once, in order, the local verdicts


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ray_worker_running_a_program(sessions: tuple[int, ...]) -> int | None:
    """The pid of a Ray worker of ``sessions`` with a sandboxed ``python3 prog.py`` below it
    (the worker's sandbox process in between)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            if argv[:2] != [b"python3", b"prog.py"]:
                continue
            pid = _parent(int(name))
            while pid > 1:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::") and os.getsid(pid) in sessions:
                    return pid
                pid = _parent(pid)
        except (OSError, IndexError, ValueError):
            continue
    return None


@needs_root
@pytest.mark.slow
def test_a_sample_whose_worker_is_killed_is_retried_and_counted_once(on_cluster: Cluster, tmp_path: Path) -> None:
    tasks, _ = load_tasks(["python"])
    task = tasks["Python/0"]
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write(samples, [(task.task_id, SLEEP.format(seconds=3) + task.canonical_solution), ("Python/1", "")])
    killed: list[int] = []

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = _ray_worker_running_a_program(on_cluster.sessions)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    execute_file(samples, output, tasks, timeout=20, progress=False, executor=_ray_runner())
    killer.join(5)
    assert killed, "no Ray worker was seen running the sample"
    records = _records(output)
    assert [(r["task_id"], r["completion_id"], r["status"]) for r in records] == [
        ("Python/0", 0, "passed"), ("Python/1", 0, "failed")
    ]


@needs_root
@pytest.mark.slow
def test_a_node_without_the_toolchain_gives_sandbox_error_naming_tool_and_node(
    on_cluster: Cluster, tmp_path: Path
) -> None:
    import ray

    # Workers whose PATH has python3 but no node: as on a node where node.js is not installed
    # (and bash, which Ray starts a worker with a runtime environment through).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python3", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    tasks, _ = load_tasks(["python", "javascript"])
    rows = [(f"{prefix}/{n}", tasks[f"{prefix}/{n}"].canonical_solution) for prefix in ("Python", "JavaScript")
            for n in (0, 1)]
    samples, output = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write(samples, rows)
    ray.init(address=on_cluster.address, runtime_env={"env_vars": {"PATH": str(bin_dir)}},
             logging_level="WARNING")
    try:
        execute_file(samples, output, tasks, timeout=10, progress=False, executor=_ray_runner())
    finally:
        ray.shutdown()
    records = _records(output)
    assert [r["status"] for r in records] == ["passed", "passed", "sandbox_error", "sandbox_error"]
    for record in records[2:]:
        assert record["reason"].startswith("node not found"), record
        assert f"(on node {socket.gethostname()} (" in record["reason"], record


@needs_root
@pytest.mark.slow
def test_a_task_lost_to_ray_after_its_retries_is_the_samples_sandbox_error(on_cluster: Cluster) -> None:
    import ray

    from evals.ray_executor import _outcome

    ray.init(address=on_cluster.address, logging_level="WARNING")
    try:

        @ray.remote(num_cpus=1, max_retries=0)
        def dies() -> tuple[str, str]:
            os._exit(1)

        status, reason = _outcome(ray, dies.remote())
    finally:
        ray.shutdown()
    assert status == "sandbox_error"
    assert reason.startswith("ray: WorkerCrashedError"), reason
