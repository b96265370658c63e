"""Hostile programs are contained and recorded as failures with a reason.

Each program runs through the real executor (``run_program``) in a Python or C++ task
whose test is trivial, so only the hostile behaviour decides the outcome. The isolation
checks need root (uid switching, network namespaces), as the harness does.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from evals.dataset import Task
from evals.execute import run_program
from evals.sandbox import UID_BASE, Isolation, acquire_slot, probe_isolation

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")

SLOT = acquire_slot()  # held by this process: no concurrent harness run gets its uid


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    found = probe_isolation()
    assert found.switch_user and found.network_namespace, found.reason
    return found


def python_task(body: str) -> Task:
    return Task("Python/0", "python", "def hostile():\n", "", "    pass\n", "hostile()\n")


def run_python(isolation: Isolation, body: str, timeout: float = 3.0) -> tuple[str, str]:
    return run_program(python_task(body), body, SLOT, isolation, timeout)


def no_processes_left(uid: int) -> bool:
    """No process of ``uid`` is left (killed ones may stay zombies until init reaps them)."""
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        alive.append(entry.name)
                except OSError:
                    pass
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.1)


def test_infinite_loop_times_out(isolation: Isolation) -> None:
    started = time.monotonic()
    status, reason = run_python(isolation, "    while True:\n        pass\n", timeout=2.0)
    assert status == "timeout", reason
    assert "2 s" in reason or "CPU" in reason
    assert time.monotonic() - started < 8
    assert no_processes_left(UID_BASE + SLOT)


def test_sleeping_forever_is_killed_by_wall_clock(isolation: Isolation) -> None:
    status, reason = run_python(isolation, "    import time\n    time.sleep(600)\n", timeout=1.5)
    assert status == "timeout", reason


def test_fork_bomb_is_contained(isolation: Isolation) -> None:
    body = "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    started = time.monotonic()
    status, reason = run_python(isolation, body, timeout=3.0)
    assert status in ("timeout", "runtime_error"), reason
    assert time.monotonic() - started < 30
    assert no_processes_left(UID_BASE + SLOT), "fork bomb processes survived the sample"


def test_escaped_daemon_is_killed(isolation: Isolation) -> None:
    # A child that leaves the process group (setsid) and outlives the program.
    body = "    import os, time\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(600)\n"
    status, reason = run_python(isolation, body)
    assert status == "passed", reason
    assert no_processes_left(UID_BASE + SLOT)


def test_4gb_allocation_is_refused_python(isolation: Isolation) -> None:
    status, reason = run_python(isolation, "    x = bytearray(4 << 30)\n    x[-1] = 1\n")
    assert status == "runtime_error", reason
    assert "MemoryError" in reason


def test_4gb_allocation_is_refused_cpp(isolation: Isolation) -> None:
    task = Task("CPP/0", "cpp", "#include <cstring>\n#include <cstdlib>\nint hostile(){\n", "", "", "int main(){ return hostile(); }\n")
    body = "    char* p = new char[4UL << 30];\n    memset(p, 1, 4UL << 30);\n    return p[12345] == 1 ? 0 : 1;\n}\n"
    status, reason = run_program(task, body, SLOT, isolation, 5.0)
    assert status == "runtime_error", reason
    assert "SIGABRT" in reason or "bad_alloc" in reason


def test_100mb_of_output_is_capped(isolation: Isolation) -> None:
    body = "    import sys\n    chunk = 'x' * (1 << 20)\n    for _ in range(100):\n        sys.stdout.write(chunk)\n    sys.stdout.flush()\n"
    status, reason = run_python(isolation, body, timeout=10.0)
    assert status == "runtime_error", reason
    assert "output limit" in reason


def test_cannot_delete_or_change_files_outside_its_directory(isolation: Isolation, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    body = (
        "    import os, shutil\n"
        f"    shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)\n"
        f"    open({str(victim)!r}, 'w').write('gone')\n"
    )
    status, reason = run_python(isolation, body)
    assert status == "runtime_error", reason
    # Under /tmp the sample sees its private tmpfs (the file is not there); elsewhere, no permission.
    assert "PermissionError" in reason or "FileNotFoundError" in reason, reason
    assert victim.read_text() == "keep me"


def test_nothing_left_behind_in_shared_temp_dirs(isolation: Isolation) -> None:
    marker = f"codeglm-test-leftover-{os.getpid()}"
    body = f"    open('/tmp/{marker}', 'w').write('x')\n    open('/dev/shm/{marker}', 'w').write('x')\n"
    status, reason = run_python(isolation, body)
    assert status == "passed", reason
    assert not Path(f"/tmp/{marker}").exists()
    assert not Path(f"/dev/shm/{marker}").exists()


def test_no_network_even_to_localhost(isolation: Isolation) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # the kernel completes handshakes into the backlog without accept()
    port = server.getsockname()[1]
    body = f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n"
    status, reason = run_python(isolation, body)
    server.setblocking(False)
    try:
        connection, _ = server.accept()
        connection.close()
        connected = True
    except BlockingIOError:
        connected = False
    server.close()
    assert status == "runtime_error", reason
    assert "OSError" in reason or "unreachable" in reason.lower() or "refused" in reason.lower()
    assert not connected, "the sample reached the host's loopback"


def test_network_check_would_see_a_connection() -> None:
    """The check above can fail: an unsandboxed connection does land in the backlog."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    socket.create_connection(server.getsockname(), timeout=2).close()
    server.settimeout(2)
    connection, _ = server.accept()
    connection.close()
    server.close()
