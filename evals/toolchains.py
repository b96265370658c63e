"""The one table of compile and run commands per language (offline, Debian 12 packages).

``scripts/install-toolchains.sh`` installs the packages and fills ``cache_dir()``:
``rust/`` (rand, regex, md5 built by Debian's rustc), ``node/node_modules`` (js-md5) and
``gocache/`` (Go's build cache). The cache must be readable by the sandbox uids, so as
root it defaults to /var/cache/codeglm (not under /root, which they cannot enter).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from evals.sandbox import BUILD_GID, Limits

GiB = 1 << 30
MiB = 1 << 20
RUSTC = "/usr/bin/rustc"  # Debian's: the crates in cache_dir()/rust were built with it
CPP_FLAGS = ("-std=c++17", "-O0")  # the language flags of the g++ step (and of its precompiled headers)
JAVA_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-XX:CICompilerCount=1"]


class ToolchainError(RuntimeError):
    """A toolchain or its cache is missing; the message says how to install it."""


def cache_dir() -> Path:
    env = os.environ.get("CODEGLM_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/codeglm")
    return Path.home() / ".cache" / "codeglm"


@dataclass(frozen=True)
class Toolchain:
    """How to build and run one assembled program in its sandbox directory.

    ``build``: commands run with the build group (may be empty); ``run``: the test program.
    ``build_limits``/``run_limits``: wall and CPU seconds here are defaults, the executor
    overrides the run step's with ``--timeout``.
    """

    language: str
    source_name: str
    build: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    build_limits: Limits
    run_limits: Limits
    tools: tuple[str, ...]


BUILD_LIMITS = Limits(wall_seconds=90.0, cpu_seconds=120, memory_bytes=2 * GiB, max_processes=512, output_bytes=256 * MiB, resident_bytes=2 * GiB)
RUN_LIMITS = Limits(wall_seconds=10.0, cpu_seconds=10, memory_bytes=1 * GiB, max_processes=64, output_bytes=16 * MiB)


@cache
def _rust_externs() -> tuple[str, ...]:
    deps = cache_dir() / "rust" / "target" / "debug" / "deps"
    args: list[str] = ["-L", f"dependency={deps}"]
    for crate in ("rand", "regex", "md5"):
        found = sorted(deps.glob(f"lib{crate}-*.rlib"))
        if not found:
            raise ToolchainError(f"the {crate} crate is not built in {deps}: run scripts/install-toolchains.sh")
        args += ["--extern", f"{crate}={found[-1]}"]
    return tuple(args)


@cache
def _rust_std_dir() -> str:
    sysroot = subprocess.run([RUSTC, "--print", "sysroot"], capture_output=True, text=True, check=False).stdout.strip()
    if not sysroot:
        raise ToolchainError(f"{RUSTC} not usable: run scripts/install-toolchains.sh")
    return f"{sysroot}/lib/rustlib/x86_64-unknown-linux-gnu/lib"


@cache
def _go_tool_dir() -> str:
    found = subprocess.run(["go", "env", "GOTOOLDIR"], capture_output=True, text=True, check=False).stdout.strip()
    if not found:
        raise ToolchainError("go not usable: run scripts/install-toolchains.sh")
    return found


@cache
def _has_lld() -> bool:
    """lld (Debian package ``lld``) links Rust and C++ programs in a third of ld.bfd's CPU."""
    return shutil.which("ld.lld") is not None


# Standard packages a Go generation or test may use without importing, by the name used
# in code: ``evals.assemble`` adds the imports a program lacks. The dataset's own imports
# are all among the first ten (the reference's list).
GO_PACKAGES = {
    "math": "math",
    "strings": "strings",
    "fmt": "fmt",
    "strconv": "strconv",
    "time": "time",
    "bytes": "bytes",
    "regexp": "regexp",
    "sort": "sort",
    "rand": "math/rand",
    "md5": "crypto/md5",
    "unicode": "unicode",
    "utf8": "unicode/utf8",
    "os": "os",
    "errors": "errors",
    "bits": "math/bits",
    "big": "math/big",
    "reflect": "reflect",
    "hex": "encoding/hex",
    "heap": "container/heap",
    "list": "container/list",
    "cmplx": "math/cmplx",
}

