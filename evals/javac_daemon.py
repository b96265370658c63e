"""A warm javac per worker slot: one long-lived JVM compiles every Java sample of that slot.

A ``javac`` run is mostly a JVM start and javac's own classes loading and warming up
(0.4 CPU s per sample with a CDS archive); compiling a HumanEval-X program in a warm
compiler takes a tenth of that. So each worker starts, on its first Java sample, a small
server (``SERVER_SOURCE``) that reads javac's arguments on stdin and runs javac's own
command line entry point (``javax.tools.JavaCompiler.run``, i.e. ``com.sun.tools.javac.Main``:
a fresh compiler context per call, no compiler state kept between samples) and answers
with javac's exit status and everything it printed.

What is shared, what is not:

* the server runs as a uid of its own (``compiler_uid(slot)``), not the slot's: a sample's
  program (which runs as the slot's uid) can neither signal, trace nor read it, and the
  kill of the slot's uid after every step leaves it alone;
* it compiles in a directory of its own (``exchange``, mode 700, that uid's): the harness
  empties it, writes the sample's ``Main.java`` there, asks for ``-d . Main.java`` (so
  javac's messages name ``Main.java`` as the ``javac`` step does), copies the class files
  it wrote into the sample's directory (regular files only, owned by the slot's uid) and
  empties it again: nothing of one sample is there when the next one is compiled;
* it runs with the build step's isolation, set up once when it starts: a network namespace
  with nothing in it, a private mount namespace with the machine read-only and fresh tmpfs
  over /tmp, /var/tmp, /dev/shm, /run (``evals.sandbox_mounts``; only ``exchange`` bound
  writable), RLIMIT_DATA, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, no core files;
* limits per compilation, as the build step's: the wall clock, the CPU seconds the server
  spends on it (read from /proc while it runs) and the memory its processes hold
  (``evals.memory_watch``): past one, the server is killed (every process of its uid),
  the step is reported as the ``javac`` step would be (``timed_out``, SIGXCPU, the memory
  limit) and the next sample starts a new server. A compilation javac itself reports as
  abnormal (exit status 3 or 4: out of memory, a stack overflow, a compiler crash) also
  ends the server after its answer.

The JVM's own messages cannot be mixed into an answer: the server swaps ``System.out``
and ``System.err`` for the answer's buffer while javac runs, and each answer starts with
a marker the reader looks for. Where the server cannot be started (no root, no Java), the
executor runs the ``javac`` command as before.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import multiprocessing.util
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from evals import sandbox_mounts
from evals.memory_watch import MemoryWatch, uid_pids
from evals.sandbox import (
    CLONE_NEWNET,
    RUN_GID,
    Isolation,
    Limits,
    Sandbox,
    StepResult,
    compiler_uid,
    kill_uid,
)

SERVER_CLASS = "CodeglmJavacServer"
MARKER = b"\x00CODEGLM-JAVAC\x00"
# Restart the server well before its RLIMIT_CPU, which counts all its compilations.
SERVER_CPU_SECONDS = 3600
JAVA_SERVER_FLAGS = ("-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:CICompilerCount=1", "-Xshare:auto")

SERVER_SOURCE = """\
import java.io.*;
import java.nio.charset.Charset;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;

/** codeglm's warm javac (evals/javac_daemon.py): one compilation per request, a fresh compiler each time. */
public final class CodeglmJavacServer {
    static final byte[] MARKER = "\\u0000CODEGLM-JAVAC\\u0000".getBytes(Charset.forName("ISO-8859-1"));

