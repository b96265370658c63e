"""Translation prompts: CodeGeeX's ``code translation`` prompt for a unit, with the target's
imports and the signatures already translated, within the model's context."""

from __future__ import annotations

from dataclasses import dataclass

from codeglm.backends.base import (
    Backend,
    SamplingParams,
)
from codeglm.languages import Language
from codeglm.translation.types import TranslationRequest
from codeglm.translation.units import (
    Unit,
)

# Output budget per unit: a translation is rarely more than twice its source.
OUTPUT_FACTOR = 2


OUTPUT_SLACK = 64


# At most this many signatures of earlier units go into a prompt.
MAX_SIGNATURES = 24


def translation_prompt(source_name: str, source_code: str, target_name: str, target_prefix: str = "") -> str:
    """The CodeGeeX translation prompt: ``code translation\\n{Src}:\\n{source}\\n{Tgt}:\\n{prefix}``."""
    return f"code translation\n{source_name}:\n{source_code}\n{target_name}:\n{target_prefix}"


def stop_strings(source: Language, target: Language) -> tuple[str, ...]:
    """Where a translation is over: the model starting another section of the prompt format."""
    return ("\ncode translation", f"\n{source.display_name}:\n", f"\n{target.display_name}:\n")


def _unit_source(unit: Unit, source_imports: str) -> str:
    if unit.kind == "member":
        body = "\n".join(x for x in (unit.container_header.rstrip(), unit.text, unit.container_footer) if x)
    else:
        body = unit.text
    if source_imports and unit.kind not in ("imports", "file"):
        return source_imports.rstrip() + "\n\n" + body
    return body


def _target_prefix(target: Language, imports: list[str], signatures: list[str]) -> str:
    parts: list[str] = []
    if imports:
        parts.append("\n".join(imports).rstrip() + "\n")
    if signatures:
        parts.append(target.comment("Already translated:\n" + "\n".join(signatures[-MAX_SIGNATURES:])))
    return "\n".join(parts)


@dataclass(frozen=True)
class _Plan:
    prompt: str
    prompt_tokens: int
    max_new_tokens: int


def plan_prompt(
    unit: Unit,
    source: Language,
    target: Language,
    backend: Backend,
    source_imports: str,
    target_imports: list[str],
    signatures: list[str],
    max_new_tokens: int | None = None,
) -> _Plan | None:
    """The richest prompt that leaves room for the translation, or None when even the
    bare unit does not fit the model's context."""
    unit_tokens = backend.count_tokens(unit.text)
    wanted = unit_tokens * OUTPUT_FACTOR + OUTPUT_SLACK
    if max_new_tokens is not None:
        wanted = min(wanted, max_new_tokens)
    # Richest first: drop the signatures, then the imports, when the context is tight.
    choices = (
        (source_imports, target_imports, signatures),
        (source_imports, target_imports, []),
        ("", [], []),
    )
    for src_imports, tgt_imports, sigs in choices:
        prompt = translation_prompt(
            source.display_name,
            _unit_source(unit, src_imports),
            target.display_name,
            _target_prefix(target, tgt_imports, sigs),
        )
        tokens = backend.count_tokens(prompt)
        room = backend.context_length - tokens
        if room >= wanted:
            return _Plan(prompt, tokens, wanted)
        if not sigs and not tgt_imports and room >= max(unit_tokens, 16):
            # A translation about as long as its source still fits: go with less room.
            return _Plan(prompt, tokens, room)
    return None


def sampling_for_attempt(request: TranslationRequest, attempt: int, max_new_tokens: int) -> SamplingParams:
    """First attempt as requested; each retry samples hotter (up to 1.0) with another seed."""
    temperature = request.temperature if attempt == 0 else min(1.0, max(request.temperature, 0.2) + 0.2 * attempt)
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=request.top_p,
        seed=request.seed + attempt,
    )


__all__ = ["MAX_SIGNATURES", "OUTPUT_FACTOR", "OUTPUT_SLACK", "plan_prompt", "sampling_for_attempt", "stop_strings", "translation_prompt"]
