"""Reuse the KV of recent prompts: an editor sends nearly the same prompt each keystroke.

An entry maps a prompt's token ids to that prompt's keys and values (one (1, nh, P, hs)
tensor per layer). A new prompt reuses the longest token prefix it shares with any
entry and only the rest is computed. CodeGeeX has learned absolute positions, so a
cached prefix is valid exactly when the token ids match from position 0 - which is
what a shared prefix is.

Memory is bounded by ``max_tokens`` over all entries; the least recently used entries
go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixEntry:
    tokens: torch.Tensor  # (P,) int64, on the CPU
    keys: list[torch.Tensor]  # per layer (1, nh, P, hs)
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.tokens.numel())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


@dataclass(frozen=True)
class PrefixMatch:
    """``length`` leading tokens of a prompt whose KV ``entry`` holds (0 = no match)."""

    length: int
    entry: PrefixEntry | None


def shared_prefix_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading ids two 1-D id tensors have in common."""
    n = min(a.numel(), b.numel())
    mismatch = torch.nonzero(a[:n] != b[:n])
    return int(mismatch[0, 0]) if mismatch.numel() else n


class PrefixCache:
    """Recent prompts' KV, looked up by longest shared token prefix, LRU-evicted."""

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"prefix cache size must be >= 0 tokens, got {max_tokens}")
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, PrefixEntry] = OrderedDict()  # oldest first
        self._next_key = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return sum(e.length for e in self._entries.values())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def lookup(self, prompt: Sequence[int]) -> PrefixMatch:
        """The entry sharing the longest prefix with ``prompt``; marks it recently used."""
        ids = torch.as_tensor(prompt, dtype=torch.long)
        best_key, best_length = None, 0
        for key, entry in self._entries.items():
            length = shared_prefix_length(ids, entry.tokens)
            if length > best_length:
                best_key, best_length = key, length
        if best_key is None:
            self.misses += 1
            return PrefixMatch(0, None)
        self.hits += 1
        self._entries.move_to_end(best_key)
        return PrefixMatch(best_length, self._entries[best_key])

    def store(self, prompt: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Remember a prompt's KV; entries it extends (or equals) become redundant and go."""
        ids = torch.as_tensor(prompt, dtype=torch.long)
        if ids.numel() == 0 or ids.numel() > self.max_tokens:
            return
        for key in [k for k, e in self._entries.items() if shared_prefix_length(ids, e.tokens) == e.length]:
            del self._entries[key]
        self._entries[self._next_key] = PrefixEntry(ids, keys, values)
        self._next_key += 1
        while self.tokens > self.max_tokens:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["PrefixCache", "PrefixEntry", "PrefixMatch", "shared_prefix_length"]