    public static void main(String[] ignored) throws Exception {
        DataInputStream in = new DataInputStream(new BufferedInputStream(new FileInputStream(FileDescriptor.in)));
        OutputStream protocol = new FileOutputStream(FileDescriptor.out);
        PrintStream quiet = new PrintStream(OutputStream.nullOutputStream());
        System.setOut(quiet);
        System.setErr(quiet);
        System.setIn(new ByteArrayInputStream(new byte[0]));
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        while (true) {
            int count;
            try {
                count = in.readInt();
            } catch (EOFException end) {
                return;
            }
            String[] args = new String[count];
            for (int i = 0; i < count; i++) {
                args[i] = in.readUTF();
            }
            ByteArrayOutputStream printed = new ByteArrayOutputStream();
            PrintStream capture = new PrintStream(printed, true);
            int[] status = {4};
            // javac's main thread has the default stack size: so does this one.
            Thread worker = new Thread(null, () -> {
                try {
                    status[0] = javac.run(null, capture, capture, args);
                } catch (Throwable crash) {
                    crash.printStackTrace(capture);
                    status[0] = 4;
                }
            }, "javac", 0);
            System.setOut(capture);
            System.setErr(capture);
            worker.start();
            worker.join();
            System.setOut(quiet);
            System.setErr(quiet);
            capture.flush();
            byte[] text = printed.toByteArray();
            DataOutputStream answer = new DataOutputStream(new BufferedOutputStream(protocol));
            answer.write(MARKER);
            answer.writeInt(status[0]);
            answer.writeInt(text.length);
            answer.write(text);
            answer.flush();
            if (status[0] >= 3) {
                return;
            }
        }
    }
}
"""


class ServerUnavailable(RuntimeError):
    """The server could not be started or answered nonsense: run the javac command instead."""


@cache
def server_classes(cache_root: Path) -> Path | None:
    """The compiled server (built once, by the trusted harness, into the cache dir)."""
    # Named by the source's hash: a changed server is built anew, never a stale one used.
    target = cache_root / "java" / f"server-{hashlib.sha256(SERVER_SOURCE.encode()).hexdigest()[:12]}"
    if (target / f"{SERVER_CLASS}.class").is_file():
        return target
    if shutil.which("javac") is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        Path(tmp, f"{SERVER_CLASS}.java").write_text(SERVER_SOURCE)
        made = subprocess.run(["javac", "-d", tmp, str(Path(tmp, f"{SERVER_CLASS}.java"))], capture_output=True, check=False)
        if made.returncode != 0:
            return None
        Path(tmp, f"{SERVER_CLASS}.java").unlink()
        os.chmod(tmp, 0o755)
        for name in os.listdir(tmp):
            os.chmod(Path(tmp, name), 0o644)
        try:
            os.rename(tmp, target)
        except OSError:  # another worker made it first
            pass
        os.makedirs(tmp, exist_ok=True)  # for TemporaryDirectory's cleanup
    return target


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


@dataclass
class JavacServer:
    """One slot's server: started on first use, restarted after a kill."""

    slot: int
    isolation: Isolation
    limits: Limits
    classes: Path
    process: subprocess.Popen[bytes] | None = None
    exchange: Path | None = None
    pending: bytes = b""
    _libc: ctypes.CDLL = field(default_factory=lambda: ctypes.CDLL(None, use_errno=True))

    @property
    def uid(self) -> int:
        return compiler_uid(self.slot)

    def _start(self) -> subprocess.Popen[bytes]:
        self.stop()
        self.exchange = Path(tempfile.mkdtemp(prefix="codeglm-javac-"))
        os.chown(self.exchange, self.uid, RUN_GID)
        os.chmod(self.exchange, 0o700)
        limits, uid, libc = self.limits, self.uid, self._libc
        directory = str(self.exchange)
        plan = sandbox_mounts.mount_plan(limits.tmpfs_bytes) if self.isolation.private_mounts else None
        isolation = self.isolation

        def child_setup() -> None:
            if isolation.network_namespace:
                libc.unshare(CLONE_NEWNET)
            if plan is not None:
                sandbox_mounts.enter_private_mounts(libc, plan, directory, limits.resident_bytes)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (SERVER_CPU_SECONDS, SERVER_CPU_SECONDS + 1))
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
            os.umask(0o077)
            os.setgroups([])
            os.setgid(RUN_GID)
            os.setuid(uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG, after the uid change that clears it

        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": directory, "TMPDIR": directory, "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(
            ["java", *JAVA_SERVER_FLAGS, "-cp", str(self.classes), SERVER_CLASS],
            cwd=directory, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=child_setup, close_fds=True,
        )
        self.pending = b""
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            kill_uid(self.uid)
            self.process.wait()
            self.process = None
        else:
            kill_uid(self.uid)
        if self.exchange is not None:
            shutil.rmtree(self.exchange, ignore_errors=True)
            self.exchange = None

    def _empty_exchange(self) -> None:
        assert self.exchange is not None
        for entry in os.scandir(self.exchange):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)

    def compile(self, box: Sandbox, argv: list[str], source_name: str) -> StepResult:
        """Compile ``box``'s ``source_name`` with javac's ``argv`` (the options and the file name)."""
        process = self.process
        if process is None or process.poll() is not None:
            process = self._start()
        assert self.exchange is not None and process.stdin is not None and process.stdout is not None
        started = time.monotonic()
        self._empty_exchange()
        source = self.exchange / source_name
        shutil.copyfile(box.directory / source_name, source)
        os.chown(source, self.uid, RUN_GID)
        request = struct.pack(">i", len(argv)) + b"".join(
            struct.pack(">H", len(a.encode())) + a.encode() for a in argv
        )
        limits = self.limits
        cpu_before = _cpu_seconds(process.pid)
        try:
            process.stdin.write(request)
            process.stdin.flush()
        except OSError as exc:
            self.stop()
            raise ServerUnavailable(f"javac server gone: {exc}") from exc
        answer: tuple[int, bytes] | None = None
        timed_out = cpu_hit = False
        with MemoryWatch(limits.resident_bytes, lambda: uid_pids(self.uid), lambda: kill_uid(self.uid)) as watch:
            while answer is None:
                left = limits.wall_seconds - (time.monotonic() - started)
                if left <= 0:
                    timed_out = True
                    break
                if _cpu_seconds(process.pid) - cpu_before > limits.cpu_seconds:
                    cpu_hit = True
                    break
                ready, _, _ = select.select([process.stdout], [], [], min(left, 0.05))
                if ready:
                    chunk = os.read(process.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break  # the server died (killed by the memory watch, or crashed)
                    self.pending += chunk
                    answer = self._parse()
        wall = time.monotonic() - started
        if answer is None:
            killed_by_watch = watch.exceeded
            self.stop()
            if timed_out:
                return StepResult(tuple(argv), -signal.SIGKILL, True, wall, "", "", False)
            if cpu_hit:
                return StepResult(tuple(argv), -signal.SIGXCPU, False, wall, "", "", False)
            if killed_by_watch:
                return StepResult(tuple(argv), -signal.SIGKILL, False, wall, "", "", False, True)
            raise ServerUnavailable("javac server ended without an answer")
        status, printed = answer
        try:
            if status == 0:
                self._copy_classes(box, source_name)
        finally:
            self._empty_exchange()
        if status >= 3:
            self.stop()  # the server exits after an abnormal compilation
        text = printed.decode("utf-8", "replace")
        hit = len(printed) >= limits.output_bytes
        return StepResult(tuple(argv), status, False, wall, "", text, hit, watch.exceeded)

    def _parse(self) -> tuple[int, bytes] | None:
        at = self.pending.find(MARKER)
        if at < 0:
            return None
        body = self.pending[at + len(MARKER):]
        if len(body) < 8:
            return None
        status, length = struct.unpack(">ii", body[:8])
        if len(body) < 8 + length:
            return None
        self.pending = body[8 + length:]
        return status, body[8:8 + length]

    def _copy_classes(self, box: Sandbox, source_name: str) -> None:
        """What javac wrote (regular files only) into the sample's directory, as the sample's."""
        assert self.exchange is not None
        owner = box.uid if box.isolation.switch_user else os.getuid()
        for root, dirs, files in os.walk(self.exchange):
            relative = Path(root).relative_to(self.exchange)
            target_dir = box.directory / relative
            if relative != Path("."):
                target_dir.mkdir(exist_ok=True)
                os.chown(target_dir, owner, RUN_GID)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in files:
                path = Path(root, name)
                if relative == Path(".") and name == source_name:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                target = target_dir / name
                shutil.copyfile(path, target)
                os.chown(target, owner, RUN_GID)
                os.chmod(target, 0o644)


def javac_arguments(argv: tuple[str, ...] | list[str]) -> list[str]:
    """javac's own arguments in a ``javac`` command: without the command and its ``-J`` options."""
    return [a for a in argv[1:] if not a.startswith("-J")]


_SERVERS: dict[int, JavacServer] = {}


def server_for(slot: int, isolation: Isolation, limits: Limits, cache_root: Path) -> JavacServer | None:
    """This process's server for ``slot`` (None where it cannot run: no root, no private mounts)."""
    if not (isolation.switch_user and isolation.private_mounts and isolation.network_namespace):
        return None
    if os.environ.get("CODEGLM_JAVAC_SERVER", "1") == "0":
        return None
    server = _SERVERS.get(slot)
    if server is None:
        classes = server_classes(cache_root)
        if classes is None:
            return None
        if not _SERVERS:
            # Stopped (killed, waited for, its directory removed) when this process ends:
            # atexit for a plain process, a finaliser for a multiprocessing worker.
            atexit.register(stop_all)
            multiprocessing.util.Finalize(None, stop_all, exitpriority=10)
        server = _SERVERS[slot] = JavacServer(slot, isolation, limits, classes)
    return server


def stop_all() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].stop()


def server_cpu_seconds() -> dict[int, float]:
    """CPU seconds each running server of this process has used so far, by pid (for benchmarks)."""
    return {s.process.pid: _cpu_seconds(s.process.pid) for s in _SERVERS.values() if s.process is not None}
