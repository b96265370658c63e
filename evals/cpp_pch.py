"""Precompiled standard headers for C++ programs whose include prefix is the prompt's.

``g++ -O0`` spends more than half of a HumanEval-X program's build parsing the standard
headers its prompt includes (``#include<stdio.h>``, ``<vector>``, ``<string>``...). The
dataset has 22 distinct sequences of those lines. For each one the harness builds, once,
outside any sandbox and from system headers only, a header ``codeglm_pch.h`` holding
exactly those lines in that order and its precompiled form ``codeglm_pch.h.gch`` (with the
build step's language flags), in ``cache_dir()/cpp-pch/<key>/`` (the key: a hash of the
compiler's version, the flags and the lines) (root's, read-only for the
sandbox: the whole machine is read-only in a step's mount namespace anyway).

A program uses it only when all of this holds (else it builds exactly as before):

* the file starts with nothing but blank lines and comments (no ``//`` comment ending in
  a backslash), then one or more lines that are each exactly ``#include<name>`` or
  ``#include <name>`` (a relative name, no ``..``), the *include block*;
* the include block lies inside the task's prompt (the dataset's text, not a model's);
* its precompiled header could be built.

The program then gets two lines before its include block: ``#include "codeglm_pch.h"``
and ``#line N`` (N: the block's own first line), so the block and everything after it keep
their line numbers (compile errors name the same ``prog.cpp:LINE:COL``, and g++'s "did you
forget to #include" notes point where they did). The build command gets ``-iquote <that
directory>`` (searched for ``#include "..."`` only). The header holds the very lines of
the block, in their order, so the program means what it meant: g++ reads the precompiled
state when it is valid for the command, and the header itself otherwise; the block's own
lines then include nothing more (the headers' include guards). What can differ is the
"In file included from" chain printed above an error inside a standard header
(``codeglm_pch.h:2`` in it); compile_error reasons are made of the error lines only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

HEADER = "codeglm_pch.h"
MAX_HEADERS = 16

_LEADING = re.compile(r"(?:[ \t\r\n\f\v]+|//[^\n]*|/\*.*?\*/)*", re.S)
_INCLUDE_LINE = re.compile(r"[ \t]*#[ \t]*include[ \t]*<([A-Za-z0-9_+\-][A-Za-z0-9_./+\-]*)>[ \t]*\n")
_CONTINUED_COMMENT = re.compile(r"//[^\n]*\\\r?\n")


def include_block(source: str) -> tuple[int, int, tuple[str, ...]] | None:
    """(start, end, header names) of the include block at the top of ``source``, or None."""
    lead = _LEADING.match(source)
    end_of_comments = lead.end() if lead else 0
    start = source.rfind("\n", 0, end_of_comments) + 1
    if source[start:end_of_comments].strip(" \t"):
        return None  # a comment ends on the line the first include would start
    if _CONTINUED_COMMENT.search(source, 0, start):
        return None  # a // comment ending in a backslash goes on into the next line
    position, headers = start, []
    while (found := _INCLUDE_LINE.match(source, position)) is not None:
        name = found.group(1)
        if ".." in name.split("/") or "//" in name:
            return None
        headers.append(name)
        position = found.end()
    if not headers or len(headers) > MAX_HEADERS:
        return None
    return start, position, tuple(headers)


def rewrite(source: str, start: int) -> str:
    """``source`` with the precompiled header included before its include block, and a
    ``#line`` that gives the block (and all that follows) its own line numbers back."""
    line = source.count("\n", 0, start) + 1
    return source[:start] + f'#include "{HEADER}"\n#line {line}\n' + source[start:]


@cache
def _compiler_identity(compiler: str) -> str:
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else ""


_BUILT: dict[Path, bool] = {}


def precompiled_dir(root: Path, compiler: str, flags: tuple[str, ...], text: str) -> Path | None:
    """The directory with ``codeglm_pch.h`` holding ``text`` (an include block, checked by
    ``include_block``) and its ``.gch`` (built once), or None where it cannot be built."""
    identity = _compiler_identity(compiler)
    if not identity:
        return None
    key = hashlib.sha256("\0".join([identity, *flags, text]).encode()).hexdigest()[:20]
    target = root / key
    known = _BUILT.get(target)
    if known is not None:
        return target if known else None
    if (target / f"{HEADER}.gch").is_file():
        _BUILT[target] = True
        return target
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        (work / HEADER).write_text(text)
        # In the cache directory, no -I: the names resolve in the system include dirs only.
        made = subprocess.run(
            [compiler, *flags, "-x", "c++-header", HEADER, "-o", f"{HEADER}.gch"],
            cwd=work, capture_output=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
        )
        if made.returncode != 0 or not (work / f"{HEADER}.gch").is_file():
            _BUILT[target] = False
            return None
        os.chmod(work, 0o755)
        for name in (HEADER, f"{HEADER}.gch"):
            os.chmod(work / name, 0o644)
        try:
            os.rename(work, target)
        except OSError:  # another worker built it first
            pass
    except (OSError, subprocess.TimeoutExpired):
        _BUILT[target] = False
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _BUILT[target] = (target / f"{HEADER}.gch").is_file()
    return target if _BUILT[target] else None


def apply(
    source: str, prompt: str, build: tuple[tuple[str, ...], ...], root: Path, flags: tuple[str, ...]
) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """(source, build commands) using a precompiled header where the rules above allow it;
    ``source`` and ``build`` unchanged otherwise. ``flags``: the language flags of the
    ``g++`` command (the ``.gch`` is built with them)."""
    block = include_block(source)
    if block is None or not source.startswith(prompt[: block[1]]) or block[1] > len(prompt):
        return source, build
    start, end, _ = block
    directory = precompiled_dir(root, build[0][0], flags, source[start:end])
    if directory is None:
        return source, build
    first = build[0]
    return rewrite(source, start), ((first[0], "-iquote", str(directory), *first[1:]), *build[1:])
