"""The safetensors files of a model directory (one file, or shards with an index).

Two ways to take a tensor, chosen by what happens to it next:

- ``get``: memory-mapped, no copy. For tensors used as stored: their pages are read
  when first used and, being the file's, shared with every process that maps it
  (a language server and a serve-api on one machine hold the weights once).
- ``read``: read with plain file reads into memory of its own. For tensors that are
  combined, converted or quantized and then dropped: a mapped page once touched counts
  in the process's resident memory for as long as the file stays mapped (any tensor
  kept from it keeps the whole mapping), so reading those through the mapping made
  loading peak at 1.5-2x the weights; through ``read`` they only pass through the page cache.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

# safetensors' dtype names.
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointFiles:
    """The safetensors files of a model directory; tensors are taken one at a time."""

    def __init__(self, directory: Path) -> None:
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (directory / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            found = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
            hint = f" (found {', '.join(found)}: save it with save_pretrained(safe_serialization=True))" if found else ""
            raise FileNotFoundError(f"{directory} has no safetensors weights (model.safetensors or its index){hint}")
        self.paths = [directory / name for name in files]
        self.handles = [open_safetensors(path) for path in self.paths]
        self.where = {key: i for i, handle in enumerate(self.handles) for key in handle.keys()}
        self.entries = {key: entry for path in self.paths for key, entry in read_header(path).items()}

    def get(self, key: str) -> torch.Tensor:
        """The tensor, memory-mapped."""
        return self.handles[self.where[key]].get_tensor(key)

    def dtype(self, key: str) -> torch.dtype:
        return DTYPES[self.entries[key].dtype]

    def read(self, key: str) -> torch.Tensor:
        """The tensor, read into memory of its own."""
        entry = self.entries[key]
        out = torch.empty(entry.end - entry.begin, dtype=torch.uint8)
        with open(self.paths[self.where[key]], "rb", buffering=0) as f:
            f.seek(entry.begin)
            view = memoryview(out.numpy())
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise OSError(f"{self.paths[self.where[key]]} ends inside tensor {key}: the file is cut short")
                done += got
        return out.view(DTYPES[entry.dtype]).reshape(entry.shape)


def open_safetensors(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as error:  # not an OSError or ValueError: named here so loaders can say so
        raise ValueError(
            f"{path} is not a whole safetensors file ({error}): copy or download it again"
        ) from None


@dataclass(frozen=True)
class HeaderEntry:
    dtype: str  # safetensors' name
    shape: tuple[int, ...]
    begin: int  # byte offsets in the file
    end: int


def read_header(path: Path) -> dict[str, HeaderEntry]:
    """Each tensor's dtype, shape and absolute byte range in a safetensors file (an
    8-byte little-endian header length, the JSON header, then the data)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    data_start = 8 + length
    return {
        key: HeaderEntry(value["dtype"], tuple(value["shape"]), data_start + value["data_offsets"][0],
                         data_start + value["data_offsets"][1])
        for key, value in header.items()
        if key != "__metadata__"
    }


__all__ = ["CheckpointFiles", "read_header"]