TESTIFY_ASSERT = "github.com/stretchr/testify/assert"
# Every package a Go program may import: the tests' own, and those assemble may add.
GO_IMPORTABLE = ("testing", TESTIFY_ASSERT)
GOPATH_DEBIAN = "/usr/share/gocode"
# A name that may be one of testify's HTTP assertions (HTTPSuccess, HTTPBodyContainsf, ...),
# called or not: such a program builds against the whole testify (go_importcfg's ``lean``).
# Any other identifier starting with HTTP only costs the faster link, never a verdict.
GO_HTTP_ASSERTION = re.compile(r"\bHTTP[A-Za-z]*")


def _go_env(gopath: str) -> dict[str, str]:
    return {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": gopath,
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOCACHE": str(cache_dir() / "gocache"),
    }


def _go_exports(packages: list[str], gopath: str) -> list[tuple[str, str]]:
    """(import path, export-data file) of ``packages`` and their dependencies, compiled into GOCACHE."""
    listed = subprocess.run(
        ["go", "list", "-export", "-deps", "-f", "{{if .Export}}{{.ImportPath}}={{.Export}}{{end}}", *packages],
        capture_output=True, text=True, env=_go_env(gopath), check=False,
    )
    if listed.returncode != 0:
        raise ToolchainError(f"go list failed ({listed.stderr.strip()[:300]}): run scripts/install-toolchains.sh")
    exports = []
    for line in listed.stdout.splitlines():
        path, _, export = line.partition("=")
        exports.append((path, export))
    return exports


def _write_importcfg(config: Path, lines: list[str]) -> None:
    temporary = config.with_suffix(".tmp")
    temporary.write_text("".join(lines))
    temporary.chmod(0o644)
    os.replace(temporary, config)


def _testify_without_http(source_dir: Path, target_dir: Path) -> None:
    """testify's assert package without its HTTP assertions (and so without net/http).

    ``http_assertions.go`` goes, and so do the generated ``HTTP*`` wrappers (with their
    doc comments) in the other files, and the ``net/http``/``net/url`` imports only they use.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_dir.glob("*.go")):
        if path.name.endswith("_test.go") or path.name == "http_assertions.go":
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept: list[str] = []
        index = 0
        while index < len(lines):
            line = lines[index]
            if re.match(r"func (\(a \*Assertions\) )?HTTP", line):
                while kept and kept[-1].startswith("//"):
                    kept.pop()
                while index < len(lines) and lines[index] != "}\n":
                    index += 1
                index += 1
                continue
            if line.strip() not in ('http "net/http"', 'url "net/url"'):
                kept.append(line)
            index += 1
        (target_dir / path.name).write_text("".join(kept))


@cache
def go_importcfg(lean: bool = True) -> Path:
    """An importcfg for ``go tool compile``/``link`` (built once; export data copied out of GOCACHE).

    The standard library's archives are Debian's precompiled ones; testify and its
    dependencies are compiled once into GOCACHE (GOPATH mode, offline) and copied under
    the cache dir, so nothing depends on GOCACHE's trimming later.

    ``lean``: the same packages, but testify's assert built without its HTTP assertions:
    they pull net/http into every test binary and double the link's time (0.15 s to
    0.08 s a program). Programs that call an ``HTTP*`` function get the whole testify
    (``go_build_steps``). When the trimmed package does not build (another testify
    version), the lean importcfg is the whole one.
    """
    root = cache_dir() / "go"
    config = root / ("importcfg-lean" if lean else "importcfg")
    if config.is_file():
        return config
    if shutil.which("go") is None:
        raise ToolchainError("go not found: run scripts/install-toolchains.sh")
    lines = _lean_importcfg_lines(root, go_importcfg(lean=False)) if lean else _whole_importcfg_lines(root)
    _open_up(root)
    _write_importcfg(config, lines)
    return config


def _whole_importcfg_lines(root: Path) -> list[str]:
    """Every importable package and its dependencies, their archives copied under ``root/pkg``."""
    packages = sorted({*GO_IMPORTABLE, *GO_PACKAGES.values()})
    lines = []
    for path, export in _go_exports(packages, GOPATH_DEBIAN):
        target = root / "pkg" / (path + ".a")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export, target)
        lines.append(f"packagefile {path}={target}\n")
    return lines


def _lean_importcfg_lines(root: Path, whole: Path) -> list[str]:
    """``whole``'s lines with testify's assert replaced by the trimmed build (unchanged if it fails)."""
    lines = whole.read_text().splitlines(keepends=True)
    lean_gopath = root / "lean-gopath"
    shutil.rmtree(lean_gopath, ignore_errors=True)
    _testify_without_http(Path(GOPATH_DEBIAN, "src", TESTIFY_ASSERT), lean_gopath / "src" / TESTIFY_ASSERT)
    try:
        exports = dict(_go_exports([TESTIFY_ASSERT], f"{lean_gopath}:{GOPATH_DEBIAN}"))
    except ToolchainError:
        return lines
    if TESTIFY_ASSERT not in exports:
        return lines
    target = root / "pkg-lean" / (TESTIFY_ASSERT + ".a")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exports[TESTIFY_ASSERT], target)
    prefix = f"packagefile {TESTIFY_ASSERT}="
    return [f"{prefix}{target}\n" if line.startswith(prefix) else line for line in lines]


def _open_up(root: Path) -> None:
    """Readable by the sandbox uids."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


