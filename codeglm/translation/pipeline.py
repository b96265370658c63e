"""Translate source code from one language to another, unit by unit.

The pipeline (plain data in, plain data out; the model only through a ``Backend``); this
module drives it, each step's rules live in their own module (``units``, ``prompts``,
``validation``, ``join``):

1. **Split.** A file whose prompt and translation fit the model's context is one unit;
   otherwise it is split into top-level units with tree-sitter
   (``codeglm.translation.units``): the import block, constants, classes (a class too long
   for the context as its head and one unit per method), functions, statements.
2. **Prompt.** Each unit gets the CodeGeeX translation prompt
   ``code translation\\n{Src}:\\n{source}\\n{Tgt}:\\n{target prefix}``. The source side
   carries the file's imports (and, for a method, its class header); the target side
   starts with the imports already translated and, as comments, the signatures of the
   units already translated, so names and types stay consistent across units.
3. **Validate.** The translation is parsed with the target's tree-sitter grammar. Text
   after a complete item that does not parse (the model going on into junk) is dropped;
   a translation that still does not parse, or holds no code of the kind expected, is
   retried with different sampling (temperature up, another seed), up to
   ``max_retries`` times; then it is kept inside a clearly marked comment and reported.
4. **Join.** The pieces become one file following the target's conventions: imports
   gathered at the top (one Go import block, ``package main`` when Go has none), the
   methods of a split class put back into one class, free functions and constants
   wrapped in a class named after the file when the target is Java.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from codeglm.backends import last_generation
from codeglm.backends.base import (
    Backend,
    CancelledError,
    CancelToken,
    GenerationRequest,
)
from codeglm.completion.parse_cache import parse_text
from codeglm.languages import TRANSLATION_LANGUAGES, Language, get_language
from codeglm.translation.budget import Estimate, check_unit_limit, decode_speed, estimate_translation
from codeglm.translation.join import join_translations, signatures_of, split_imports
from codeglm.translation.prompts import (
    OUTPUT_FACTOR,
    OUTPUT_SLACK,
    plan_prompt,
    sampling_for_attempt,
    stop_strings,
)
from codeglm.translation.types import (
    ProgressCallback,
    TranslationError,
    TranslationRequest,
    TranslationResult,
    UnitEvent,
    UnitResult,
)
from codeglm.translation.units import (
    Unit,
    split_units,
    whole_file_unit,
)
from codeglm.translation.validation import check_translation, make_finished, trim_translation


def failure_comment(
    target: Language, source: Language, result_unit: Unit, attempts: int, problem: str, last: str
) -> str:
    """A failed unit as a clearly marked comment: what failed, why, the source and the last attempt."""
    lines = [
        f"codeglm: FAILED to translate {result_unit.label} "
        f"(source lines {result_unit.start_line + 1}-{result_unit.end_line + 1}) after {attempts} attempt(s): {problem}.",
        "Translate this part by hand. The source:",
        "",
        *result_unit.text.split("\n"),
    ]
    if last.strip():
        lines += ["", f"The last attempt ({target.display_name}):", "", *last.rstrip().split("\n")]
    if target.block_comment is not None:
        opener, closer = target.block_comment
        # Break up comment markers inside (Rust's block comments even nest).
        body = (
            "\n".join(lines)
            .replace(closer, closer[0] + " " + closer[1:])
            .replace(opener, opener[0] + " " + opener[1:])
        )
        return f"{opener} {body}\n{closer}"
    return (
        target.comment("\n".join(lines)).rstrip("\n") + f"\n{target.line_comment} codeglm: end of failed unit"
    )


def resolve_pair(source_language: str, target_language: str) -> tuple[Language, Language]:
    """The two languages, checked: both among the six, and different."""
    source, target = get_language(source_language), get_language(target_language)
    for lang in (source, target):
        if lang.id not in TRANSLATION_LANGUAGES:
            names = ", ".join(get_language(x).display_name for x in TRANSLATION_LANGUAGES)
            raise TranslationError(f"translation supports {names}; {lang.display_name} is not one of them")
    if source.id == target.id:
        raise TranslationError(f"source and target are both {source.display_name}: nothing to translate")
    return source, target


def plan_units(
    request: TranslationRequest, source: Language, target: Language, backend: Backend
) -> list[Unit]:
    """The whole file as one unit when it fits (``split="auto"``), else its top-level units."""
    if request.split not in ("auto", "units"):
        raise TranslationError(f"split must be 'auto' or 'units', got {request.split!r}")
    if request.split == "auto":
        whole = whole_file_unit(request.source)
        # The size test first: planning a prompt tokenizes the text once per try, which
        # for a file of megabytes took seconds each before it could be refused.
        tokens = backend.count_tokens(whole.text)
        fits = tokens * (OUTPUT_FACTOR + 1) + OUTPUT_SLACK + 16 <= backend.context_length
        if (
            fits
            and plan_prompt(whole, source, target, backend, "", [], [], request.max_new_tokens) is not None
        ):
            return [whole]
    # A unit, its prompt and its translation must fit together.
    max_unit_tokens = max(16, (backend.context_length - OUTPUT_SLACK - 32) // (OUTPUT_FACTOR + 1))
    return split_units(source, request.source, max_unit_tokens, backend.count_tokens)


def plan_estimate(request: TranslationRequest, units: list[Unit], backend: Backend) -> Estimate:
    """How many units and roughly how long (``codeglm.translation.budget``): no generation."""
    speed, speed_source = decode_speed(request.tokens_per_second, last_generation(backend))
    return estimate_translation(units, backend.count_tokens, speed, speed_source, request.max_new_tokens)


def _emit(on_unit: ProgressCallback | None, event: UnitEvent) -> None:
    if on_unit is not None:
        on_unit(event)


def translate(
    request: TranslationRequest,
    backend: Backend,
    cancel: CancelToken | None = None,
    on_unit: ProgressCallback | None = None,
    on_plan: Callable[[Estimate], None] | None = None,
) -> TranslationResult:
    """Translate ``request.source``; see the module docstring for the steps.

    Once the units are planned, and before the model generates anything, a file with
    more units than ``request.max_units`` raises ``TooManyUnitsError``; otherwise
    ``on_plan`` hears how many units there are and roughly how long they will take.
    """
    started = time.monotonic()
    source, target = resolve_pair(request.source_language, request.target_language)
    if not request.source.strip():
        raise TranslationError("the source is empty: nothing to translate")
    if request.max_retries < 0:
        raise TranslationError(f"max_retries must be >= 0, got {request.max_retries}")
    units = plan_units(request, source, target, backend)
    estimate = plan_estimate(request, units, backend)
    check_unit_limit(estimate, request.max_units)
    if on_plan is not None:
        on_plan(estimate)
    source_imports = "\n".join(u.text for u in units if u.kind == "imports")
    target_imports: list[str] = []
    signatures: list[str] = []
    results: list[UnitResult] = []
    retries = 0
    stop = stop_strings(source, target)
    for index, unit in enumerate(units):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("translation cancelled")
        unit_started = time.monotonic()
        _emit(on_unit, UnitEvent(index, len(units), unit.label, "start", max_retries=request.max_retries))
        plan = plan_prompt(
            unit, source, target, backend, source_imports, target_imports, signatures, request.max_new_tokens
        )
        if plan is None:
            problem = f"too long for the model's context ({backend.context_length} tokens)"
            text = failure_comment(target, source, unit, 0, problem, "")
            result = UnitResult(index, unit, text, False, 0, problem, 0, time.monotonic() - unit_started)
            results.append(result)
            _emit(
                on_unit, UnitEvent(index, len(units), unit.label, "failed", 0, problem, request.max_retries)
            )
            continue
        attempt_text, problem, attempts = "", "", 0
        for attempt in range(request.max_retries + 1):
            attempts = attempt + 1
            if attempt > 0:
                retries += 1
                _emit(
                    on_unit,
                    UnitEvent(index, len(units), unit.label, "retry", attempt, problem, request.max_retries),
                )
            generation = backend.generate(
                GenerationRequest(
                    prompt=plan.prompt,
                    params=sampling_for_attempt(request, attempt, plan.max_new_tokens),
                    stop=stop,
                    finished=make_finished(target, unit.kind),
                ),
                cancel,
            )[0]
            if generation.finish_reason == "cancelled":
                raise CancelledError("translation cancelled")
            attempt_text = trim_translation(target, unit.kind, generation.text)
            problem = check_translation(target, unit.kind, attempt_text) or ""
            if not problem:
                break
        seconds = time.monotonic() - unit_started
        if problem:
            text = failure_comment(target, source, unit, attempts, problem, attempt_text)
            results.append(
                UnitResult(index, unit, text, False, attempts, problem, plan.prompt_tokens, seconds)
            )
            _emit(
                on_unit,
                UnitEvent(
                    index, len(units), unit.label, "failed", attempts - 1, problem, request.max_retries
                ),
            )
            continue
        results.append(UnitResult(index, unit, attempt_text, True, attempts, "", plan.prompt_tokens, seconds))
        _, imports, rest = split_imports(target, attempt_text)
        target_imports.extend(i for i in imports if i not in target_imports)
        signatures.extend(s for s in signatures_of(target, rest) if s not in signatures)
        _emit(
            on_unit, UnitEvent(index, len(units), unit.label, "done", attempts - 1, "", request.max_retries)
        )
    text = join_translations(target, results, request.class_name or "Main")
    return TranslationResult(
        text=text,
        units=tuple(results),
        failed_units=tuple(r for r in results if not r.ok),
        retries=retries,
        seconds=time.monotonic() - started,
        parses=not parse_text(target, text).root_node.has_error,
        source_language=source.id,
        target_language=target.id,
    )


__all__ = ["failure_comment", "plan_estimate", "plan_units", "resolve_pair", "translate"]
