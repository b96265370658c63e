"""Run untrusted programs in isolation: one ``Sandbox`` per sample.

What a sandbox guarantees when the harness runs as root on Linux (the supported setup):

* its own directory (mode 700, owned by the slot's uid), removed afterwards, and the
  working directory and ``TMPDIR``/``HOME`` of every step;
* an unprivileged uid of its own per worker slot (no passwd entry needed), no
  supplementary groups: files outside its directory that are not world-writable cannot
  be changed; ``RLIMIT_NPROC`` then bounds its processes and threads (fork bombs);
* a fresh network namespace per step (``unshare(CLONE_NEWNET)``): no interface but a
  downed loopback, so no connection anywhere, 127.0.0.1 included;
* a private mount and IPC namespace per step (``evals.sandbox_mounts``): the machine
  read-only, fresh size-bounded tmpfs over /tmp, /var/tmp, /dev/shm, /run, /dev/mqueue
  (what it writes there dies with the step; others' files and Unix sockets there are
  hidden), its own directory bound back writable;
* limits per step: wall clock (the whole process group, then every process of the uid,
  is SIGKILLed), ``RLIMIT_CPU``, ``RLIMIT_DATA`` (heap and writable mappings: a 4 GB
  allocation is refused, while the JVM's, Go's and V8's large address-space
  reservations still work), the memory its processes really hold, shared mappings and
  memfds included (``evals.memory_watch``, ``Limits.resident_bytes``), ``RLIMIT_FSIZE``
  (caps stdout/stderr, which go to files, and every file written), ``RLIMIT_CORE`` = 0;
* nothing left running: after each step every process of the uid is killed.

Not guaranteed: reading world-readable files, reaching a Unix socket others may write
outside the covered places, CPU contention (a fork bomb's processes compete for the
cores until its wall-clock limit). Where mount namespaces are refused, files the uid
left at the top of /tmp, /var/tmp and /dev/shm are removed at close instead. Without
root the sandbox degrades to the current user with the same rlimits, the memory watch
over the process tree, no network isolation and no private mounts (``Isolation.reason``).

The build step of a compiled language runs with ``build=True``: group ``BUILD_GID``
and umask 002, so it can write the shared Go build cache (group-writable, setgid);
the program itself runs with ``RUN_GID``, which cannot enter that cache.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from evals import sandbox_mounts
from evals.memory_watch import MemoryWatch, tree_pids, uid_pids

CLONE_NEWNET = 0x40000000
# Unprivileged ids for sandboxes: far above ordinary users; slot i runs as UID_BASE + i.
UID_BASE = int(os.environ.get("CODEGLM_SANDBOX_UID_BASE", "3000000"))
BUILD_GID = UID_BASE - 1
RUN_GID = UID_BASE - 2
# The uid of slot i's warm javac (evals/javac_daemon.py): not the slot's, so its programs cannot touch it.
COMPILER_UID_OFFSET = 100000
SCANNED_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
OUTPUT_KEEP_BYTES = 4096


@dataclass(frozen=True)
class Limits:
    """Per-step limits. ``memory_bytes`` is RLIMIT_DATA (address space a program may make
    writable: the JVM needs more than it uses); ``resident_bytes`` is what its processes may
    really hold, shared memory included; ``output_bytes`` is RLIMIT_FSIZE."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    max_processes: int = 256
    output_bytes: int = 16 << 20
    open_files: int = 1024
    tmpfs_bytes: int = 64 << 20  # each private tmpfs (/tmp, /var/tmp, /dev/shm, /run, /dev/mqueue)
    resident_bytes: int = 1 << 30  # memory the processes hold, shared included (evals.memory_watch)


