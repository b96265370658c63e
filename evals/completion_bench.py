"""Offline completion benchmark: ``codeglm eval completion``.

Cases come from the HumanEval-X canonical solutions. Each problem's file is its prompt
plus canonical solution; inside the solution we cut out

* a **line** case: the cursor after a line's indentation, that line's code removed
  (the expected text), the rest of the file as suffix; single-line mode;
* a **block** case: the cursor at the end of a line that opens a block, the block's
  body (and closing brace) removed (the expected text), the rest as suffix; the
  pipeline decides the mode itself.

The whole pipeline runs (context, prompt within budget, backend with the finished
callback, post-processing) and we report exact match, edit similarity, the share of
results whose file parses, tokens generated per case and p50/p95 latency.

``--backend oracle`` replays each case's true continuation of the file (the expected
text followed by the rest of the file) through the finished callback, token by token
as an engine would: it measures the pipeline's cutting rules on their own (an upper
bound for any model).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from codeglm.backends import load_backend
from codeglm.backends.base import (
    Backend,
    BackendError,
    CancelToken,
    Completion,
    GenerationRequest,
)
from codeglm.backends.options import add_backend_argument, add_max_tokens_argument
from codeglm.completion.pipeline import CompletionRequest, complete
from codeglm.languages import LANGUAGES, Language, UnsupportedLanguageError, get_language
from codeglm.model.tokenizer import load_tokenizer
from evals.dataset import load_language

HUMANEVAL_LANGUAGES = tuple(lang.humaneval_name for lang in LANGUAGES if lang.humaneval_name)


@dataclass(frozen=True)
class Case:
    """One completion case: the document without the expected text, and the cursor."""

    case_id: str
    kind: str  # "line" or "block"
    language: Language
    text: str
    line: int
    character: int
    expected: str
    # The original file's text after the cursor (expected + rest): what an oracle would write.
    continuation: str


@dataclass(frozen=True)
class CaseResult:
    case: Case
    prediction: str
    exact: bool
    edit_similarity: float
    parses: bool
    generated_tokens: int
    latency_ms: float


# --- data -------------------------------------------------------------------------------


def load_problems(humaneval_name: str) -> list[dict]:
    """HumanEval-X records of one language, through the harness's ``evals.dataset`` (with its
    data patches)."""
    tasks, _ = load_language(humaneval_name)
    return [
        {"task_id": t.task_id, "prompt": t.prompt, "declaration": t.declaration,
         "canonical_solution": t.canonical_solution, "test": t.test}
        for t in tasks
    ]


def program_parts(humaneval_name: str, problem: dict) -> tuple[str, str]:
    """(text before the solution, the canonical solution) of one problem's file."""
    solution = problem["canonical_solution"]
    if humaneval_name == "rust":
        # The prompt is only a doc comment; the declaration holds the uses and the signature.
        declaration = problem["declaration"]
        signature_at = declaration.rfind("\nfn ") + 1
        head = declaration[:signature_at] + problem["prompt"].lstrip("\n") + declaration[signature_at:]
        return head, solution
    return problem["prompt"], solution


# --- case building ------------------------------------------------------------------------


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def line_cases(case_id: str, language: Language, head: str, solution: str) -> list[Case]:
    """One case per solution line with code (a lone closing brace is not worth a case)."""
    full = head + solution
    cases = []
    offset = len(head)
    for line in solution.split("\n"):
        code = line.strip()
        if code and code not in ("}", "};", "})", "});"):
            start = offset + len(line) - len(line.lstrip())
            end = offset + len(line.rstrip())
            text = full[:start] + full[end:]
            row, col = _position(text, start)
            cases.append(Case(f"{case_id}/line{row}", "line", language, text, row, col, code, full[start:]))
        offset += len(line) + 1
    return cases


