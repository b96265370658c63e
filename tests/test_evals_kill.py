"""A killed ``codeglm eval execute`` leaves nothing running, and a rerun finishes the job.

The driver is SIGKILLed mid-run as a real process: its workers must die with it (they
would wait for work forever, holding sandbox slots), and so must the sandboxed programs
they started (which run as a slot's uid in sessions of their own). Then the same command
again completes the results file: every sample once, with the right verdict. Slot locks
that a killed run left behind are reclaimed by the next run, their uid's processes killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.dataset import load_tasks
from evals.sandbox import UID_BASE

PROJECT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")

SAMPLES = 18
WORKERS = 3


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks since boot), or None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0].decode(), int(fields[19])


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _processes() -> dict[int, tuple[int, str, int]]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                found[int(entry.name)] = info
    return found


def _descendants(root: int) -> set[int]:
    processes = _processes()
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, _, _) in processes.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree - {root}


def _now_ticks() -> int:
    with open("/proc/uptime") as handle:
        return int(float(handle.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _write_samples(path: Path) -> list[tuple[str, bool]]:
    """Python samples that sleep, half right and half wrong: (task id, should pass)."""
    tasks, _ = load_tasks(["python"])
    rows, expected = [], []
    for number in range(SAMPLES):
        task = tasks[f"Python/{number // 2}"]
        right = number % 2 == 0
        body = task.canonical_solution if right else "    return None\n"
        rows.append({"task_id": task.task_id, "generation": "    import time; time.sleep(1.5)\n" + body})
        expected.append((task.task_id, right))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return expected


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _survivors(watched: dict[int, int], uids: set[int], killed_at: int) -> list[str]:
    """Live processes of the killed run: a watched one (same pid and start time) or any
    process of the run's slot uids that started before the kill. Zombies are dead."""
    alive = []
    for pid, (_, state, started) in _processes().items():
        if state == "Z":
            continue
        if watched.get(pid) == started or (_uid(pid) in uids and started <= killed_at):
            alive.append(f"{pid} (uid {_uid(pid)}): {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
    return alive


@pytest.mark.slow
@pytest.mark.parametrize("target", ["driver", "process group"])
def test_killed_driver_leaves_no_process_and_a_rerun_completes(tmp_path: Path, target: str) -> None:
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    expected = _write_samples(samples)
    argv = [sys.executable, "-m", "codeglm.cli", "eval", "execute", str(samples), "-o", str(results)]
    argv += ["--workers", str(WORKERS), "--timeout", "20", "--no-progress"]
    driver = subprocess.Popen(argv, cwd=PROJECT, start_new_session=True, stderr=subprocess.DEVNULL)

    # Watch the run's process tree until results are on disk and programs are running.
    watched: dict[int, int] = {}
    uids: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        for pid in _descendants(driver.pid):
            info, uid = _stat(pid), _uid(pid)
            if info is not None and uid is not None:
                watched[pid] = info[2]
                if uid >= UID_BASE:
                    uids.add(uid)
        if len(_lines(results)) >= 2 and uids:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    for pid, (_, _, started) in _processes().items():  # programs that left the tree (none expected)
        if _uid(pid) in uids:
            watched[pid] = started
    if target == "driver":
        os.kill(driver.pid, signal.SIGKILL)
    else:
        os.killpg(driver.pid, signal.SIGKILL)
    killed_at = _now_ticks()
    driver.wait()
    done = _lines(results)
    assert 2 <= len(done) < SAMPLES, "the run was not killed midway"
    assert len(watched) > WORKERS and uids, "no workers or programs were seen"

    deadline = time.monotonic() + 5
    while (alive := _survivors(watched, uids, killed_at)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == [], "processes of the killed run survived"

    rerun = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in _lines(results)]
    assert [(r["task_id"], r["completion_id"]) for r in records] == [
        (task_id, index % 2) for index, (task_id, _) in enumerate(expected)
    ]
    for record, (_, right) in zip(records, expected, strict=True):
        # `return None` fails an assertion or crashes the test code, depending on the task.
        assert record["status"] in (("passed",) if right else ("failed", "runtime_error")), record
        assert record["passed"] is right
    assert set(done) <= {json.dumps(r) for r in records}  # what the killed run wrote is kept as is


ORPHAN = """
import os, sys, time
from evals.execute import _die_with_driver
report = sys.argv[1]
driver = os.getpid()
if os.fork() != 0:
    os._exit(0)  # the driver dies before its worker has asked to die with it
while os.getppid() == driver:
    time.sleep(0.01)
with open(report, "a") as handle:
    handle.write("asking|")
_die_with_driver(driver)
with open(report, "a") as handle:
    handle.write("still alive")
"""


def test_a_worker_whose_driver_died_before_it_asked_exits(tmp_path: Path) -> None:
    report = tmp_path / "report"
    subprocess.run([sys.executable, "-c", ORPHAN, str(report)], cwd=PROJECT, check=True, timeout=30)
    deadline = time.monotonic() + 10
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time enough to write "still alive" if _die_with_driver returned
    assert report.read_text() == "asking|"


# ---- stale slot locks -------------------------------------------------------------------------

# A uid range of its own, far from the real one, and a lock directory of its own: this
# test must not reclaim (kill) a slot of a harness run that is going on beside it.
TEST_UID_BASE = 3_900_000 + (os.getpid() % 1000) * 16

RECLAIM = """
import json
from evals.sandbox import acquire_slot
slot = acquire_slot()
print(json.dumps({"slot": slot}))
"""


def _sleeper(uid: int) -> subprocess.Popen[bytes]:
    """A leftover program of ``uid`` in a session of its own, as a killed worker leaves one."""
    return subprocess.Popen(
        ["sleep", "600"], user=uid, group=TEST_UID_BASE - 2, extra_groups=[], start_new_session=True
    )


def test_a_new_run_reclaims_stale_slots_and_skips_held_ones(tmp_path: Path) -> None:
    import fcntl

    locks = tmp_path / "codeglm-sandbox-slots"
    locks.mkdir()
    # Slot 0: held by a live run (this process) whose program runs: neither may be touched.
    held = os.open(locks / "0.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    live = _sleeper(TEST_UID_BASE)
    # Slot 1: a directory where a lock file should be (another tool's leftover): skipped.
    (locks / "1.lock").mkdir()
    # Slot 2: a killed run's lock file (unlocked), a program still running and a file it left.
    (locks / "2.lock").write_text("stale")
    stale = _sleeper(TEST_UID_BASE + 2)
    leftover = Path("/tmp") / f"codeglm-test-leftover-{os.getpid()}"
    leftover.write_text("x")
    os.chown(leftover, TEST_UID_BASE + 2, TEST_UID_BASE - 2)
    try:
        env = {**os.environ, "CODEGLM_SANDBOX_LOCKS": str(tmp_path)}
        env["CODEGLM_SANDBOX_UID_BASE"] = str(TEST_UID_BASE)
        out = subprocess.run(
            [sys.executable, "-c", RECLAIM], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"slot": 2}
        assert stale.wait(5) == -signal.SIGKILL
        assert not leftover.exists()
        assert live.poll() is None, "the held slot's program was killed"
    finally:
        for process in (live, stale):
            process.kill()
            process.wait()
        os.close(held)
        leftover.unlink(missing_ok=True)
