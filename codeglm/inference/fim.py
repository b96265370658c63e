"""Fill-in-the-middle prompts: which FIM tokens a tokenizer has, and the prompt's token
ids laid out prefix-suffix-middle (PSM).

PSM puts the text before the cursor first: while a user types, that is the part of the
prompt that stays the same from one request to the next (up to the cursor), so the
prefix cache reuses it and only the suffix and the new characters are computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# (prefix, suffix, middle) markers of the model families that have them.
FIM_TOKEN_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),  # CodeLlama
)


@dataclass(frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int


def detect_fim_tokens(vocabulary: Mapping[str, int]) -> FimTokens | None:
    """The first known FIM triple whose three tokens are all in ``vocabulary``."""
    for prefix, suffix, middle in FIM_TOKEN_TRIPLES:
        if prefix in vocabulary and suffix in vocabulary and middle in vocabulary:
            return FimTokens(vocabulary[prefix], vocabulary[suffix], vocabulary[middle])
    return None


def prompt_token_ids(
    encode: Callable[[str], list[int]],
    prompt: str,
    suffix: str | None,
    fim: FimTokens | None,
    start: Sequence[int] = (),
) -> list[int]:
    """``start`` (the tokens a tokenizer puts before any text, say BOS), then the prompt;
    with a suffix and FIM tokens: ``<prefix> prompt <suffix> suffix <middle>``."""
    if suffix is not None and fim is not None:
        return [*start, fim.prefix, *encode(prompt), fim.suffix, *encode(suffix), fim.middle]
    return [*start, *encode(prompt)]


__all__ = ["FIM_TOKEN_TRIPLES", "FimTokens", "detect_fim_tokens", "prompt_token_ids"]
