"""Hostile samples, per language, through the real executor: each gets its verdict and
leaves nothing behind (no process of the slot's uid, no file in a world-writable place).

Every program is a real HumanEval-X task 0 (``has_close_elements``) with a hostile body,
so the dataset's own checks and the harness's epilogue are what they are in a real run.
Cheap languages get most cases; the compiled ones a few each. Needs root, like the
harness's isolation.
"""

from __future__ import annotations

import mmap
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from evals import sandbox_mounts
from evals.dataset import load_tasks
from evals.execute import EARLY_EXIT_REASON, MEMORY_LIMIT_REASON, run_program
from evals.memory_watch import measure, tree_pids
from evals.sandbox import UID_BASE, Isolation, acquire_slot, probe_isolation
from evals.toolchains import check_toolchain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")

SLOT = acquire_slot()
UID = UID_BASE + SLOT
TASKS, _ = load_tasks(["python", "cpp", "java", "javascript", "go", "rust"])


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    found = probe_isolation()
    assert found.switch_user and found.network_namespace and found.private_mounts, found.reason
    return found


def uid_processes(uid: int) -> list[str]:
    """Live (not zombie) processes of ``uid``, after up to 5 s for the last ones to die."""
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue
            except (OSError, IndexError):
                continue
            alive.append(entry.name)
        if not alive or time.monotonic() > deadline:
            return alive