def block_cases(case_id: str, language: Language, head: str, solution: str) -> list[Case]:
    """One case per line of the solution that opens a block closed within the solution."""
    full = head + solution
    source = full.encode("utf-8")
    tree = language.parser().parse(source)
    cases = []
    offset = len(head)
    for line in solution.split("\n"):
        code = line.rstrip()
        opens = code.endswith(":") if language.indentation_blocks else code.endswith("{")
        cursor = offset + len(code)
        if opens and code.strip():
            cursor_byte = len(full[:cursor].encode("utf-8"))
            opener = tree.root_node.descendant_for_byte_range(cursor_byte - 1, cursor_byte)
            anchor = opener.parent if opener is not None and opener.type in (":", "{") else None
            if anchor is not None and anchor.type != "ERROR" and anchor.end_byte > cursor_byte:
                end = len(source[: anchor.end_byte].decode("utf-8"))
                if end <= len(head) + len(solution.rstrip()):
                    row, col = _position(full, cursor)
                    text = full[:cursor] + full[end:]
                    cases.append(
                        Case(f"{case_id}/block{row}", "block", language, text, row, col, full[cursor:end], full[cursor:])
                    )
        offset += len(line) + 1
    return cases


def build_cases(humaneval_name: str, limit: int | None = None) -> list[Case]:
    """Line and block cases of one language, alternating over problems, at most ``limit``."""
    language = get_language(humaneval_name)
    per_problem: list[list[Case]] = []
    for problem in load_problems(humaneval_name):
        head, solution = program_parts(humaneval_name, problem)
        lines = line_cases(problem["task_id"], language, head, solution)
        blocks = block_cases(problem["task_id"], language, head, solution)
        chosen = []
        if lines:
            chosen.append(lines[len(lines) // 2])
        if blocks:
            chosen.append(blocks[0])
        per_problem.append(chosen)
    cases = [case for chosen in per_problem for case in chosen]
    return cases if limit is None else cases[:limit]


# --- metrics ---------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, expected: str) -> float:
    if not prediction and not expected:
        return 1.0
    return 1.0 - levenshtein(prediction, expected) / max(len(prediction), len(expected))


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()


def score(case: Case, prediction: str, generated_tokens: int, latency_ms: float) -> CaseResult:
    expected = _normalize(case.expected)
    got = _normalize(prediction)
    if case.kind == "line":
        got = got.split("\n", 1)[0].strip() if got else ""
    lines = case.text.split("\n")
    current = lines[case.line]
    lines[case.line] = current[: case.character] + prediction + current[case.character :]
    parses = not case.language.parser().parse("\n".join(lines).encode("utf-8")).root_node.has_error
    return CaseResult(case, prediction, got == expected, edit_similarity(got, expected), parses, generated_tokens, latency_ms)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(results: Sequence[CaseResult]) -> dict[str, float | int]:
    n = len(results)
    if n == 0:
        return {"cases": 0, "exact_match": 0.0, "edit_similarity": 0.0, "parse_rate": 0.0,
                "tokens_per_case": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
    latencies = [r.latency_ms for r in results]
    return {
        "cases": n,
        "exact_match": round(sum(r.exact for r in results) / n, 4),
        "edit_similarity": round(statistics.fmean(r.edit_similarity for r in results), 4),
        "parse_rate": round(sum(r.parses for r in results) / n, 4),
        "tokens_per_case": round(statistics.fmean(r.generated_tokens for r in results), 2),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p95_ms": round(_percentile(latencies, 0.95), 1),
    }


# --- the oracle backend ----------------------------------------------------------------------

_PIECES = re.compile(r"\s+|\w+|[^\w\s]")


class OracleBackend:
    """A backend whose "model" writes the file's true continuation, piece by piece.

    Each piece (a word, a run of whitespace or one symbol) counts as one token, and the
    request's ``finished`` callback is checked after each, as the engine does.
    """

    name = "oracle"
    supports_fim = False

    def __init__(self, context_length: int = 2048) -> None:
        self.context_length = context_length
        self.continuation = ""
        self._count = _token_counter()

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        text, tokens, reason = "", 0, "length"
        for piece in _PIECES.findall(self.continuation):
            if tokens >= request.params.max_new_tokens:
                break
            text += piece
            tokens += 1
            keep = request.finished(text) if request.finished else None
            if keep is not None:
                text, reason = text[:keep], "stop"
                break
        else:
            reason = "stop"
        return [Completion(text, reason, tokens)]

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Iterator[str]:
        yield self.generate(request, cancel)[0].text

    def close(self) -> None:
        pass


@functools.cache
def _token_counter() -> Callable[[str], int]:
    try:

        tokenizer = load_tokenizer()
        return lambda text: len(tokenizer.encode(text))
    except Exception:  # no tokenizer files here: a rough count keeps the oracle usable
        return lambda text: max(1, len(text) // 3) if text else 0


# --- running -------------------------------------------------------------------------------------


def run_cases(cases: Sequence[Case], backend: Backend, max_new_tokens: int) -> list[CaseResult]:
    results = []
    for case in cases:
        if isinstance(backend, OracleBackend):
            backend.continuation = case.continuation
        request = CompletionRequest(
            text=case.text,
            line=case.line,
            character=case.character,
            language_id=case.language.id,
            path=f"{case.case_id.split('/')[0].lower()}/solution{case.language.extensions[0]}",
            max_new_tokens=max_new_tokens,
            multiline=False if case.kind == "line" else None,
        )
        counting = _CountingBackend(backend)
        started = time.perf_counter()
        result = complete(request, counting)
        # Timed and counted here, not from the result: a case that ends with nothing to
        # show (None) still cost its tokens and time.
        latency = (time.perf_counter() - started) * 1000.0
        prediction = "" if result is None else result.text
        results.append(score(case, prediction, counting.generated_tokens, latency))
    return results


class _CountingBackend:
    """Passes requests through and remembers how many tokens they generated."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.context_length = inner.context_length
        self.supports_fim = inner.supports_fim
        self.generated_tokens = 0

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        completions = self.inner.generate(request, cancel)
        self.generated_tokens += sum(c.generated_tokens for c in completions)
        return completions

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Iterator[str]:
        return self.inner.stream(request, cancel)

    def close(self) -> None:
        pass  # the caller owns the inner backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser, "; 'oracle' replays the true code to measure the cutting rules alone")
    parser.add_argument("--language", default=",".join(HUMANEVAL_LANGUAGES),
                        help="comma-separated HumanEval-X languages (python,cpp,java,js,go,rust)")
    parser.add_argument("--limit", type=int, default=None, help="at most N cases per language")
    add_max_tokens_argument(parser, default=128)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the metrics")


def _humaneval_name(name: str) -> str | None:
    try:
        return get_language(name).humaneval_name
    except UnsupportedLanguageError:
        return None


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.language.split(",") if name.strip()]
    unknown = [n for n in names if n not in HUMANEVAL_LANGUAGES and _humaneval_name(n) is None]
    if unknown:
        print(f"codeglm eval completion: no HumanEval-X data for {', '.join(unknown)}; "
              f"choose from {', '.join(HUMANEVAL_LANGUAGES)}", file=sys.stderr)
        return 2
    try:
        if args.backend == "oracle":
            backend: Backend = OracleBackend()
        else:

            backend = load_backend(args.backend)
    except BackendError as exc:
        print(f"codeglm eval completion: {exc}", file=sys.stderr)
        return 1
    by_language: dict[str, dict[str, float | int]] = {}
    everything: list[CaseResult] = []
    try:
        for name in names:
            humaneval_name = get_language(name).humaneval_name or name
            cases = build_cases(humaneval_name, args.limit)
            results = run_cases(cases, backend, args.max_tokens)
            everything.extend(results)
            by_language[humaneval_name] = summarize(results)
            row = by_language[humaneval_name]
            print(f"{humaneval_name:<8} cases={row['cases']:<4} exact={row['exact_match']:.3f} "
                  f"edit_sim={row['edit_similarity']:.3f} parse={row['parse_rate']:.3f} "
                  f"tokens={row['tokens_per_case']:.1f} p50={row['p50_ms']:.0f}ms p95={row['p95_ms']:.0f}ms")
    except (BackendError, OSError, ValueError) as exc:
        print(f"codeglm eval completion: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    overall = summarize(everything)
    if args.json:
        print(json.dumps({**overall, "backend": args.backend or "default", "by_language": by_language}))
    else:
        print(f"overall  cases={overall['cases']} exact={overall['exact_match']:.3f} "
              f"edit_sim={overall['edit_similarity']:.3f} parse={overall['parse_rate']:.3f}")
    return 0
