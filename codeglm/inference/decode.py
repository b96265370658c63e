"""The decode fast path of a CodeGeeX model, for the engine.

One-token steps (``decode_step``) compute the operations of the model's ``forward``
(``codeglm.model.codegeex``) in the same order, but call each layer directly, fuse the
attention projections of one input into one product (``fuse_attention_projections``),
use the AVX2 one-query attention that writes the KV cache (``use_decode_attention``), and
take each layer norm, GELU and residual addition into the neighbouring product's kernel
(``step_linear``). The model knows none of this: it only uses a fusion it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache

from codeglm.inference.cpu_kernels import decode_attention
from codeglm.inference.kv_cache import StaticKVCache
from codeglm.model.codegeex import Attention, Block, CodeGeeXForCausalLM, TopQueryLayer, fast_gelu


@dataclass(frozen=True)
class FusedProjections:
    """Attention projections of the same input computed as one stacked layer.

    At decode time each projection is a matrix-vector product bound by memory reads
    and per-call overhead, so one (3h x h) product beats three (h x h) ones. The parts
    keep their parameters (names, values, state dict) as views into the stacked layer's
    (``stack_linears``; int8 layers: ``Int8Linear.stacked``), so an in-place change of a
    parameter is seen by both paths. A part replaced (say quantized) or its tensors
    moved (a dtype or device move) make the fusion stale, and the separate projections
    take over again: ``Attention`` drops the fusion when a projection is assigned or its
    tensors move (``Attention.__setattr__``, ``Attention._apply``), so a forward pass
    checks nothing. Reassigning a parameter's ``.data`` by hand needs
    ``fuse_projections`` again.
    """

    names: tuple[str, ...]  # ("query", "key", "value"), or ("key", "value") in the top query layer
    project: nn.Module  # (B, T, h) -> (B, T, len(names) * h)
    parts: tuple[nn.Module, ...]  # the layers stacked, in ``names`` order
    addresses: tuple[int, ...]  # their tensors' data_ptr when stacked

    @property
    def with_query(self) -> bool:
        return self.names[0] == "query"

    def in_place(self, attention: nn.Module) -> bool:
        """Whether ``attention``'s projections are still the layers this fusion stacked,
        holding the tensors they held then."""
        return all(getattr(attention, name) is part for name, part in zip(self.names, self.parts, strict=True)) and (
            tensor_addresses(self.parts) == self.addresses
        )


def tensor_addresses(layers: tuple[nn.Module, ...]) -> tuple[int, ...]:
    return tuple(
        t.data_ptr() for layer in layers for t in (*layer._parameters.values(), *layer._buffers.values()) if t is not None
    )


def stack_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One layer of the linears' class computing their outputs side by side; each
    linear's parameters become views into its. The weights' memory order is kept:
    out-major stays out-major, (in, out) storage (``store_linear_weights_transposed``)
    stays (in, out)."""
    weights = [linear.weight for linear in linears]
    transposed = all(not w.is_contiguous() and w.t().is_contiguous() for w in weights)
    with torch.no_grad():
        if transposed:
            weight = torch.cat([w.t() for w in weights], dim=1).t()  # (parts * out, in), (in, out) storage
        else:
            weight = torch.cat([w.contiguous() for w in weights], dim=0)
        bias = torch.cat([linear.bias for linear in linears])  # type: ignore[misc]
        start = 0
        for linear in linears:
            stop = start + linear.out_features
            linear.weight.data = weight[start:stop]
            linear.bias.data = bias[start:stop]  # type: ignore[union-attr]
            start = stop
    stacked = type(linears[0])(weight.shape[1], weight.shape[0], device="meta")  # OneDNNLinear stays OneDNNLinear
    stacked.weight = nn.Parameter(weight, requires_grad=False)
    stacked.bias = nn.Parameter(bias, requires_grad=False)
    return stacked


def stack_layers(layers: list[nn.Module]) -> nn.Module | None:
    """One layer computing the layers' outputs side by side, or None if they cannot be
    stacked: float linears with biases, or layers whose class offers ``stacked`` (int8)."""
    kind = type(layers[0])
    if any(type(layer) is not kind for layer in layers):
        return None
    if issubclass(kind, nn.Linear):
        return stack_linears(layers) if all(layer.bias is not None for layer in layers) else None  # type: ignore[arg-type]
    stacked = getattr(kind, "stacked", None)
    return stacked(layers) if stacked is not None else None


def fuse_projections(attention: Attention, with_query: bool) -> bool:
    """Fuse key and value (and the query, ``with_query``, when it is computed from the
    same input) for inference; False if the layers cannot be stacked (see
    ``stack_layers``). Values are unchanged; see ``FusedProjections``."""
    names = ("query", "key", "value") if with_query else ("key", "value")
    if attention.fused is not None and attention.fused.names == names and attention.fused.in_place(attention):
        return True
    parts = tuple(getattr(attention, name) for name in names)
    project = stack_layers(list(parts))
    if project is None:
        return False
    attention.fused = FusedProjections(names, project, parts, tensor_addresses(parts))
    return True



