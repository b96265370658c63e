"""What the engine needs of a model (``EngineModel``), and the decode attention kernel
given to a model's attention layers.

A model runs its own layers for a prefill and for a decode step (``prefill``, ``decode``:
the code a training pass runs, without the per-call argument handling of a transformers
``forward``). The kernels that make a step fast come in as layers and hooks that code
already calls: fused projections (stacked when the weights load), linears whose
``fused_forward`` takes the norm, GELU and residual into one call (oneDNN and int8
layers), and the AVX2 one-query attention that writes the KV cache
(``use_decode_attention``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from codeglm.inference.cpu_kernels import decode_attention


class EngineModel(Protocol):
    """A model the engine runs: ``CodeGeeXForCausalLM`` or a ``Decoder`` of another family."""

    @property
    def context_length(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def cache_layout(self) -> tuple[int, int, int]:
        """(layers, key/value heads, head size) of the KV cache."""
        ...

    def prefill(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor: ...

    def score(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits (B, T, V) of every new token, not only the last (``prefill``'s)."""
        ...

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: Any) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def eval(self) -> Any: ...


def use_decode_attention(model: nn.Module) -> int:
    """Give each attention layer (any module with a ``decode_kernel`` slot) the AVX2 decode
    attention (``codeglm.inference.cpu_kernels``) where it is built; returns how many
    layers got it. The model uses it for one-token steps without a padding mask against
    the engine's cache, SDPA otherwise."""
    kernel = decode_attention()
    layers = [module for module in model.modules() if hasattr(module, "decode_kernel")]
    for layer in layers:
        layer.decode_kernel = kernel
    return 0 if kernel is None else len(layers)


__all__ = ["EngineModel", "use_decode_attention"]
