"""Training data: source files gathered from directory trees, and packed token blocks.

Gathering is deterministic (sorted walk, seeded shuffle), so the same trees and
settings always give the same corpus. Every document is laid out like a completion
prompt (``codeglm.completion.prompts``): the CodeGeeX language tag, a path comment, the code,
then ``<|endoftext|>``, so the model sees at training time what it sees when serving.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE

from codeglm.languages import Language, language_for_path
from codeglm.model.tokenizer import (
    EOS_TOKEN,
    MAX_SPACE_RUN,
    MIN_SPACE_RUN,
    CodeGeeXTokenizer,
    _whitespace_pipeline,
    space_run_token,
)

# Files bigger than this are cut into pieces at line boundaries (sqlite3.c is 9 MB).
MAX_DOCUMENT_BYTES = 64_000
# Generated or minified code teaches nothing useful: skip files with such long lines.
MAX_MEAN_LINE_LENGTH = 120
MAX_LINE_LENGTH = 1_000
SKIPPED_DIRECTORIES = frozenset({".git", "node_modules", "dist", "build", "__pycache__", "testdata", "vendor"})


@dataclass(frozen=True)
class Document:
    """One training document: a whole file or a piece of a big one."""

    language: str  # a ``codeglm.languages`` id
    path: str  # relative to the tree it came from, for the path comment
    text: str


@dataclass(frozen=True)
class Corpus:
    train: list[Document]
    validation: list[Document]


def looks_generated(text: str) -> bool:
    """Minified or generated files: very long lines, on average or anywhere."""
    lines = text.splitlines() or [""]
    mean = sum(len(line) for line in lines) / len(lines)
    return mean > MAX_MEAN_LINE_LENGTH or max(len(line) for line in lines) > MAX_LINE_LENGTH


def split_big(text: str, limit: int = MAX_DOCUMENT_BYTES) -> list[str]:
    """Cut ``text`` into pieces of at most about ``limit`` characters at line ends."""
    if len(text) <= limit:
        return [text]
    pieces, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        if size + len(line) > limit and current:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        pieces.append("".join(current))
    return pieces


def walk_sources(root: Path) -> Iterator[tuple[Path, Language]]:
    """Source files under ``root`` in a stable order, with their language."""
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRECTORIES and not d.startswith("."))
        for name in sorted(files):
            if ".min." in name:
                continue
            path = Path(directory) / name
            language = language_for_path(path)
            if language is not None:
                yield path, language


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def is_validation(path: str, validation_fraction: float) -> bool:
    """A stable hash of the path picks the held-out files (not the seed: the split never moves)."""
    digest = hashlib.sha256(path.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < validation_fraction


def gather(
    roots: Sequence[Path],
    max_bytes_per_language: int,
    validation_fraction: float,
    seed: int,
    languages: Iterable[str] | None = None,
) -> Corpus:
    """Documents from ``roots``, at most ``max_bytes_per_language`` of each language.

    Files are shuffled with ``seed`` before the cap applies, so a capped language is a
    random sample of its files rather than the first directories in sort order.
    """
    wanted = set(languages) if languages is not None else None
    candidates: list[tuple[Path, Path, Language]] = []
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"training data directory {root} does not exist")
        for path, language in walk_sources(root):
            if wanted is None or language.id in wanted:
                candidates.append((root, path, language))
    random.Random(seed).shuffle(candidates)
    used: dict[str, int] = {}
    train: list[Document] = []
    validation: list[Document] = []
    for root, path, language in candidates:
        if used.get(language.id, 0) >= max_bytes_per_language:
            continue
        text = read_text(path)
        if not text or not text.strip() or looks_generated(text):
            continue
        relative = f"{root.name}/{path.relative_to(root).as_posix()}"
        used[language.id] = used.get(language.id, 0) + len(text)
        target = validation if is_validation(relative, validation_fraction) else train
        target.extend(Document(language.id, relative, piece) for piece in split_big(text))
    if not train:
        raise ValueError(
            f"no source files found under {', '.join(map(str, roots))}: give directories that hold "
            "code in a supported language"
        )
    return Corpus(train=train, validation=validation)


def render(document: Document, language: Language) -> str:
    """The document as the model sees it: tag, path comment, code (no end-of-text)."""
    return f"{language.codegeex_tag}\n{language.line_comment} path: {document.path}\n{document.text}"


SPACE_RUN = re.compile(f" {{{MIN_SPACE_RUN},}}")


def _pieces_between_space_runs(texts: Iterable[str]) -> Iterator[str]:
    """The trainer does not split out added tokens, so it would learn merges inside
    ``<|extratoken_12|>``. Encoding turns every run of 2+ spaces into such tokens, so the
    text between runs is exactly what BPE sees: train on those pieces."""
    for text in texts:
        yield from (piece for piece in SPACE_RUN.split(text) if piece)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> CodeGeeXTokenizer:
    """A byte-level BPE with ``<|endoftext|>`` (id 0) and the CodeGeeX whitespace-run
    tokens (ids 1..9), using the same normalizer/decoder pipeline as ``codeglm.model.tokenizer``."""
    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    _whitespace_pipeline(tokenizer)
    added = [AddedToken(EOS_TOKEN, normalized=True, special=True)] + [
        AddedToken(space_run_token(n), normalized=True, special=False)
        for n in range(MIN_SPACE_RUN, MAX_SPACE_RUN + 1)
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=added,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_pieces_between_space_runs(texts), trainer)
    return CodeGeeXTokenizer(tokenizer)


def pack(token_lists: Iterable[Sequence[int]], eos_token_id: int) -> np.ndarray:
    """All documents in one stream, each followed by end-of-text."""
    parts = []
    for ids in token_lists:
        parts.append(np.asarray(ids, dtype=np.int32))
        parts.append(np.asarray([eos_token_id], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def blocks(stream: np.ndarray, length: int) -> np.ndarray:
    """The stream cut into (n, length) non-overlapping blocks; the tail that does not fill one is dropped."""
    n = len(stream) // length
    return stream[: n * length].reshape(n, length)


def block_order(n_blocks: int, epoch: int, seed: int) -> np.ndarray:
    """A permutation of the blocks for one epoch: a pure function of (seed, epoch), so a
    resumed run walks the data in the same order as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


__all__ = [
    "Corpus",
    "Document",
    "block_order",
    "blocks",
    "gather",
    "looks_generated",
    "pack",
    "render",
    "split_big",
    "train_tokenizer",
]
