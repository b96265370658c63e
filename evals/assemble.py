"""Assemble the program a sample stands for, as HumanEval-X intends, per language.

``generation`` is the text a model wrote after the task's prompt (for the canonical
solution, ``canonical_solution``). Rules (docs/humaneval-x.md has the reasons):

* Python, C++, JavaScript, Java: ``prompt + generation + "\\n" + test``; Java's file is
  ``Main.java`` (the test is ``public class Main``); JavaScript gets a preload that makes a
  failed ``console.assert`` fail the run (the tests use it, and it only prints).
* Go: one ``prog.go`` = ``test_setup`` + the standard packages the rest of the file
  uses and ``test_setup`` lacks (derived from ``pkg.`` uses over the whole file, not only
  the generation) + ``prompt`` without its ``import`` block + generation + test + a
  ``main`` calling ``testing.Main`` on the test's ``TestXxx`` functions (what ``go test``
  generates), so it builds with ``go tool compile``/``link`` against a fixed importcfg.
* Rust: ``fn main(){}`` + ``declaration`` + ``prompt`` + generation + test, built with
  ``--test`` (the tests are a ``#[cfg(test)]`` module).

Every program ends with an epilogue that prints the line held by the environment variable
``END_TOKEN_ENV`` once the last check has returned (``Program.prints_end_token``). The
executor sets a fresh random token per run and counts an exit status 0 as a pass only if
that line is in the output: a program that exits 0 early (``os._exit(0)``, ``exit(0)``,
``System.exit(0)``, ``process.exit(0)``, ``os.Exit(0)``, ``std::process::exit(0)``) never
reaches it. Where the epilogue sits, per language:

* Python, JavaScript: the last statement of the file (JavaScript's prints only if no
  ``console.assert`` failed);
* C++: the test's ``int main()`` is renamed ``codeglm_checks`` (with a final
  ``return 0;``) and a new ``main`` prints the token when it returns 0;
* Java: a class ``CodeglmEnd`` whose ``main`` calls ``Main.main`` and then prints it (the
  run command starts ``CodeglmEnd``);
* Go, Rust: one more test function, run after the task's tests (Go: last in the list given
  to ``testing.Main``; Rust: named to sort last, tests run one at a time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evals.dataset import Task
from evals.toolchains import GO_PACKAGES

# The environment variable the run step gets its end-of-checks token from (evals.execute).
END_TOKEN_ENV = "CODEGLM_END_TOKEN"

# Counts failed console.assert calls and turns them into a failing exit status.
JS_PRELOAD = """\
'use strict';
const codeglmAssert = console.assert.bind(console);
let codeglmFailures = 0;
console.assert = (condition, ...rest) => {
  if (!condition) {
    codeglmFailures += 1;
    process.exitCode = 1;
    codeglmAssert(condition, ...rest);
  }
};
process.on('exit', () => {
  if (codeglmFailures > 0) {
    process.stderr.write(`codeglm: ${codeglmFailures} console.assert failure(s)\\n`);
    process.exitCode = 1;
  }
});
// The end-of-checks line (prog.js calls this last): only when every assertion held.
const codeglmToken = process.env.CODEGLM_END_TOKEN || '';
delete process.env.CODEGLM_END_TOKEN;
const codeglmWrite = require('fs').writeSync;
Object.defineProperty(globalThis, '__codeglmEndOfChecks', {
  value: () => { if (codeglmFailures === 0) codeglmWrite(1, `\\n${codeglmToken}\\n`); },
  writable: false, configurable: false, enumerable: false,
});
"""

PYTHON_EPILOGUE = f"""
import os as _codeglm_os, sys as _codeglm_sys
_codeglm_sys.stdout.flush()
_codeglm_os.write(1, ("\\n" + _codeglm_os.environ.get("{END_TOKEN_ENV}", "") + "\\n").encode())
"""

CPP_EPILOGUE = f"""
#include <cstdio>
#include <cstdlib>
int main() {{
    int codeglm_status = codeglm_checks();
    if (codeglm_status == 0) {{
        const char* codeglm_token = std::getenv("{END_TOKEN_ENV}");
        std::fflush(stdout);
        std::printf("\\n%s\\n", codeglm_token ? codeglm_token : "");
        std::fflush(stdout);
    }}
    return codeglm_status;
}}
"""

JAVA_END_CLASS = "CodeglmEnd"
JAVA_EPILOGUE = f"""
class {JAVA_END_CLASS} {{
    public static void main(String[] args) throws Throwable {{
        Main.main(args);
        String token = System.getenv("{END_TOKEN_ENV}");
        System.out.flush();
        System.out.print("\\n" + (token == null ? "" : token) + "\\n");
        System.out.flush();
    }}
}}
"""

GO_END_IMPORT = 'import codeglmos "os"\n\n'
GO_END_TEST = f"""
func codeglmEndOfChecks(t *testing.T) {{
\tcodeglmos.Stdout.WriteString("\\n" + codeglmos.Getenv("{END_TOKEN_ENV}") + "\\n")
}}
"""

RUST_EPILOGUE = f"""
#[test]
fn zzzz_codeglm_end_of_checks() {{
    use std::io::Write;
    let token = std::env::var("{END_TOKEN_ENV}").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\\n{{}}\\n", token);
    let _ = out.flush();
}}
"""

_CPP_MAIN = re.compile(r"\bint\s+main\s*\(\s*\)")

_GO_IMPORT_LINE = re.compile(r'"([^"]+)"')
_GO_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|`[^`]*`', re.S)


@dataclass(frozen=True)
class Program:
    """Files to write in the sandbox directory; ``source_name`` is the one compiled or run."""

    source_name: str
    files: tuple[tuple[str, str], ...]
    prints_end_token: bool = True  # False only for a C++ test not shaped ``int main() {...}``

    @property
    def source(self) -> str:
        return dict(self.files)[self.source_name]


def generation_prompt(task: Task) -> str:
    """The text a model continues (the same text ``assemble`` puts before the generation)."""
    if task.language == "rust":
        return task.declaration + task.prompt
    if task.language == "go":
        return _go_prompt(task)
    return task.prompt


def _go_prompt(task: Task) -> str:
    prompt = task.prompt
    if task.import_text and task.import_text in prompt:
        prompt = prompt.replace(task.import_text, "", 1)
    return prompt.lstrip("\n")


def _go_imports_in(setup: str) -> set[str]:
    block = re.search(r"import\s*\((.*?)\)", setup, re.S)
    lines = block.group(1) if block else " ".join(re.findall(r'import\s+("[^"]+")', setup))
    return set(_GO_IMPORT_LINE.findall(lines))


def go_missing_imports(test_setup: str, body: str) -> list[str]:
    """Standard packages ``body`` uses (``name.`` outside comments and strings) not in ``test_setup``."""
    code = _GO_COMMENT_OR_STRING.sub(" ", body)
    have = _go_imports_in(test_setup)
    used = {path for name, path in GO_PACKAGES.items() if re.search(rf"(?<![\w.]){name}\.[A-Z]", code)}
    return sorted(used - have)


_GO_TEST_FUNC = re.compile(r"^func (Test\w*)\(\s*\w+\s+\*testing\.T\s*\)", re.M)


def _go_program(task: Task, generation: str) -> str:
    body = _go_prompt(task) + generation + "\n" + task.test
    missing = go_missing_imports(task.test_setup, body)
    extra = "import (\n" + "".join(f'    "{p}"\n' for p in missing) + ")\n\n" if missing else ""
    # What `go test` would generate, in the file itself: a main running the test functions,
    # so the program builds with `go tool compile` + `go tool link` (half the CPU of `go test -c`).
    names = [*_GO_TEST_FUNC.findall(task.test), "codeglmEndOfChecks"]
    tests = ", ".join(f'{{"{name}", {name}}}' for name in names)
    main = GO_END_TEST + (
        "\nfunc main() {\n"
        "\ttesting.Main(func(pat, str string) (bool, error) { return true, nil },\n"
        f"\t\t[]testing.InternalTest{{{tests}}}, nil, nil)\n}}\n"
    )
    return task.test_setup + "\n" + extra + GO_END_IMPORT + body + main


def _cpp_program(task: Task, generation: str) -> Program:
    """The test's ``main`` becomes ``codeglm_checks``; the new ``main`` prints the token after it."""
    test = task.test.rstrip()
    if len(_CPP_MAIN.findall(test)) != 1 or not test.endswith("}"):
        return Program("prog.cpp", (("prog.cpp", task.prompt + generation + "\n" + task.test + "\n"),), False)
    test = _CPP_MAIN.sub("int codeglm_checks()", test)[:-1] + "return 0;\n}\n"
    return Program("prog.cpp", (("prog.cpp", task.prompt + generation + "\n" + test + CPP_EPILOGUE),))


def assemble(task: Task, generation: str) -> Program:
    """The program that tests ``generation`` for ``task``."""
    lang = task.language
    if lang == "python":
        return Program("prog.py", (("prog.py", task.prompt + generation + "\n" + task.test + "\n" + PYTHON_EPILOGUE),))
    if lang == "cpp":
        return _cpp_program(task, generation)
    if lang == "java":
        return Program("Main.java", (("Main.java", task.prompt + generation + "\n" + task.test + "\n" + JAVA_EPILOGUE),))
    if lang == "javascript":
        source = task.prompt + generation + "\n" + task.test + "\n;__codeglmEndOfChecks();\n"
        return Program("prog.js", (("prog.js", source), ("preload.js", JS_PRELOAD)))
    if lang == "go":
        return Program("prog.go", (("prog.go", _go_program(task, generation)),))
    if lang == "rust":
        source = "\nfn main(){}\n" + task.declaration + task.prompt + generation + task.test + "\n" + RUST_EPILOGUE
        return Program("prog.rs", (("prog.rs", source),))
    raise ValueError(f"cannot assemble a {lang!r} program")