@cache
def machine_world_writable_dirs() -> tuple[str, ...]:
    """Every directory anyone may write on this machine (found once: ``find`` over / takes seconds)."""
    found = subprocess.run(
        ["find", "/", "/dev/shm", "-xdev", "-type", "d", "-perm", "-0002"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return tuple(sorted({*found, "/run/lock"}))


def uid_files(uid: int) -> list[str]:
    """Files of ``uid`` anywhere under the machine's world-writable directories."""
    listed = subprocess.run(
        ["find", *machine_world_writable_dirs(), "-xdev", "-user", str(uid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split()


def run(isolation: Isolation, task_id: str, body: str, timeout: float = 10.0) -> tuple[str, str]:
    language = TASKS[task_id].language
    problem = check_toolchain(language)
    if problem:
        pytest.fail(f"{language}: {problem}")
    outcome = run_program(TASKS[task_id], body, SLOT, isolation, timeout)
    assert uid_processes(UID) == [], f"processes of the sample outlived {task_id}"
    assert uid_files(UID) == [], f"files of the sample outlived {task_id}"
    return outcome


# ---- 1. exiting with status 0 before the checks finished -----------------------------------

EARLY_EXITS = {
    "python os._exit": ("Python/0", "    import os\n    os._exit(0)\n"),
    "python sys.exit in the function": ("Python/0", "    import sys\n    sys.exit(0)\n"),
    "python raise SystemExit": ("Python/0", "    raise SystemExit(0)\n"),
    "python atexit hook os._exit after a failed check": (
        "Python/0",
        "    import atexit, os\n    atexit.register(lambda: os._exit(0))\n    return False\n",
    ),
    "python excepthook exits 0": (
        "Python/0",
        "    import sys, os\n    sys.excepthook = lambda *a: os._exit(0)\n    return False\n",
    ),
    "cpp exit": ("CPP/0", "    exit(0);\n}\n"),
    "cpp _Exit": (
        "CPP/0",
        "    return false;\n}\n#include <cstdlib>\nstatic int hostile = (std::_Exit(0), 0);\n",
    ),
    "cpp quick_exit": (
        "CPP/0",
        "    return false;\n}\n#include <cstdlib>\nstatic int hostile = (std::quick_exit(0), 0);\n",
    ),
    "cpp atexit hook _Exit after exit(1)": (
        "CPP/0",
        "    exit(1);\n}\n#include <cstdlib>\nstatic int hostile = (std::atexit([] { std::_Exit(0); }), 0);\n",
    ),
    "cpp SIGABRT handler exits 0 after a failed assert": (
        "CPP/0",
        "    return false;\n}\n#include <csignal>\n#include <cstdlib>\n"
        "static int hostile = (std::signal(SIGABRT, [](int) { std::_Exit(0); }), 0);\n",
    ),
    "java System.exit": ("Java/0", "        System.exit(0);\n        return false;\n    }\n}\n"),
    "java Runtime.halt": (
        "Java/0",
        "        Runtime.getRuntime().halt(0);\n        return false;\n    }\n}\n",
    ),
    "java shutdown hook halts 0 after a failed check": (
        "Java/0",
        "        Runtime.getRuntime().addShutdownHook(new Thread(() -> Runtime.getRuntime().halt(0)));\n"
        "        return false;\n    }\n}\n",
    ),
    "js process.exit": ("JavaScript/0", "  process.exit(0)\n}\n"),
    "js process.reallyExit": ("JavaScript/0", "  process.reallyExit(0)\n}\n"),
    "js exit handler resets the status after failed asserts": (
        "JavaScript/0",
        "  process.on('exit', () => { process.exitCode = 0 })\n  return false\n}\n",
    ),
    "go os.Exit": ("Go/0", "    os.Exit(0)\n    return false\n}\n"),
    "rust process::exit": ("Rust/0", "    std::process::exit(0);\n}\n"),
    "rust panic hook exits 0 after a failed assert": (
        "Rust/0",
        "    std::panic::set_hook(Box::new(|_| std::process::exit(0)));\n    return false;\n}\n",
    ),
}


@pytest.mark.parametrize("case", list(EARLY_EXITS))
def test_exiting_0_before_the_checks_end_is_not_a_pass(isolation: Isolation, case: str) -> None:
    task_id, body = EARLY_EXITS[case]
    status, reason = run(isolation, task_id, body)
    assert (status, reason) == ("failed", EARLY_EXIT_REASON)


@pytest.mark.parametrize("task_id", ["Python/0", "CPP/0", "Java/0", "JavaScript/0", "Go/0", "Rust/0"])
def test_the_canonical_solution_still_passes(isolation: Isolation, task_id: str) -> None:
    """The control for the cases above: the same task, checks run to their end, passes."""
    assert run(isolation, task_id, TASKS[task_id].canonical_solution) == ("passed", "")


def test_exiting_0_after_the_checks_passed_is_a_pass(isolation: Isolation) -> None:
    """An atexit hook that exits 0 is harmless once every check has run."""
    body = (
        "    import atexit, os\n    atexit.register(lambda: os._exit(0))\n"
        + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")


def test_printing_a_guessed_end_line_is_not_a_pass(isolation: Isolation) -> None:
    """The token is fresh per run: a line that looked like one does not pass."""
    body = "    import os\n    print('\\n' + '0' * 32, flush=True)\n    os._exit(0)\n"
    assert run(isolation, "Python/0", body) == ("failed", EARLY_EXIT_REASON)


# ---- 2. files outside the sample's directory; 3. Unix sockets on disk ----------------------


@pytest.fixture(scope="module")
def world_writable_dirs() -> Iterator[list[str]]:
    """Every directory anyone may write on this machine, plus two of our own: one under /tmp
    (what a cleanup of the top of /tmp missed) and one on disk outside every temp place."""
    nested = tempfile.mkdtemp(prefix="codeglm-test-ww-", dir="/tmp")
    on_disk = tempfile.mkdtemp(prefix="codeglm-test-ww-", dir="/var/cache")  # not a temp place
    for path in (nested, on_disk):
        os.chmod(path, 0o1777)
    yield sorted({*machine_world_writable_dirs(), nested, on_disk})
    for path in (nested, on_disk):
        shutil.rmtree(path, ignore_errors=True)


def leftovers(dirs: list[str], marker: str) -> list[str]:
    return [os.path.join(d, marker) for d in dirs if os.path.lexists(os.path.join(d, marker))]


def test_files_written_anywhere_die_with_the_run(
    isolation: Isolation, world_writable_dirs: list[str]
) -> None:
    marker = f"codeglm-leftover-{secrets.token_hex(4)}"
    # The program writes a file (and a detached child keeps writing) in every world-writable
    # place; it must succeed at least in its private /tmp, /var/tmp and /dev/shm, or this
    # test would prove nothing.
    body = (
        "    import os\n"
        f"    dirs = {world_writable_dirs!r}\n"
        "    written = []\n"
        "    for d in dirs:\n"
        "        try:\n"
        f"            with open(os.path.join(d, {marker!r}), 'w') as f:\n"
        "                f.write('x')\n"
        "            written.append(d)\n"
        "        except OSError:\n"
        "            pass\n"
        "    assert {'/tmp', '/var/tmp', '/dev/shm'} <= set(written), written\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        import time\n"
        "        while True:\n"
        "            for d in written:\n"
        "                try:\n"
        f"                    open(os.path.join(d, {marker!r} + '-late'), 'w').close()\n"
        "                except OSError:\n"
        "                    pass\n"
        "            time.sleep(0.01)\n" + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")
    assert leftovers(world_writable_dirs, marker) == []
    assert leftovers(world_writable_dirs, marker + "-late") == []


def test_a_world_writable_directory_check_would_see_a_file(world_writable_dirs: list[str]) -> None:
    """The check above can fail: a file written from outside the sandbox is found."""
    marker = f"codeglm-control-{secrets.token_hex(4)}"
    nested = next(d for d in world_writable_dirs if d.startswith("/tmp/codeglm-test-ww-"))
    Path(nested, marker).write_text("x")
    assert leftovers(world_writable_dirs, marker) == [os.path.join(nested, marker)]
    os.chown(os.path.join(nested, marker), UID, -1)
    try:
        assert os.path.join(nested, marker) in uid_files(UID)  # the check every run() makes
    finally:
        os.unlink(os.path.join(nested, marker))


def test_unix_socket_on_disk_is_unreachable(isolation: Isolation) -> None:
    path = f"/tmp/codeglm-test-{secrets.token_hex(4)}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(8)
    server.setblocking(False)
    try:
        body = (
            "    import socket\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"    s.connect({path!r})\n"
            "    s.sendall(b'escaped')\n" + TASKS["Python/0"].canonical_solution
        )
        status, reason = run(isolation, "Python/0", body)
        try:
            connection, _ = server.accept()
            connection.close()
            reached = True
        except BlockingIOError:
            reached = False
    finally:
        server.close()
        os.unlink(path)
    assert status == "runtime_error", reason
    assert "FileNotFoundError" in reason or "ConnectionRefusedError" in reason, reason
    assert not reached, "the sample connected to a socket of the machine"


def test_unix_socket_check_would_see_a_connection() -> None:
    """The check above can fail: an unsandboxed client does land in the backlog."""
    path = f"/tmp/codeglm-test-{secrets.token_hex(4)}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.sendall(b"hi")
        connection, _ = server.accept()
        assert connection.recv(2) == b"hi"
        connection.close()
        client.close()
    finally:
        server.close()
        os.unlink(path)


# ---- 4. memory past the limit, shared memory included ------------------------------------

TOUCH = "    def touch(m):\n        for i in range(0, len(m), 4096):\n            m[i] = 1\n"


def test_shared_anonymous_mapping_over_the_limit_is_killed(isolation: Isolation) -> None:
    body = "    import mmap\n" + TOUCH + "    m = mmap.mmap(-1, 2 << 30, mmap.MAP_SHARED)\n    touch(m)\n"
    assert run(isolation, "Python/0", body) == ("runtime_error", MEMORY_LIMIT_REASON)


def test_mapped_memfds_over_the_limit_are_killed(isolation: Isolation) -> None:
    # Each memfd stays under RLIMIT_FSIZE (16 MiB); together they are 1.6 GiB.
    body = (
        "    import mmap, os\n" + TOUCH + "    keep = []\n"
        "    for i in range(100):\n"
        "        fd = os.memfd_create(f'm{i}')\n"
        "        os.ftruncate(fd, 16 << 20)\n"
        "        m = mmap.mmap(fd, 16 << 20, mmap.MAP_SHARED)\n"
        "        touch(m)\n"
        "        keep.append(m)\n"
    )
    assert run(isolation, "Python/0", body) == ("runtime_error", MEMORY_LIMIT_REASON)


def test_unmapped_memfds_over_the_limit_are_killed(isolation: Isolation) -> None:
    body = (
        "    import os\n    chunk = b'x' * (15 << 20)\n    keep = []\n"
        "    for i in range(120):\n"
        "        fd = os.memfd_create(f'm{i}')\n"
        "        os.write(fd, chunk)\n"
        "        keep.append(fd)\n"
    )
    assert run(isolation, "Python/0", body) == ("runtime_error", MEMORY_LIMIT_REASON)


def test_shared_memory_spread_over_many_processes_is_killed(isolation: Isolation) -> None:
    body = (
        "    import mmap, os, time\n" + TOUCH + "    for _ in range(20):\n"
        "        if os.fork() == 0:\n"
        "            m = mmap.mmap(-1, 100 << 20, mmap.MAP_SHARED)\n"
        "            touch(m)\n"
        "            time.sleep(600)\n"
        "    time.sleep(600)\n"
    )
    assert run(isolation, "Python/0", body) == ("runtime_error", MEMORY_LIMIT_REASON)


def test_dev_shm_files_are_bounded(isolation: Isolation) -> None:
    # Files of 15 MiB (under RLIMIT_FSIZE), 2 GiB in all: the private tmpfs is full first.
    body = (
        "    chunk = b'x' * (15 << 20)\n"
        "    for i in range(140):\n"
        "        with open(f'/dev/shm/big{i}', 'wb') as f:\n"
        "            f.write(chunk)\n"
    )
    status, reason = run(isolation, "Python/0", body)
    assert status == "runtime_error" and "No space left on device" in reason, reason


def test_shared_mapping_over_the_limit_is_killed_cpp(isolation: Isolation) -> None:
    body = (
        "    return false;\n}\n#include <sys/mman.h>\n#include <cstring>\n"
        "static int hostile = [] {\n"
        "    size_t n = 2UL << 30;\n"
        "    char* p = (char*)mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);\n"
        "    memset(p, 1, n);\n"
        "    return (int)p[n - 1];\n"
        "}();\n"
    )
    assert run(isolation, "CPP/0", body) == ("runtime_error", MEMORY_LIMIT_REASON)


def test_shared_memory_under_the_limit_passes(isolation: Isolation) -> None:
    """The control: 400 MiB of shared memory is allowed, and the checks then pass."""
    body = (
        "    import mmap\n"
        + TOUCH
        + "    m = mmap.mmap(-1, 400 << 20, mmap.MAP_SHARED)\n    touch(m)\n"
        + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")


def test_measure_counts_memfds_once_mapped_or_not() -> None:
    fd = os.memfd_create("codeglm-test")
    try:
        before = measure([os.getpid()])
        os.write(fd, b"x" * (64 << 20))
        held = measure([os.getpid()])
        assert held.unmapped_memfd - before.unmapped_memfd >= 64 << 20
        with mmap.mmap(fd, 64 << 20, mmap.MAP_SHARED) as mapping:
            mapping[::4096] = b"y" * (16 << 10)
            mapped = measure([os.getpid()])
            assert mapped.unmapped_memfd == before.unmapped_memfd  # now in Pss, not twice
            assert mapped.pss - held.pss >= 60 << 20
    finally:
        os.close(fd)


# ---- processes that outlive the run, fork bombs -------------------------------------------


def test_double_forked_daemon_is_killed_python(isolation: Isolation) -> None:
    body = (
        "    import os, time\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600)\n"
        "        os._exit(0)\n" + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")  # run() checks nothing of the uid is left


def test_detached_child_process_is_killed_js(isolation: Isolation) -> None:
    body = (
        "  require('child_process').spawn('sleep', ['600'], {detached: true, stdio: 'ignore'}).unref()\n"
        + TASKS["JavaScript/0"].canonical_solution
    )
    assert run(isolation, "JavaScript/0", body) == ("passed", "")


def test_fork_bomb_is_contained_cpp(isolation: Isolation) -> None:
    body = "    return false;\n}\n#include <unistd.h>\nstatic int hostile = [] { for (;;) fork(); return 0; }();\n"
    started = time.monotonic()
    status, reason = run(isolation, "CPP/0", body, timeout=3.0)
    assert status in ("timeout", "runtime_error"), reason
    assert time.monotonic() - started < 30


def test_tree_pids_finds_descendants() -> None:
    """Without a uid of its own (not root), the watch goes by the process tree."""
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(tree_pids(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        found = tree_pids(os.getpid())
        assert child.pid in found and len(tree_pids(child.pid)) == 2
        assert measure(tree_pids(child.pid)).pss > 0
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def sysv_segments_of(uid: int) -> list[str]:
    with open("/proc/sysvipc/shm") as handle:
        rows = [line.split() for line in handle.readlines()[1:]]
    return [row[1] for row in rows if len(row) > 7 and row[7] == str(uid)]


def test_system_v_shared_memory_is_bounded_and_private(isolation: Isolation) -> None:
    # A 64 MiB segment left behind (created, never removed) and one over the limit refused.
    body = (
        "    import ctypes\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]\n"
        "    assert libc.shmget(0, 64 << 20, 0o1600) >= 0, ctypes.get_errno()\n"
        "    assert libc.shmget(0, 2 << 30, 0o1600) == -1\n" + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")
    assert sysv_segments_of(UID) == []


def test_a_failed_isolation_step_is_a_sandbox_error_not_an_unisolated_run(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(1, "mount refused")

    monkeypatch.setattr(sandbox_mounts, "enter_private_mounts", refuse)
    status, reason = run(isolation, "Python/0", TASKS["Python/0"].canonical_solution)
    assert status == "sandbox_error" and "cannot start" in reason, reason


def test_setuid_programs_do_not_change_the_uid(isolation: Isolation) -> None:
    """Setuid programs exist on the machine (mount, passwd); in the sandbox every mount is
    nosuid, so they would run as the sample's uid (and stay within the kill by uid)."""
    body = (
        "    import os\n"
        "    for path in ('/', '/usr/bin', os.getcwd(), '/tmp', '/dev/shm'):\n"
        "        assert os.statvfs(path).f_flag & os.ST_NOSUID, path\n" + TASKS["Python/0"].canonical_solution
    )
    assert run(isolation, "Python/0", body) == ("passed", "")