def project_step(
attention: Attention, x: torch.Tensor, norm: nn.LayerNorm, query_input: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``project(norm(x), query_input)`` for ``decode_step``'s one token, with the
    norm taken into the product's kernel where it can be: (B, 1, h) each."""
    fused = attention._usable_fusion(query_input)
    if fused is None:
        normed = layer_norm(norm, x)
        q = step_linear(attention.query, normed if query_input is None else query_input)
        return q, step_linear(attention.key, normed), step_linear(attention.value, normed)
    projected = step_linear(fused.project, x, norm=norm)  # (B, 1, parts * h)
    if query_input is None:
        q, k, v = projected.chunk(3, dim=-1)
        return q, k, v
    k, v = projected.chunk(2, dim=-1)
    return step_linear(attention.query, query_input), k, v



def fuse_attention_projections(model: nn.Module) -> int:
    """Fuse each block's query, key and value projections (the top query layer's key and
    value: its query comes from the position table) for inference, in place; returns how
    many attention layers were fused. Run it after any re-layout of the weights
    (``store_linear_weights_transposed``) or swap of the layers (``use_onednn_linears``,
    ``quantize_int8``) so the fused layer keeps that memory order and kernel.

    Parameter names, values, the state dict and ``save_pretrained`` work as before (the
    parameters become views into the fused weights). Training is unaffected: under
    autograd the separate projections run.
    """
    fused = 0
    for module in model.modules():
        if isinstance(module, Block):
            fused += fuse_projections(module.attention, with_query=not isinstance(module, TopQueryLayer))
    return fused


def decode_step(
    model: CodeGeeXForCausalLM,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    cache: Cache,
) -> torch.Tensor:
    """Logits (B, V) of one new token per row, (B, 1), at ``positions`` (B or 1, 1), after
    the cache's keys and values (all of them, or those ``mask`` (B, 1, 1, S) marks True).

    The model's forward pass for a decode step, for inference: the same operations in
    the same order, but each layer's ``forward`` called directly. Going through
    ``nn.Module.__call__`` (hooks, which this skips) and the model's argument handling
    costs ~0.5 ms a step, 2-5% of a decode step of a 100M-parameter model on a CPU.
    """
    transformer = model.transformer
    x = F.embedding(tokens, transformer.wte.weight) + F.embedding(positions, transformer.wpe.weight)  # (B, 1, h)
    for block in transformer.layers:
        x = block_step(block, x, mask, cache)
    x = layer_norm(transformer.final_layernorm, x)
    top_query = F.embedding(positions, transformer.top_query_embeddings.weight).to(x.dtype)  # (B or 1, 1, h)
    x = block_step(transformer.top_query_layer, x, mask, cache, top_query.expand(x.shape[0], -1, -1))
    return model.lm_head.forward(x[:, -1])


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def block_step(
    block: Block, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache, query_input: torch.Tensor | None = None
) -> torch.Tensor:
    """``Block.forward`` for ``decode_step``: with the attention's decode kernel where it
    is set and takes the step (no mask, the engine's fp32 CPU cache), and each layer norm,
    GELU and residual addition inside the neighbouring product's kernel (``step_linear``)."""
    attention, mlp = block.attention, block.mlp
    kernel = attention.decode_kernel
    if (
        kernel is not None
        and mask is None
        and isinstance(cache, StaticKVCache)
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and cache.keys[attention.layer_idx].dtype == torch.float32
    ):
        q, k, v = project_step(attention, x, block.input_layernorm, query_input)  # (B, 1, h) each
        key_cache, value_cache, position = cache.next_position(attention.layer_idx)
        heads = kernel(q, k, v, key_cache, value_cache, position)  # (B, 1, h)
    else:
        q, k, v = attention.project(layer_norm(block.input_layernorm, x), query_input)
        heads = attention.attend(q, k, v, mask, False, cache)
    a = step_linear(attention.dense, heads, residual=x)
    hidden = step_linear(mlp.dense_h_to_4h, a, norm=block.post_attention_layernorm, gelu=True)
    return step_linear(mlp.dense_4h_to_h, hidden, residual=a)


def step_linear(
    layer: nn.Module,
    x: torch.Tensor,
    norm: nn.LayerNorm | None = None,
    residual: torch.Tensor | None = None,
    gelu: bool = False,
) -> torch.Tensor:
    """``residual + gelu(layer(norm(x)))``, each part if given, for ``decode_step``: in
    one kernel call where the layer offers one for this input (``fused_forward`` of the
    int8 and oneDNN layers: a torch call saved per part, ~3-25 us each), else with
    torch's operations."""
    fused_forward = getattr(layer, "fused_forward", None)
    if fused_forward is not None:
        y = fused_forward(x, norm, residual, gelu)
        if y is not None:
            return y
    y = layer.forward(x if norm is None else layer_norm(norm, x))
    if gelu:
        y = fast_gelu(y)
    return y if residual is None else residual + y


def use_decode_attention(model: nn.Module) -> int:
    """Give each attention layer the AVX2 decode attention (``codeglm.inference.cpu_kernels``) where
    it is built; returns how many layers got it. ``decode_step`` uses it for steps without
    a padding mask, SDPA otherwise."""
    kernel = decode_attention()
    layers = [module for module in model.modules() if isinstance(module, Attention)]
    for layer in layers:
        layer.decode_kernel = kernel
    return 0 if kernel is None else len(layers)


__all__ = [
    "FusedProjections",
    "decode_step",
    "fuse_attention_projections",
    "fuse_projections",
    "step_linear",
    "use_decode_attention",
]
