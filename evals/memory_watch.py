"""Bound the memory a sandboxed program really holds, shared memory included.

``RLIMIT_DATA`` counts private writable mappings only: ``mmap(MAP_SHARED)`` of anonymous
memory, of a ``memfd`` or of a tmpfs file, and System V segments, are not in it, so one
program could hold gigabytes past its limit. A cgroup would count everything, but where
the harness runs (cgroup v1 here, the memory controller owned by whoever started us) it
cannot make one of its own. So a watcher thread polls the program's processes every
``interval`` seconds and kills them all once they hold more than the limit:

* every mapped page, as each process's proportional share (``Pss`` in
  ``/proc/PID/smaps_rollup``: private pages fully, pages shared within the tree once in
  total), anonymous, file and shared memory alike;
* plus ``memfd`` files the processes hold open but have not mapped (their pages are in
  no process's ``Pss``), each counted once.

Not counted: files in the step's private tmpfs mounts that are not mapped (each mount is
``size=``-bounded, see ``evals.sandbox_mounts``) and System V segments not attached
(bounded by the step's ``shmall``). Memory allocated faster than one poll interval can
overshoot the limit by that much before the kill.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """What a set of processes holds, in bytes."""

    pss: int
    unmapped_memfd: int

    @property
    def total(self) -> int:
        return self.pss + self.unmapped_memfd


def uid_pids(uid: int) -> list[int]:
    """Processes of ``uid`` (a sandbox uid is the sample's alone, daemons included)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (when there is no uid of its own to go by)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _memfds(pid: int) -> dict[int, int]:
    """memfd files ``pid`` holds open: inode -> bytes allocated."""
    found: dict[int, int] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                info = os.stat(f"/proc/{pid}/fd/{fd}")
                found[info.st_ino] = info.st_blocks * 512
        except OSError:
            continue
    return found


def _mapped_memfd_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        with open(f"/proc/{pid}/maps", "rb") as handle:
            for line in handle:
                if b"/memfd:" in line:
                    inodes.add(int(line.split()[4]))
    except (OSError, ValueError, IndexError):
        pass
    return inodes


def measure(pids: Iterable[int]) -> Usage:
    """What ``pids`` hold together (processes that vanish meanwhile count as nothing)."""
    pss = 0
    held: dict[int, int] = {}
    mapped: set[int] = set()
    for pid in pids:
        pss += _pss(pid)
        memfds = _memfds(pid)
        if memfds:
            held.update(memfds)
            mapped |= _mapped_memfd_inodes(pid)
    return Usage(pss, sum(size for inode, size in held.items() if inode not in mapped))


class MemoryWatch:
    """A thread that kills a step's processes once they hold more than ``limit_bytes``.

    ``pids`` lists the step's processes; ``kill`` kills them all. Use as a context manager
    around the wait for the step; ``exceeded`` and ``peak`` tell what it saw.
    """

    def __init__(
        self,
        limit_bytes: int,
        pids: Callable[[], list[int]],
        kill: Callable[[], None],
        interval: float = 0.05,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.exceeded = False
        self.peak = 0
        self._pids = pids
        self._kill = kill
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="codeglm-memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                used = measure(self._pids()).total
            except Exception:  # noqa: BLE001 - a failed poll is retried, never fatal to the harness
                used = 0
            self.peak = max(self.peak, used)
            if used > self.limit_bytes:
                self.exceeded = True
                self._kill()
                return
            self._stop.wait(self._interval)
