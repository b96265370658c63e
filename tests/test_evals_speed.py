"""What the harness shares between samples to build them faster changes no verdict and no
message, and nothing of one sample reaches the next: the slot's warm javac server
(evals/javac_daemon.py) and the precompiled C++ headers (evals/cpp_pch.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from evals import cpp_pch, javac_daemon
from evals.assemble import assemble
from evals.dataset import load_language
from evals.execute import run_program
from evals.memory_watch import uid_pids
from evals.sandbox import Isolation, Sandbox, acquire_slot, compiler_uid, probe_isolation
from evals.toolchains import CPP_FLAGS, cache_dir, check_toolchain, go_build_steps, go_importcfg, toolchain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root")

SLOT = acquire_slot()
JAVA = {t.task_id: t for t in load_language("java")[0]}


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    found = probe_isolation()
    assert found.switch_user and found.network_namespace and found.private_mounts, found.reason
    problem = check_toolchain("java")
    if problem:
        pytest.fail(problem)
    return found


def _server(isolation: Isolation) -> javac_daemon.JavacServer:
    server = javac_daemon.server_for(SLOT, isolation, toolchain("java").build_limits, cache_dir())
    assert server is not None
    return server


def _class_files(directory: Path) -> dict[str, str]:
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".class"):
                path = Path(root, name)
                found[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


JAVA_VARIANTS = {
    "canonical": None,
    "empty": "",
    "syntax error": "return 1 }",
    "type error and an extra class": 'int x = "a"; }\n}\nclass Helper {}\n',
}


@pytest.mark.parametrize("task_id", ["Java/0", "Java/12", "Java/95"])
@pytest.mark.parametrize("variant", list(JAVA_VARIANTS))
def test_javac_server_writes_what_javac_writes(isolation: Isolation, task_id: str, variant: str) -> None:
    """Same exit status, same messages (the compile_error reason), byte-identical class files."""
    task = JAVA[task_id]
    generation = JAVA_VARIANTS[variant]
    program = assemble(task, task.canonical_solution if generation is None else generation)
    chain = toolchain("java")
    outcomes = []
    for use_server in (False, True):
        with Sandbox(SLOT, isolation) as box:
            for name, text in program.files:
                box.write(name, text)
            if use_server:
                step = _server(isolation).compile(box, javac_daemon.javac_arguments(chain.build[0]), "Main.java")
            else:
                step = box.run(list(chain.build[0]), chain.build_limits, dict(chain.env), build=True)
            outcomes.append((step.returncode, step.stderr + step.stdout, _class_files(box.directory)))
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == 0) == (variant == "canonical")


def test_a_class_of_one_sample_is_not_seen_by_the_next(isolation: Isolation) -> None:
    task = JAVA["Java/0"]
    helper = task.canonical_solution + "\nclass CodeglmHelper { static boolean yes() { return true; } }\n"
    assert run_program(task, helper, SLOT, isolation, 10.0) == ("passed", "")
    uses = task.canonical_solution.replace("return false;", "return CodeglmHelper.yes() && false;", 1)
    assert uses != task.canonical_solution
    status, reason = run_program(task, uses, SLOT, isolation, 10.0)
    assert status == "compile_error" and "cannot find symbol" in reason


def test_a_sample_cannot_reach_the_javac_server(isolation: Isolation) -> None:
    """A program (the slot's uid) can neither write into the server's directory nor kill it."""
    server = _server(isolation)
    task = JAVA["Java/0"]
    assert run_program(task, task.canonical_solution, SLOT, isolation, 10.0) == ("passed", "")
    assert server.process is not None and server.exchange is not None
    pid, exchange = server.process.pid, server.exchange
    hostile = (
        "        try { java.nio.file.Files.writeString(java.nio.file.Path.of(\"" + str(exchange) + "/Helper.java\"), \"x\"); }\n"
        "        catch (Exception e) { System.out.println(\"write refused\"); }\n"
        "        try { new ProcessBuilder(\"kill\", \"-9\", \"" + str(pid) + "\").inheritIO().start().waitFor(); }\n"
        "        catch (Exception e) { }\n"
        "        return false;\n    }\n}\n"
    )
    status, _ = run_program(task, hostile, SLOT, isolation, 10.0)
    assert status == "failed"
    assert server.process is not None and server.process.pid == pid and server.process.poll() is None
    assert not (exchange / "Helper.java").exists() and os.listdir(exchange) == []
    assert run_program(task, task.canonical_solution, SLOT, isolation, 10.0) == ("passed", "")
    assert server.process.pid == pid


def _big_program() -> str:
    methods = "".join(f"    int m{i}(int x) {{ return x * {i} + m{max(i - 1, 0)}(x - 1); }}\n" for i in range(1, 4000))
    return "    int m0(int x) { return x; }\n" + methods


@pytest.mark.parametrize("limit", ["wall", "cpu", "memory"])
def test_a_compilation_past_its_limits_is_killed_and_the_server_restarted(isolation: Isolation, limit: str) -> None:
    task = JAVA["Java/0"]
    program = assemble(task, task.canonical_solution)
    source = program.source.replace("class Solution {", "class Solution {\n" + _big_program(), 1)
    base = toolchain("java").build_limits
    limits = {
        "wall": replace(base, wall_seconds=0.3),
        "cpu": replace(base, cpu_seconds=0),
        "memory": replace(base, resident_bytes=40 << 20),
    }[limit]
    shared = javac_daemon._SERVERS.pop(SLOT, None)  # one server per uid: the test's own alone
    if shared is not None:
        shared.stop()
    server = javac_daemon.JavacServer(SLOT, isolation, limits, javac_daemon.server_classes(cache_dir()))  # type: ignore[arg-type]
    try:
        with Sandbox(SLOT, isolation) as box:
            box.write("Main.java", source)
            started = time.monotonic()
            step = server.compile(box, ["-proc:none", "-nowarn", "-d", ".", "Main.java"], "Main.java")
            assert time.monotonic() - started < 10
        assert not step.ok and server.process is None
        assert {"wall": step.timed_out, "cpu": step.signal_name == "SIGXCPU", "memory": step.memory_limit_hit}[limit]
        assert uid_pids(compiler_uid(SLOT)) == []
    finally:
        server.stop()


# ---- C++: precompiled headers of the prompt's include block -----------------------------

CPP = {t.task_id: t for t in load_language("cpp")[0]}
PCH_ROOT = cache_dir() / "cpp-pch"


def _pch(source: str, prompt: str) -> tuple[str, tuple[tuple[str, ...], ...]]:
    return cpp_pch.apply(source, prompt, toolchain("cpp").build, PCH_ROOT, CPP_FLAGS)


def test_the_prompt_include_block_gets_a_precompiled_header() -> None:
    task = CPP["CPP/0"]
    source = assemble(task, task.canonical_solution).source
    rewritten, build = _pch(source, task.prompt)
    start, end, headers = cpp_pch.include_block(source)  # type: ignore[misc]
    assert headers == ("stdio.h", "vector", "math.h")
    line = source.count("\n", 0, start) + 1
    assert rewritten == source[:start] + f'#include "codeglm_pch.h"\n#line {line}\n' + source[start:]
    directory = Path(build[0][build[0].index("-iquote") + 1])
    assert (directory / "codeglm_pch.h").read_text() == source[start:end]  # exactly those lines, in order
    gch = directory / "codeglm_pch.h.gch"
    assert gch.stat().st_uid == 0 and gch.stat().st_mode & 0o7777 == 0o644
    assert directory.stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    "case",
    [
        "not in the prompt",
        "code before the includes",
        "a quoted include",
        "an absolute header name",
        "a .. in the name",
        "a comment after an include",
        "a // comment continued by a backslash",
        "a comment ending on the include's line",
    ],
)
def test_no_precompiled_header_unless_the_prefix_is_exactly_an_include_block(case: str) -> None:
    body = "using namespace std;\nint f() { return 1; }\n"
    block = "#include<stdio.h>\n#include<vector>\n"
    source = {
        "not in the prompt": block + body,
        "code before the includes": "int x;\n" + block + body,
        "a quoted include": '#include "stdio.h"\n' + block + body,
        "an absolute header name": "#include</etc/passwd>\n" + body,
        "a .. in the name": "#include<../include/stdio.h>\n" + body,
        "a comment after an include": "#include<stdio.h> // io\n" + body,
        "a // comment continued by a backslash": "// note \\\n" + block + body,
        "a comment ending on the include's line": "/* a */ #include<stdio.h>\n" + body,
    }[case]
    prompt = "" if case == "not in the prompt" else source
    assert _pch(source, prompt) == (source, toolchain("cpp").build)
    assert _pch(block + body, block + body)[0] != block + body  # the same without the defect: used


def test_gcc_reads_the_precompiled_header(isolation: Isolation) -> None:
    task = CPP["CPP/0"]
    source, build = _pch(assemble(task, task.canonical_solution).source, task.prompt)
    directory = build[0][build[0].index("-iquote") + 1]
    with Sandbox(SLOT, isolation) as box:
        box.write("prog.cpp", source)
        step = box.run([*build[0], "-H"], toolchain("cpp").build_limits, {}, build=True)
    assert step.ok, step.stderr
    assert f"! {directory}/codeglm_pch.h.gch" in step.stderr  # "!": a valid precompiled header, used


def test_compile_errors_name_the_same_lines_with_the_precompiled_header(isolation: Isolation, monkeypatch) -> None:  # noqa: ANN001
    task = CPP["CPP/3"]
    generations = ["return 1 }", '    vector<int> v; v.push_back("a"); int q = undefined_thing;\n}\n']
    with_pch = [run_program(task, g, SLOT, isolation, 10.0) for g in generations]
    monkeypatch.setattr(cpp_pch, "apply", lambda source, prompt, build, root, flags: (source, build))
    without = [run_program(task, g, SLOT, isolation, 10.0) for g in generations]
    assert with_pch == without
    assert all(status == "compile_error" and "prog.cpp:" in reason for status, reason in with_pch)


def test_a_sample_cannot_write_into_the_precompiled_headers(isolation: Isolation) -> None:
    task = CPP["CPP/0"]
    _, build = _pch(assemble(task, task.canonical_solution).source, task.prompt)
    directory = Path(build[0][build[0].index("-iquote") + 1])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}
    hostile = (
        "    FILE* f = fopen(\"" + str(directory / "codeglm_pch.h.gch") + "\", \"w\");\n"
        "    FILE* g = fopen(\"" + str(directory / "extra.h") + "\", \"w\");\n"
        "    if (f == NULL && g == NULL) return false;\n"
        "    return true;\n}\n"
    )
    status, _ = run_program(task, hostile, SLOT, isolation, 10.0)
    assert status == "failed"  # both opens refused: the checks see false
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()} == before
    assert run_program(task, task.canonical_solution, SLOT, isolation, 10.0) == ("passed", "")


# ---- Go: testify's assert without its HTTP assertions (evals/toolchains.py go_importcfg) ----

GO = {t.task_id: t for t in load_language("go")[0]}


def _without_net_http(config: Path, target: Path) -> Path:
    lines = [line for line in config.read_text().splitlines(keepends=True) if "net/http" not in line and "net/url" not in line]
    target.write_text("".join(lines))
    return target


@pytest.mark.parametrize("lean", [True, False])
def test_go_programs_link_without_net_http_only_with_the_lean_testify(tmp_path: Path, lean: bool) -> None:
    task = GO["Go/0"]
    (tmp_path / "prog.go").write_text(assemble(task, task.canonical_solution).source)
    config = _without_net_http(go_importcfg(lean=lean), tmp_path / "importcfg")
    tools = Path(go_build_steps("")[0][0]).parent
    compiled = subprocess.run([f"{tools}/compile", "-p", "main", "-complete", "-importcfg", str(config), "-o", "prog.a", "prog.go"],
                              cwd=tmp_path, capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    linked = subprocess.run([f"{tools}/link", "-s", "-w", "-importcfg", str(config), "-o", "prog", "prog.a"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    if lean:  # the trimmed package built on this machine and needs no net/http
        assert linked.returncode == 0, linked.stderr
    else:
        assert linked.returncode != 0 and "cannot open file" in linked.stderr  # a package net/http needs is missing


def test_a_go_program_calling_an_http_assertion_builds_against_the_whole_testify(isolation: Isolation, monkeypatch) -> None:  # noqa: ANN001
    task = GO["Go/0"]
    generation = task.canonical_solution + "\nvar _ = assert.HTTPSuccess\nvar _ = (*assert.Assertions).HTTPBodyContainsf\n"
    assert "importcfg-lean" not in " ".join(go_build_steps(generation)[1])
    assert run_program(task, generation, SLOT, isolation, 10.0) == ("passed", "")
    # What it would be with the lean package: the selection is what makes it build.
    monkeypatch.setattr("evals.execute.go_build_steps", lambda source: toolchain("go").build)
    status, reason = run_program(task, generation, SLOT, isolation, 10.0)
    assert status == "compile_error" and "HTTPSuccess" in reason


def test_go_canonicals_pass_with_the_lean_testify(isolation: Isolation) -> None:
    for task_id in ("Go/0", "Go/16", "Go/53", "Go/95", "Go/163"):
        task = GO[task_id]
        assert "importcfg-lean" in " ".join(go_build_steps(assemble(task, task.canonical_solution).source)[1])
        assert run_program(task, task.canonical_solution, SLOT, isolation, 10.0) == ("passed", ""), task_id