@dataclass(frozen=True)
class StepResult:
    """What one step did. ``stdout``/``stderr`` keep the first and last bytes only."""

    argv: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    wall_seconds: float
    stdout: str
    stderr: str
    output_limit_hit: bool
    memory_limit_hit: bool = False

    @property
    def signal_name(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Isolation:
    """What this process can enforce: ids switching (root), network namespaces, private mounts."""

    switch_user: bool
    network_namespace: bool
    reason: str = ""
    private_mounts: bool = False


_HELD_SLOTS: dict[int, int] = {}


def acquire_slot(max_slots: int = 4096) -> int:
    """A slot (hence a uid) no other process on this machine holds, kept until exit.

    Two harness runs at once must never share a uid: cleaning up one sample kills every
    process of its uid. The claim is an flock on a per-slot file, released by the kernel
    when the last process holding it exits, so a killed run leaves no stale claim (its
    lock files stay and are simply locked again). What a killed run can leave is processes
    of the slot's uid and their files in the temp dirs (a worker killed mid-sample, and
    the guard that kills its programs killed too): the slot is reclaimed before it is
    used. A lock path that cannot be opened (say a directory left there) is skipped.
    """
    lock_dir = _slot_lock_dir()
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for slot in range(max_slots):
        try:
            fd = os.open(lock_dir / f"{slot}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _HELD_SLOTS[slot] = fd
        reclaim_slot(slot)
        return slot
    raise RuntimeError(f"all {max_slots} sandbox slots are taken")


def _slot_lock_dir() -> Path:
    default = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    return Path(os.environ.get("CODEGLM_SANDBOX_LOCKS", default)) / "codeglm-sandbox-slots"


def reclaim_slot(slot: int) -> None:
    """Kill every process of the slot's uid and remove its files at the top of the temp
    dirs: only the lock's holder may call this, so all of them are an earlier holder's
    leftovers. Without root no sandbox ran as that uid, and it could not be killed."""
    if os.geteuid() != 0:
        return
    kill_uid(UID_BASE + slot)
    kill_uid(compiler_uid(slot))
    _remove_owned(UID_BASE + slot)
    _remove_owned(compiler_uid(slot))  # a javac server's directory (evals/javac_daemon.py)


def compiler_uid(slot: int) -> int:
    """The uid slot ``slot``'s compiler server runs as (never a slot's own uid)."""
    return UID_BASE + COMPILER_UID_OFFSET + slot


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def probe_isolation() -> Isolation:
    """Check once, in a throwaway child, what isolation works here."""
    if os.geteuid() != 0:
        return Isolation(False, False, "not running as root: samples run as the current user, with network")
    pid = os.fork()
    if pid == 0:  # child: try a network namespace, report through the exit status
        code = 1
        try:
            code = 0 if _libc().unshare(CLONE_NEWNET) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    network = os.waitstatus_to_exitcode(status) == 0
    mounts_problem = sandbox_mounts.probe(_libc())
    reasons = []
    if not network:
        reasons.append("unshare(CLONE_NEWNET) not permitted here: samples have network")
    if mounts_problem:
        reasons.append(
            f"no private mounts ({mounts_problem}): samples share /tmp, /run and /dev/shm with the machine"
        )
    return Isolation(True, network, "; ".join(reasons), not mounts_problem)


def _read_capped(path: Path) -> tuple[str, int]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size <= 2 * OUTPUT_KEEP_BYTES:
                data = handle.read()
            else:
                head = handle.read(OUTPUT_KEEP_BYTES)
                handle.seek(size - OUTPUT_KEEP_BYTES)
                data = head + b"\n[... output cut ...]\n" + handle.read()
    except OSError:
        return "", 0
    return data.decode("utf-8", "replace"), size


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (kill(-1) from a child that became ``uid``)."""
    for _ in range(50):  # a fork bomb may fork while being killed: repeat until none is alive
        pid = os.fork()
        if pid == 0:  # never return into the caller's code, whatever happens (even Ctrl-C)
            try:
                os.setgroups([])
                os.setgid(RUN_GID)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not _uid_has_processes(uid):
            return
        time.sleep(0.01)


def _uid_has_processes(uid: int) -> bool:
    """Whether a live (not zombie) process of ``uid`` exists."""
    for pid in uid_pids(uid):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            return True
    return False


@dataclass
class Sandbox:
    """One sample's isolated directory and identity; use as a context manager."""

    slot: int
    isolation: Isolation
    base_dir: Path | None = None
    directory: Path = field(init=False)
    uid: int = field(init=False)

    def __enter__(self) -> Sandbox:
        self.uid = UID_BASE + self.slot if self.isolation.switch_user else os.getuid()
        self.directory = Path(tempfile.mkdtemp(prefix="codeglm-sample-", dir=self.base_dir))
        if self.isolation.switch_user:
            os.chown(self.directory, self.uid, RUN_GID)
        os.chmod(self.directory, 0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        if self.isolation.switch_user:
            os.chown(path, self.uid, RUN_GID)
        return path

    def run(
        self, argv: list[str], limits: Limits, env: dict[str, str] | None = None, build: bool = False
    ) -> StepResult:
        """Run one command to completion (or its limit) inside the sandbox."""
        step_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.directory),
            "TMPDIR": str(self.directory),
            "LANG": "C.UTF-8",
        }
        step_env.update(env or {})
        out_path = self.directory / ".codeglm-stdout"
        err_path = self.directory / ".codeglm-stderr"
        isolation = self.isolation
        uid = self.uid
        gid = BUILD_GID if build else RUN_GID
        libc = _libc()
        plan = sandbox_mounts.mount_plan(limits.tmpfs_bytes) if isolation.private_mounts else None
        directory = str(self.directory)

        def child_setup() -> None:  # runs in the child between fork and exec
            if isolation.network_namespace:
                libc.unshare(CLONE_NEWNET)
            if plan is not None:
                sandbox_mounts.enter_private_mounts(libc, plan, directory, limits.resident_bytes)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
            os.umask(0o002 if build else 0o077)
            if isolation.switch_user:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                # After setuid, so the count is for the sandbox uid (root is exempt anyway).
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

        started = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=self.directory,
                    env=step_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=child_setup,
                    close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: child_setup failed
                return StepResult(tuple(argv), None, False, 0.0, "", f"cannot start {argv[0]}: {exc}", False)
            # The sample's uid names all its processes, daemons included; without root, its tree.
            root = process.pid
            pids = (lambda: uid_pids(uid)) if isolation.switch_user else (lambda: tree_pids(root))
            with MemoryWatch(limits.resident_bytes, pids, lambda: self._kill(root)) as watch:
                try:
                    returncode: int | None = process.wait(timeout=limits.wall_seconds)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    self._kill(process.pid)
                    returncode = process.wait()
        self._kill(process.pid)
        wall = time.monotonic() - started
        stdout, out_size = _read_capped(out_path)
        stderr, err_size = _read_capped(err_path)
        hit = returncode == -signal.SIGXFSZ or max(out_size, err_size) >= limits.output_bytes
        return StepResult(tuple(argv), returncode, timed_out, wall, stdout, stderr, hit, watch.exceeded)

    def _kill(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.isolation.switch_user:
            # Processes that left the group (setsid, daemonised) still have the uid.
            kill_uid(self.uid)

    def close(self) -> None:
        if self.isolation.switch_user:
            kill_uid(self.uid)
            if not self.isolation.private_mounts:  # else its temp files died with its namespace
                _remove_owned(self.uid)
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.directory.exists():  # e.g. a read-only subdirectory: make writable, retry
            for root, dirs, _ in os.walk(self.directory):
                for name in dirs:
                    os.chmod(os.path.join(root, name), stat.S_IRWXU)
            shutil.rmtree(self.directory, ignore_errors=True)


def _remove_owned(uid: int) -> None:
    """Remove what ``uid`` created at the top of the shared temp dirs."""
    for temp in SCANNED_TEMP_DIRS:
        try:
            entries = list(os.scandir(temp))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
