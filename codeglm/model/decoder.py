"""A decoder-only transformer for the open code model families this project runs itself:
Llama-family (``llama``, ``qwen2``, ``mistral``: rotary positions, RMSNorm, SwiGLU,
grouped-query attention) and StarCoder-family (``gpt_bigcode``: learned positions,
LayerNorm, GELU-tanh, multi-query or multi-head attention). ``DecoderSpec`` says which
parts a model has; ``codeglm.model.families`` builds one from a transformers config and
maps a checkpoint's tensors onto it.

Written for inference (the ``hf:`` backend runs transformers' own classes for anything
else): each attention's query, key and value projections are one layer, and a SwiGLU
MLP's gate and up projections one layer, stacked when the weights load. Engines call
``prefill`` and ``decode``; both run ``forward``.

Shapes: B batch, T new tokens, S keys (cached + new), h hidden, nh query heads, nkv key
and value heads, hs head size, V vocabulary.

The KV cache is any object with ``update(k, v, layer_idx) -> (k_all, v_all)`` and
``get_seq_length()``; it holds (B, nkv, S, hs) keys and values per block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from codeglm.model.layers import (
    RMSNorm,
    apply_norm,
    apply_rotary,
    attend_with_decode_kernel,
    causal_mask,
    linear_step,
    rotary_cos_sin,
)


@dataclass(frozen=True)
class DecoderSpec:
    """The shape and parts of a decoder; what a family's config says, in one vocabulary."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int
    norm: Literal["rms", "layer"]
    norm_eps: float
    positions: Literal["rotary", "learned"]
    mlp: Literal["swiglu", "gelu_tanh"]
    qkv_bias: bool
    attention_output_bias: bool
    mlp_bias: bool
    tied_embeddings: bool
    rope_theta: float = 10000.0

    @property
    def qkv_size(self) -> int:
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim


def make_norm(spec: DecoderSpec) -> nn.Module:
    if spec.norm == "rms":
        return RMSNorm(spec.hidden_size, spec.norm_eps)
    return nn.LayerNorm(spec.hidden_size, eps=spec.norm_eps)


class DecoderAttention(nn.Module):
    def __init__(self, spec: DecoderSpec, layer_idx: int) -> None:
        super().__init__()
        self.spec = spec
        self.layer_idx = layer_idx
        self.qkv = nn.Linear(spec.hidden_size, spec.qkv_size, bias=spec.qkv_bias)  # [q (nh*hs), k (nkv*hs), v (nkv*hs)]
        self.output = nn.Linear(spec.num_heads * spec.head_dim, spec.hidden_size, bias=spec.attention_output_bias)
        # The one-query attention for decode steps against a cache that offers
        # ``next_position`` (``codeglm.inference``'s AVX2 kernel; None: SDPA).
        self.decode_kernel: Callable[..., torch.Tensor] | None = None

    def forward(
        self,
        x: torch.Tensor,
        norm: nn.Module,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Any,
        last_only: bool = False,
    ) -> torch.Tensor:
        """The heads' outputs side by side, (B, T, nh*hs), before ``output``; with
        ``last_only`` those of the last row alone, (B, 1, nh*hs), while every row's keys
        and values still reach the cache."""
        spec = self.spec
        B, T, _ = x.shape
        nh, nkv, hs = spec.num_heads, spec.num_kv_heads, spec.head_dim
        q, k, v = linear_step(self.qkv, x, norm=norm).split((nh * hs, nkv * hs, nkv * hs), dim=-1)
        if T == 1:  # the kernel rotates q and k itself and writes k and v into the cache
            y = attend_with_decode_kernel(self.decode_kernel, q, k, v, mask, cache, self.layer_idx, rotary)
            if y is not None:
                return y  # (B, 1, nh*hs)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nkv, S, hs)
        if last_only:  # the last row of an unpadded prompt sees every key
            q = q[:, :, -1:]  # (B, nh, 1, hs)
            mask, is_causal = None, False
        # Scaled by 1/sqrt(hs); each group of nh/nkv query heads reads one key/value head.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=nkv != nh)
        return y.transpose(1, 2).reshape(B, q.shape[2], nh * hs)  # (B, T or 1, nh*hs)


# From this many rows (a long prefill) a CPU SwiGLU computes its gate and up products apart.
SWIGLU_SPLIT_ROWS = 768


def _float_linear(layer: nn.Module) -> bool:
    """A plain product of a float weight (an int8 layer is not an ``nn.Linear``)."""
    return isinstance(layer, nn.Linear) and layer.weight.is_floating_point()