def go_build_steps(source: str) -> tuple[tuple[str, ...], ...]:
    """``go tool compile`` and ``link`` for one program: the lean testify unless it calls an HTTP assertion."""
    importcfg = str(go_importcfg(lean=GO_HTTP_ASSERTION.search(source) is None))
    tools = _go_tool_dir()
    # The tools themselves, not through `go tool`: one Go start less per step. (GOGC=off
    # saved another 5-10 % but more than doubles the compiler's heap on a large source:
    # it could turn a compilation that fits the memory limit into one that does not.)
    return (
        (f"{tools}/compile", "-p", "main", "-complete", "-importcfg", importcfg, "-o", "prog.a", "prog.go"),
        (f"{tools}/link", "-s", "-w", "-importcfg", importcfg, "-o", "prog", "prog.a"),
    )


JAVAC_WARMUP = """import java.util.*;
class Solution { public List<Integer> f(List<Integer> xs) { return new ArrayList<>(xs); } }
public class Main { public static void main(String[] a) { System.out.println(new Solution().f(Arrays.asList(1))); } }
"""


@cache
def javac_class_archive() -> Path | None:
    """A CDS archive of javac's classes (built once): a third less CPU per javac run.

    None when it cannot be built; javac then starts without it.
    """
    archive = cache_dir() / "java" / "javac.jsa"
    if archive.is_file():
        return archive
    if shutil.which("javac") is None:
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Main.java").write_text(JAVAC_WARMUP)
        partial = archive.with_suffix(".tmp")
        made = subprocess.run(
            ["javac", "-J-Xmx512m", *(f"-J{f}" for f in JAVA_FLAGS), f"-J-XX:ArchiveClassesAtExit={partial}",
             "-proc:none", "-d", tmp, str(Path(tmp, "Main.java"))],
            capture_output=True, check=False,
        )
        if made.returncode != 0 or not partial.is_file():
            return None
        partial.chmod(0o644)
        os.replace(partial, archive)
    archive.parent.chmod(0o755)
    return archive


