"""Pieces the model families share: the products with a norm before and an activation and
residual after (the unit inference kernels fuse), norms, activations, rotary positions and
the causal mask for a pass after cached positions.

Shapes: B batch, T new tokens, S keys (cached + new), h hidden, hs head size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

# What a product's output goes through: CodeGeeX's GELU, GELU's tanh approximation
# (StarCoder's), or SwiGLU over the [gate; up] halves of the output (Llama's MLP).
Activation = Literal["fast_gelu", "gelu_tanh", "swiglu"]


def fast_gelu(x: torch.Tensor) -> torch.Tensor:
    """CodeGeeX's GELU approximation, x * sigmoid(1.702 x). torch's sigmoid is already
    overflow-safe, so this equals the reference's exp-based form without its extra ops."""
    return x * torch.sigmoid(1.702 * x)


def activate(y: torch.Tensor, activation: Activation) -> torch.Tensor:
    """``activation`` of a product's output (SwiGLU halves the last dimension)."""
    if activation == "fast_gelu":
        return fast_gelu(y)
    if activation == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if activation == "swiglu":
        gate, up = y.chunk(2, dim=-1)
        return F.silu(gate) * up
    raise ValueError(f"unknown activation {activation!r}: expected fast_gelu, gelu_tanh or swiglu")


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class RMSNorm(nn.Module):
    """Llama's RMSNorm: computed in fp32, scaled by the weight in the input's dtype
    (transformers' ``LlamaRMSNorm``, so bf16 and fp16 round where it does)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def apply_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer_norm(norm, x) if isinstance(norm, nn.LayerNorm) else norm.forward(x)


def linear_step(
    layer: nn.Module,
    x: torch.Tensor,
    norm: nn.Module | None = None,
    residual: torch.Tensor | None = None,
    activation: Activation | None = None,
) -> torch.Tensor:
    """``residual + activation(layer(norm(x)))``, each part if given.

    Inference layers (``codeglm.inference``: int8, oneDNN) may offer
    ``fused_forward(x, norm, residual, activation)``, which computes all of it in one
    kernel call where it takes the input (a one-token step; a LayerNorm or RMSNorm) and
    returns None where it does not; torch's operations do the rest. A layer is called through ``forward``:
    module hooks cost ~3 us a call, a few percent of a decode step, and nothing here
    uses them.
    """
    fused_forward = getattr(layer, "fused_forward", None)
    if fused_forward is not None:
        y = fused_forward(x, norm, residual, activation)
        if y is not None:
            return y
    y = layer.forward(x if norm is None else apply_norm(norm, x))
    if activation is not None:
        y = activate(y, activation)
    return y if residual is None else residual + y


def attend_with_decode_kernel(
    kernel: Callable[..., torch.Tensor] | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    cache: Any,
    layer_idx: int,
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """One-query attention through an inference kernel (``codeglm.inference``'s AVX2 one,
    which writes k and v into the cache itself), or None where it does not apply: q
    (B, T, nh*hs), k and v (B, T, nkv*hs), not yet rotated; ``rotary`` the (cos, sin) of
    ``rotary_cos_sin`` for these positions, which the kernel applies to q and k. It takes
    one fp32 CPU token without a padding mask against a cache that offers
    ``next_position``, outside autograd. Returns (B, 1, nh*hs)."""
    if (
        kernel is None
        or q.shape[1] != 1
        or mask is not None
        or not hasattr(cache, "next_position")
        or q.dtype != torch.float32
        or q.device.type != "cpu"
        or torch.is_grad_enabled()
    ):
        return None
    key_cache, value_cache, position = cache.next_position(layer_idx)
    if rotary is None:
        return kernel(q, k, v, key_cache, value_cache, position)
    cos, sin = (angles.reshape(-1, angles.shape[-1]) for angles in rotary)  # (B or 1, hs)
    return kernel(q, k, v, key_cache, value_cache, position, cos, sin)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of rotary angles at ``positions`` (B or 1, T): (B or 1, 1, T, hs) each,
    the halves repeated as transformers' Llama lays them out, computed in fp32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq  # (B, T, hs / 2)
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, T, hs)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) queries or keys by their positions' angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def causal_mask(past_length: int, num_new: int, device: torch.device) -> torch.Tensor:
    """(1, 1, T, S) True where new token t (at position past + t) may see key s."""
    query_pos = torch.arange(past_length, past_length + num_new, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(past_length + num_new, device=device).unsqueeze(0)  # (1, S)
    return (key_pos <= query_pos)[None, None]


__all__ = [
    "Activation",
    "RMSNorm",
    "activate",
    "apply_norm",
    "apply_rotary",
    "attend_with_decode_kernel",
    "causal_mask",
    "fast_gelu",
    "layer_norm",
    "linear_step",
    "rotary_cos_sin",
]