class DecoderMLP(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.swiglu = spec.mlp == "swiglu"
        width = 2 * spec.intermediate_size if self.swiglu else spec.intermediate_size
        self.up = nn.Linear(spec.hidden_size, width, bias=spec.mlp_bias)  # SwiGLU: [gate; up]
        self.down = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias)

    def forward(self, x: torch.Tensor, norm: nn.Module, residual: torch.Tensor) -> torch.Tensor:
        """``residual + MLP(norm(x))``."""
        if self.swiglu and x.device.type == "cpu" and x.shape[0] * x.shape[1] >= SWIGLU_SPLIT_ROWS and _float_linear(self.up):
            hidden = self._swiglu_in_halves(apply_norm(norm, x))
        else:
            hidden = linear_step(self.up, x, norm=norm, activation="swiglu" if self.swiglu else "gelu_tanh")
        return linear_step(self.down, hidden, residual=residual)

    def _swiglu_in_halves(self, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU of a long prefill with the gate and up products apart (views of the fused
        weight): MKL's sgemm took 14-16 % less time for 1,000-1,500 rows of Qwen2.5-Coder-0.5B's
        896 -> 2 x 4864 than the one product of twice the width, within 3 % elsewhere from
        700 to 3,000 rows (2 cores, AVX-512, 2026-12-05); decode steps keep the fused kernel."""
        width = self.down.in_features
        weight, bias = self.up.weight, self.up.bias
        # SiLU in place while the gate's product is still in cache, before the up product.
        gate = F.silu(F.linear(x, weight[:width], None if bias is None else bias[:width]), inplace=True)
        return gate.mul_(F.linear(x, weight[width:], None if bias is None else bias[width:]))


class DecoderBlock(nn.Module):
    """Pre-norm: a = x + Attn(norm1(x)); y = a + MLP(norm2(a))."""

    def __init__(self, spec: DecoderSpec, layer_idx: int) -> None:
        super().__init__()
        self.attention_norm = make_norm(spec)
        self.attention = DecoderAttention(spec, layer_idx)
        self.mlp_norm = make_norm(spec)
        self.mlp = DecoderMLP(spec)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Any,
        last_only: bool = False,
    ) -> torch.Tensor:
        """(B, T, h), or (B, 1, h) of the last row alone with ``last_only``."""
        heads = self.attention(x, self.attention_norm, rotary, mask, is_causal, cache, last_only)
        if last_only:
            x = x[:, -1:]
        a = linear_step(self.attention.output, heads, residual=x)
        return self.mlp(a, self.mlp_norm, a)


class Decoder(nn.Module):
    """Embeddings, blocks, the final norm and the output layer."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.position_embed = nn.Embedding(spec.context_length, spec.hidden_size) if spec.positions == "learned" else None
        self.blocks = nn.ModuleList([DecoderBlock(spec, i) for i in range(spec.num_layers)])
        self.norm = make_norm(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tied_embeddings:
            self.lm_head.weight = self.embed.weight

    # What an engine reads of a model.
    @property
    def context_length(self) -> int:
        return self.spec.context_length

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def cache_layout(self) -> tuple[int, int, int]:
        """(layers, heads, head size) of the KV cache."""
        return self.spec.num_layers, self.spec.num_kv_heads, self.spec.head_dim

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Any,
        final_norm: bool = True,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Hidden states (B, T, h) of ``input_ids`` (B, T) at ``positions`` (B or 1, T),
        after the final norm unless ``final_norm`` is False (``logits`` can take it).
        With ``last_only`` (unpadded rows) the last block keeps only the last row, (B, 1, h):
        a prefill reads nothing else, and that block's attention, output product and MLP
        over every row (about 1/num_layers of the work) went to rows no one reads."""
        x = F.embedding(input_ids, self.embed.weight)  # (B, T, h)
        rotary = None
        if self.position_embed is not None:
            x = x + F.embedding(positions, self.position_embed.weight)
        else:
            rotary = rotary_cos_sin(positions, self.spec.head_dim, self.spec.rope_theta, x.dtype)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, mask, is_causal, cache, last_only and i == last)
        return apply_norm(self.norm, x) if final_norm else x

    def logits(self, hidden: torch.Tensor, norm: bool = False) -> torch.Tensor:
        """Logits of ``hidden`` (.., h), first through the final norm if ``norm`` (one
        kernel call with the product where an inference layer takes both)."""
        return linear_step(self.lm_head, hidden, norm=self.norm if norm else None)

    def prefill(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits (B, V) of the last of ``input_ids`` (B, T), unpadded, after what ``cache`` holds."""
        return self.logits(self._after_cache(input_ids, cache, last_only=True)[:, -1], norm=True)

    def score(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits (B, T, V) of every one of ``input_ids`` (B, T), unpadded, after what
        ``cache`` holds (a speculative step checks its drafted tokens with them)."""
        return self.logits(self._after_cache(input_ids, cache), norm=True)

    def _after_cache(self, input_ids: torch.Tensor, cache: Any, last_only: bool = False) -> torch.Tensor:
        """Hidden states (B, T, h), before the final norm, of ``input_ids`` after the cache's
        ((B, 1, h), the last row's, with ``last_only``)."""
        past = cache.get_seq_length() if cache is not None else 0
        T = input_ids.shape[1]
        if past + T > self.spec.context_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds the model's context of {self.spec.context_length}")
        positions = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)  # (1, T)
        # Without cached positions SDPA's own causal mask is right; after them it would
        # align the new tokens with the first keys, so the mask is spelled out.
        mask = causal_mask(past, T, input_ids.device) if past and T > 1 else None
        return self.forward(input_ids, positions, mask, past == 0 and T > 1, cache, final_norm=False, last_only=last_only)

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: Any) -> torch.Tensor:
        """Logits (B, V) of one new token per row, (B, 1), at ``positions`` (B or 1, 1),
        after the cache's keys and values (all, or those ``mask`` (B, 1, 1, S) marks True)."""
        return self.logits(self.forward(tokens, positions, mask, False, cache, final_norm=False)[:, -1], norm=True)


__all__ = ["Decoder", "DecoderSpec"]