def toolchain(language: str) -> Toolchain:
    """The commands for ``language`` (raises ``ToolchainError`` when its cache is missing)."""
    cache_root = cache_dir()
    if language == "python":
        return Toolchain("python", "prog.py", (), ("python3", "prog.py"), (), BUILD_LIMITS, RUN_LIMITS, ("python3",))
    if language == "cpp":
        # lld (one thread) links in two thirds of ld.bfd's CPU; evals/cpp_pch.py may add a precompiled header.
        link = ("-fuse-ld=lld", "-Wl,--threads=1") if _has_lld() else ()
        build = (("g++", *CPP_FLAGS, "prog.cpp", "-o", "prog", *link, "-lcrypto"),)
        return Toolchain("cpp", "prog.cpp", build, ("./prog",), (), BUILD_LIMITS, RUN_LIMITS, ("g++",))
    if language == "java":
        archive = javac_class_archive()
        cds = (f"-J-XX:SharedArchiveFile={archive}",) if archive else ()
        build = (("javac", "-J-Xmx512m", *(f"-J{f}" for f in JAVA_FLAGS), *cds, "-proc:none", "-nowarn", "-d", ".", "Main.java"),)
        # CodeglmEnd (evals/assemble.py) runs Main.main, then prints the end-of-checks line.
        run = ("java", "-Xmx512m", "-Xss8m", *JAVA_FLAGS, "-cp", ".", "CodeglmEnd")
        # The JVM commits more than its heap (metaspace, code cache, GC): a larger DATA limit.
        run_limits = Limits(10.0, 10, 3 * GiB, 128, 16 * MiB)
        build_limits = Limits(90.0, 120, 3 * GiB, 512, 256 * MiB, resident_bytes=2 * GiB)
        return Toolchain("java", "Main.java", build, run, (), build_limits, run_limits, ("javac", "java"))
    if language == "javascript":
        env = (("NODE_PATH", str(cache_root / "node" / "node_modules")),)
        return Toolchain("javascript", "prog.js", (), ("node", "-r", "./preload.js", "prog.js"), env, BUILD_LIMITS, RUN_LIMITS, ("node",))
    if language == "go":
        build = go_build_steps("")  # evals/execute.py picks the steps for the program's source
        env = (("GOCACHE", "off"), ("GO111MODULE", "off"), ("GOFLAGS", ""))
        return Toolchain("go", "prog.go", build, ("./prog",), env, BUILD_LIMITS, RUN_LIMITS, ("go",))
    if language == "rust":
        # -C prefer-dynamic: link libstd as a shared library, 40% less CPU per program.
        # lld (one thread) instead of ld.bfd, one codegen unit: half the CPU again (the link dominated).
        link = ("-C", "codegen-units=1", "-C", "link-arg=-fuse-ld=lld", "-C", "link-arg=-Wl,--threads=1") if _has_lld() else ()
        build = ((RUSTC, "--edition", "2021", "--test", "-A", "warnings", "-C", "prefer-dynamic", *link, "prog.rs", "-o", "prog",
                  *_rust_externs()),)
        env = (("LD_LIBRARY_PATH", _rust_std_dir()),)
        # One test at a time, in name order: the end-of-checks test (evals/assemble.py) runs last.
        return Toolchain("rust", "prog.rs", build, ("./prog", "--test-threads=1"), env, BUILD_LIMITS, RUN_LIMITS, (RUSTC,))
    raise ToolchainError(f"no toolchain for language {language!r}")


def check_toolchain(language: str) -> str | None:
    """None when ``language`` can run here, else what is missing and how to fix it."""
    try:
        chain = toolchain(language)
    except ToolchainError as exc:
        return str(exc)
    for tool in chain.tools:
        if shutil.which(tool) is None:
            return f"{tool} not found: run scripts/install-toolchains.sh"
    if language == "javascript" and not (cache_dir() / "node" / "node_modules" / "js-md5").is_dir():
        return f"js-md5 missing in {cache_dir() / 'node'}: run scripts/install-toolchains.sh"
    return None


def prepare_shared_caches(switch_user: bool) -> None:
    """Let the sandbox's build group write Go's cache (group-owned, setgid, group-writable)."""
    gocache = cache_dir() / "gocache"
    gocache.mkdir(parents=True, exist_ok=True)
    if not switch_user:
        return
    info = gocache.stat()
    if info.st_gid == BUILD_GID and info.st_mode & 0o2070 == 0o2070:
        return
    # Once per machine (files written later inherit the group through setgid).
    subprocess.run(["chgrp", "-R", str(BUILD_GID), str(gocache)], check=True)
    subprocess.run(["chmod", "-R", "g+rwX,o-rwx", str(gocache)], check=True)
    subprocess.run(["find", str(gocache), "-type", "d", "-exec", "chmod", "g+s", "{}", "+"], check=True)
