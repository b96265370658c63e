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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evals.dataset import Task
from evals.toolchains import GO_PACKAGES

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
"""

_GO_IMPORT_LINE = re.compile(r'"([^"]+)"')
_GO_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|`[^`]*`', re.S)


@dataclass(frozen=True)
class Program:
    """Files to write in the sandbox directory; ``source_name`` is the one compiled or run."""

    source_name: str
    files: tuple[tuple[str, str], ...]

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
    tests = ", ".join(f'{{"{name}", {name}}}' for name in _GO_TEST_FUNC.findall(task.test))
    main = (
        "\nfunc main() {\n"
        "\ttesting.Main(func(pat, str string) (bool, error) { return true, nil },\n"
        f"\t\t[]testing.InternalTest{{{tests}}}, nil, nil)\n}}\n"
    )
    return task.test_setup + "\n" + extra + body + main


def assemble(task: Task, generation: str) -> Program:
    """The program that tests ``generation`` for ``task``."""
    lang = task.language
    if lang == "python":
        return Program("prog.py", (("prog.py", task.prompt + generation + "\n" + task.test + "\n"),))
    if lang == "cpp":
        return Program("prog.cpp", (("prog.cpp", task.prompt + generation + "\n" + task.test + "\n"),))
    if lang == "java":
        return Program("Main.java", (("Main.java", task.prompt + generation + "\n" + task.test + "\n"),))
    if lang == "javascript":
        source = task.prompt + generation + "\n" + task.test + "\n"
        return Program("prog.js", (("prog.js", source), ("preload.js", JS_PRELOAD)))
    if lang == "go":
        return Program("prog.go", (("prog.go", _go_program(task, generation)),))
    if lang == "rust":
        source = "\nfn main(){}\n" + task.declaration + task.prompt + generation + task.test + "\n"
        return Program("prog.rs", (("prog.rs", source),))
    raise ValueError(f"cannot assemble a {lang!r} program")
