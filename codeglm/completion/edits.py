"""The byte range one document version changed into the next, as tree-sitter's incremental
parsing takes it."""

from __future__ import annotations

from dataclasses import dataclass

# Bytes compared per slice when looking for the edit (slices compare in C; bytes one by one do not).
_DIFF_CHUNK = 4096


@dataclass(frozen=True)
class ByteEdit:
    """The single contiguous change turning ``old`` into ``new`` (bytes)."""

    start_byte: int
    old_end_byte: int
    new_end_byte: int


def diff_bytes(old: bytes, new: bytes) -> ByteEdit:
    """The smallest single edit (common prefix and suffix kept) from ``old`` to ``new``."""
    limit = min(len(old), len(new))
    start = 0
    while start + _DIFF_CHUNK <= limit and old[start : start + _DIFF_CHUNK] == new[start : start + _DIFF_CHUNK]:
        start += _DIFF_CHUNK
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while (
        end_old - _DIFF_CHUNK >= start
        and end_new - _DIFF_CHUNK >= start
        and old[end_old - _DIFF_CHUNK : end_old] == new[end_new - _DIFF_CHUNK : end_new]
    ):
        end_old -= _DIFF_CHUNK
        end_new -= _DIFF_CHUNK
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    return ByteEdit(start, end_old, end_new)


def byte_point(source: bytes, offset: int) -> tuple[int, int]:
    """(row, column in bytes) of a byte offset, as tree-sitter counts points."""
    row = source.count(b"\n", 0, offset)
    line_start = source.rfind(b"\n", 0, offset) + 1
    return row, offset - line_start


__all__ = ["ByteEdit", "byte_point", "diff_bytes"]
