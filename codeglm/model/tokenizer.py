"""The CodeGeeX tokenizer: GPT-2 byte-level BPE plus whitespace-run tokens.

CodeGeeX replaces every run of n spaces (2 <= n <= 10, longest first) by the added
token ``<|extratoken_{8 + n}|>`` before BPE, and back after decoding. Here that rule
lives inside one ``tokenizers`` pipeline - a ``Replace`` normalizer chain that the
added tokens (marked ``normalized``) then match, and a ``Replace`` decoder chain - so
the saved ``tokenizer.json`` behaves identically under ``AutoTokenizer`` and under
this module's ``CodeGeeXTokenizer``, with no Python pre-processing to forget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

from codeglm.paths import tokenizer_dir

EOS_TOKEN = "<|endoftext|>"
# Runs of 2..10 spaces map to extratoken_10..extratoken_18.
MIN_SPACE_RUN, MAX_SPACE_RUN, FIRST_SPACE_TOKEN = 2, 10, 10
NUM_EXTRA_TOKENS = 143


def space_run_token(n: int) -> str:
    """The added token that stands for a run of ``n`` spaces."""
    return f"<|extratoken_{FIRST_SPACE_TOKEN + n - MIN_SPACE_RUN}|>"


class TokenizerFilesError(ValueError):
    """The tokenizer directory lacks files or holds something else."""


def _whitespace_pipeline(tokenizer: Tokenizer) -> None:
    runs = range(MAX_SPACE_RUN, MIN_SPACE_RUN - 1, -1)  # longest first, as CodeGeeX does
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(" " * n, space_run_token(n)) for n in runs])
    tokenizer.decoder = decoders.Sequence(
        [decoders.ByteLevel()] + [decoders.Replace(space_run_token(n), " " * n) for n in runs]
    )


def build_from_vocab_files(directory: Path) -> Tokenizer:
    """Build the tokenizer from vocab.json, merges.txt and added_tokens.json."""
    vocab, merges, added = directory / "vocab.json", directory / "merges.txt", directory / "added_tokens.json"
    missing = [p.name for p in (vocab, merges) if not p.is_file()]
    if missing:
        raise TokenizerFilesError(
            f"{directory} has no {' or '.join(missing)}: give a directory with tokenizer.json, "
            "or with vocab.json + merges.txt (+ added_tokens.json) of the CodeGeeX tokenizer"
        )
    tokenizer = Tokenizer(BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    extra: dict[str, int] = json.loads(added.read_text()) if added.is_file() else {}
    if not extra:
        base = tokenizer.get_vocab_size()
        extra = {f"<|extratoken_{i}|>": base + i - 1 for i in range(1, NUM_EXTRA_TOKENS + 1)}
    for content, token_id in sorted(extra.items(), key=lambda kv: kv[1]):
        # ``normalized=True``: matched after the whitespace normalizer has run.
        tokenizer.add_tokens([AddedToken(content, normalized=True, special=False)])
        if tokenizer.token_to_id(content) != token_id:
            raise TokenizerFilesError(
                f"{added}: {content} should have id {token_id} but got {tokenizer.token_to_id(content)}"
            )
    tokenizer.add_special_tokens([AddedToken(EOS_TOKEN, normalized=True, special=True)])
    _whitespace_pipeline(tokenizer)
    return tokenizer


class CodeGeeXTokenizer:
    """Text <-> token ids, exactly as CodeGeeX's reference tokenizer does it."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.backend = tokenizer
        eos = tokenizer.token_to_id(EOS_TOKEN)
        if eos is None:
            raise TokenizerFilesError(f"the tokenizer has no {EOS_TOKEN} token")
        self.eos_token_id: int = eos
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def to_transformers(self):  # -> transformers.PreTrainedTokenizerFast
        """The same tokenizer as a transformers tokenizer (for ``generate()`` and friends)."""
        from transformers import (
            PreTrainedTokenizerFast,  # deferred: transformers only to hand the tokenizer over
        )

        return PreTrainedTokenizerFast(
            tokenizer_object=self.backend,
            bos_token=EOS_TOKEN,
            eos_token=EOS_TOKEN,
            unk_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            clean_up_tokenization_spaces=False,
            model_max_length=2048,
        )

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and its config so ``AutoTokenizer.from_pretrained`` loads it."""
        self.to_transformers().save_pretrained(str(directory))


def load_tokenizer(path: str | Path | None = None) -> CodeGeeXTokenizer:
    """Load from a directory with tokenizer.json, or with vocab.json + merges.txt.

    ``path`` may also be a tokenizer.json file. Without a path: ``CODEGLM_TOKENIZER``
    or the shared data directory (see ``codeglm.paths``).
    """
    location = Path(path) if path is not None else tokenizer_dir()
    if location.is_file():
        return CodeGeeXTokenizer(Tokenizer.from_file(str(location)))
    if not location.is_dir():
        raise TokenizerFilesError(f"tokenizer path {location} does not exist")
    if (location / "tokenizer.json").is_file():
        return CodeGeeXTokenizer(Tokenizer.from_file(str(location / "tokenizer.json")))
    return CodeGeeXTokenizer(build_from_vocab_files(location))




class TransformersTokenizer:
    """A transformers tokenizer (``AutoTokenizer``) as the engine uses one: text encoded and
    decoded verbatim (no special tokens added, no clean-up), and every end-of-text id the
    model's generation config names (``eos_token_ids``)."""

    def __init__(self, tokenizer: Any, eos_token_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        ids = [int(i) for i in eos_token_ids]
        if not ids and tokenizer.eos_token_id is not None:
            ids = [int(tokenizer.eos_token_id)]
        self.eos_token_ids = frozenset(ids)
        self.eos_token_id: int = ids[0] if ids else -1
        self.vocabulary: dict[str, int] = dict(tokenizer.get_vocab())
        # What the tokenizer puts before any text (Llama's and DeepSeek's BOS; nothing for
        # Qwen2 or StarCoder): prompts start with it, as the model saw in training.
        plain = self.encode("x")
        marked = list(tokenizer.encode("x", add_special_tokens=True))
        self.start_ids: tuple[int, ...] = tuple(marked[: len(marked) - len(plain)]) if marked[-len(plain) :] == plain else ()

    @classmethod
    def from_directory(cls, directory: str | Path) -> TransformersTokenizer:
        """The tokenizer saved beside a model, with the end-of-text ids of its
        generation_config.json (else config.json, else the tokenizer's own)."""
        from transformers import AutoTokenizer  # deferred: transformers' tokenizer import is heavy

        directory = Path(directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as error:
            raise TokenizerFilesError(f"no tokenizer that transformers can load in {directory}: {error}") from error
        eos: list[int] = []
        for name in ("generation_config.json", "config.json"):
            path = directory / name
            if path.is_file():
                value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
                if value is not None:
                    eos = value if isinstance(value, list) else [value]
                    break
        return cls(tokenizer, eos)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))


__all__ = ["CodeGeeXTokenizer", "TokenizerFilesError", "TransformersTokenizer", "load_tokenizer", "space_run_token"]
