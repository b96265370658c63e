"""A preallocated KV cache: decoding writes into place, never concatenates.

Each cached layer has one key and one value buffer of shape (B, nh, capacity, hs).
A forward pass of T new tokens writes them at ``[length, length + T)`` and attends
over the view ``[:length + T]``; no tensor grows and nothing is copied per step.

The cache speaks the protocol ``codeglm.model.codegeex`` expects (``update`` and
``get_seq_length``, like transformers' ``DynamicCache``). ``length`` advances when the
last layer has been written, so one model forward pass moves it once.

``rows(i, j, offset)`` gives a cache over a slice of the same buffers: the engine
prefills one prompt into rows of a batch (left-padded by ``offset`` positions) and
copies the prompt's KV to the other samples' rows, all without new allocations.
``keep_rows`` drops the rows of finished samples by moving the others up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheShape:
    """What a cache holds: ``layers`` blocks with ``heads`` heads of ``head_dim``."""

    layers: int
    heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys and values one token takes over all layers (one row)."""
        return 2 * self.layers * self.heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


class StaticKVCache:
    """Keys and values for ``batch`` rows and up to ``capacity`` positions per layer."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0) -> None:
        self.keys = keys  # per layer (B, nh, capacity, hs)
        self.values = values
        self.length = length
        self.num_layers = len(keys)

    @classmethod
    def allocate(cls, shape: CacheShape, batch: int, capacity: int) -> StaticKVCache:
        def buffer() -> torch.Tensor:
            return torch.empty(batch, shape.heads, capacity, shape.head_dim, dtype=shape.dtype, device=shape.device)

        return cls([buffer() for _ in range(shape.layers)], [buffer() for _ in range(shape.layers)])

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, nh, T, hs) keys/values after the cached ones; return all (B, nh, S, hs)."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot hold {end}")
        key_buffer, value_buffer = self.keys[layer_idx], self.values[layer_idx]
        key_buffer[:, :, self.length : end].copy_(k)
        value_buffer[:, :, self.length : end].copy_(v)
        if layer_idx == self.num_layers - 1:
            self.length = end
        return key_buffer[:, :, :end], value_buffer[:, :, :end]

    def next_position(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """For a kernel that writes one new token's key and value itself: the layer's
        (B, nh, capacity, hs) key and value buffers and the position to write at. Like
        ``update``, the length advances after the last layer."""
        position = self.length
        if position >= self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot hold {position + 1}")
        if layer_idx == self.num_layers - 1:
            self.length = position + 1
        return self.keys[layer_idx], self.values[layer_idx], position

    def rows(self, start: int, stop: int, offset: int = 0) -> StaticKVCache:
        """A cache over rows ``[start, stop)`` whose position 0 is this cache's ``offset``.

        It shares storage with this cache: what a forward pass writes through it lands
        in these rows, ``offset`` positions in (the left padding of a shorter prompt).
        """
        return StaticKVCache(
            [k[start:stop, :, offset:] for k in self.keys],
            [v[start:stop, :, offset:] for v in self.values],
        )

    def load_prefix(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Put a (1, nh, P, hs) per-layer prefix at positions [0, P) of every row."""
        length = keys[0].shape[2]
        for dst, src in zip(self.keys + self.values, keys + values, strict=True):
            dst[:, :, :length].copy_(src)
        self.length = length

    def copy_row_to_rows(self, source: int, start: int, stop: int, length: int) -> None:
        """Duplicate the first ``length`` positions of row ``source`` into rows [start, stop)."""
        for buffer in self.keys + self.values:
            buffer[start:stop, :, :length].copy_(buffer[source : source + 1, :, :length])

    def zero_positions(self, row: int, stop: int) -> None:
        """Zero positions [0, stop) of one row: masked-out padding must not hold NaNs,
        which would leak through attention's 0 * NaN."""
        for buffer in self.keys + self.values:
            buffer[row, :, :stop].zero_()

    def keep_rows(self, rows: Sequence[int]) -> StaticKVCache:
        """A cache over the first ``len(rows)`` rows of these buffers holding rows ``rows``
        of this cache, in that order: finished samples leave a batch, the others move up.

        Only the ``length`` cached positions are moved, in place; nothing is allocated
        beyond one copy of the kept rows' positions.
        """
        index = torch.tensor(list(rows), dtype=torch.long, device=self.keys[0].device)
        kept = len(rows)
        for buffer in self.keys + self.values:
            moved = buffer[:, :, : self.length].index_select(0, index)  # a copy: safe to write back over
            buffer[:kept, :, : self.length].copy_(moved)
        return StaticKVCache(
            [k[:kept] for k in self.keys], [v[:kept] for v in self.values], length=self.length
        )

    def prefix(self, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of one row's first ``length`` positions, (1, nh, length, hs) per layer."""
        return (
            [k[row : row + 1, :, :length].clone() for k in self.keys],
            [v[row : row + 1, :, :length].clone() for v in self.values],
        )


__all__ = ["CacheShape", "StaticKVCache"]
