"""A private view of the file system for one sandbox step (a mount namespace).

Cleaning up after a program cannot find everything it may leave in places others can
write (a subdirectory of /tmp, /run/lock), and a Unix socket on disk is reachable from
any network namespace. So each step instead gets, in its own mount namespace:

* every mount of the machine remounted read-only and ``nosuid`` (``/proc``, ``/sys`` and
  ``/dev`` kept as they are): no world-writable directory anywhere on disk takes a file,
  and no setuid program (``mount``, ``passwd``...) runs as another user, which would also
  put it out of reach of the kill by uid;
* a fresh tmpfs, ``size=`` bounded, over each place meant for anyone's temporary files or
  sockets (``PRIVATE_DIRS``: /tmp, /var/tmp, /dev/shm, /run, /dev/mqueue): what the
  program writes there lives in memory only the namespace sees, and is gone when its last
  process is; what others put there (their files, their listening sockets) is hidden;
* its own directory bound back at the same path, writable (it usually lives in /tmp).

Also a private IPC namespace whose System V shared-memory limits are the step's memory
limit (segments cannot outlive the step or hold more than it may).

``enter_private_mounts`` runs in the child between fork and exec, as root, before the
uid switch; ``probe`` checks once that all of it works here.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
O_PATH = 0o10000000

# Places anyone may write temporary files or sockets into: each gets a private tmpfs.
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/dev/mqueue")
# Kernel file systems left as they are (not made read-only): /proc/sys is written below.
KEPT_AS_IS = ("/proc", "/sys", "/dev")
_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


@dataclass(frozen=True)
class MountPlan:
    """What to do in the child, worked out once in the parent (no parsing after fork).

    ``readonly``: (mount point, flags it keeps) to remount read-only; ``private``: (dir,
    mode) to cover with a tmpfs of ``tmpfs_bytes``.
    """

    readonly: tuple[tuple[str, int], ...]
    private: tuple[tuple[str, int], ...]
    tmpfs_bytes: int


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@cache
def mount_plan(tmpfs_bytes: int = 64 << 20) -> MountPlan:
    """The plan for this machine: its mounts now, and which private dirs exist (real dirs only:
    /var/run is usually a link to /run and is covered through it)."""
    private = tuple(
        (path, os.stat(path).st_mode & 0o7777)
        for path in PRIVATE_DIRS
        if os.path.isdir(path) and not os.path.islink(path)
    )
    private_paths = tuple(path for path, _ in private)
    readonly: dict[str, int] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 6:
                continue
            point = _unescape(fields[4])
            if _under(point, KEPT_AS_IS) or _under(point, private_paths):
                continue
            flags = 0
            for option in fields[5].split(","):
                flags |= _OPTION_FLAGS.get(option, 0)
            readonly[point] = flags
    # Parents before children: a child's remount must not be undone by its parent's.
    ordered = tuple(sorted(readonly.items(), key=lambda item: item[0].count("/") + (item[0] != "/")))
    return MountPlan(ordered, private, tmpfs_bytes)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter_private_mounts(libc: ctypes.CDLL, plan: MountPlan, directory: str, memory_bytes: int) -> None:
    """In the child (root, before the uid switch): new mount and IPC namespaces, as planned.

    Raises ``OSError`` if a step that the isolation depends on fails: the step then does not
    run (the executor records a sandbox error) rather than running unisolated.
    """
    mount = libc.mount
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    # Nothing done below may propagate back to the machine's mounts.
    _check(mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    own = os.open(directory, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for point, flags in plan.readonly:
            done = mount(
                None, point.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | flags, None
            )
            if done != 0 and point == "/":  # other mounts: the uid's permissions still hold there
                _check(done, "remount / read-only")
        options = f"size={plan.tmpfs_bytes},nr_inodes=16384"
        for path, mode in plan.private:
            data = f"{options},mode={mode:o}".encode()
            _check(mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, data), f"tmpfs on {path}")
        os.makedirs(directory, mode=0o755, exist_ok=True)  # in a fresh tmpfs when it was under /tmp
        _check(
            mount(f"/proc/self/fd/{own}".encode(), directory.encode(), None, MS_BIND, None),
            "bind own directory",
        )
        _check(
            mount(None, directory.encode(), None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, None),
            "own directory writable",
        )
    finally:
        os.close(own)
    os.chdir(directory)  # the old working directory is on the read-only view
    # System V shared memory of this IPC namespace: no more than the step may hold.
    for name, value in (("shmmax", memory_bytes), ("shmall", max(1, memory_bytes // 4096)), ("shmmni", 64)):
        with open(f"/proc/sys/kernel/{name}", "w") as handle:
            handle.write(str(value))


def probe(libc: ctypes.CDLL) -> str:
    """Empty if private mounts work here (tried in a throwaway child), else why not."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        message = b""
        try:
            os.close(read_end)
            enter_private_mounts(libc, mount_plan(), os.getcwd(), 1 << 30)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            message = f"{type(exc).__name__}: {exc}".encode()[:500] or b"failed"
        finally:
            os.write(write_end, message)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return message
