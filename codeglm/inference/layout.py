"""The decode layout: a loaded model's weights re-laid out and its layers swapped for the
kernels that one-token steps run fastest (transposed weights, oneDNN linears, fused
projections, the AVX2 attention). Values are unchanged."""

from __future__ import annotations

import torch
from torch import nn

from codeglm.inference.cpu_kernels import float_gemv
from codeglm.inference.decode import use_decode_attention
from codeglm.inference.onednn import use_onednn_linears
from codeglm.model.codegeex import CodeGeeXForCausalLM


def store_linear_weights_transposed(model: torch.nn.Module) -> int:
    """Keep each CPU linear weight (out, in) with at least as many outputs as inputs as the
    transpose of an (in, out) contiguous tensor; returns how many weights were moved.

    Values, shapes, parameter names and weight tying stay as they were; only the memory
    order changes. For ``x @ W^T`` with few rows of ``x`` (a decode step) the BLAS (MKL)
    reads ``W`` fastest in long contiguous rows: (in, out) rows - the layout GPT-2's
    ``Conv1D`` uses - for the widening projections and the logits (measured 23-25 GB/s
    against 15-16 GB/s on the benchmark machine), but (out, in) rows for the narrowing
    MLP output (22.6 against 16.8 GB/s), which therefore stays as it is. (The oneDNN
    kernel that decode steps use where available, ``codeglm.inference.onednn``, cares less: the
    whole model decodes within 3% either way.)
    transformers' ``save_pretrained`` (5.23) cannot save such views (its tied-weight
    check calls ``view``): save a model before this, or from a fresh load.
    """
    moved = 0
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if id(weight) in seen or weight.device.type != "cpu" or not weight.is_contiguous():
            continue  # shared (tied) weights are moved once; already moved ones stay
        seen.add(id(weight))
        if module.out_features < module.in_features:
            continue
        with torch.no_grad():
            weight.data = weight.data.t().contiguous().t()
        moved += 1
    return moved


def use_decode_layout(model: nn.Module) -> None:
    """Prepare the model's weights for decoding, in place: widening CPU linear weights
    stored (in, out) (``store_linear_weights_transposed``; none where the AVX2 kernels of
    ``codeglm.inference.cpu_kernels`` are built), large CPU fp32 linears computed
    by oneDNN for few rows (``codeglm.inference.onednn``), and the AVX2 one-query
    attention for decode steps (``use_decode_attention``). Each attention's projections
    are fused first if they still can be (float layers: ``load_model`` fuses them before
    quantizing). Values and the state dict stay as they were."""
    if isinstance(model, CodeGeeXForCausalLM):
        model.transformer.fuse_attention_projections()
    if float_gemv() is None:
        store_linear_weights_transposed(model)
    # else the AVX2 kernel takes every one-row product of an (out, in) weight, the logits'
    # included: as fast as oneDNN on the (in, out) layout for Qwen2.5-Coder's 151936 x 896,
    # 1.3x faster for StarCoder's 49152 x 2048 and 1.15x for CodeGeeX's 52224 x 768
    # (one row, best of 25 side by side on an idle machine, 2026-12-05),
    # and the embedding that shares the weight gathers contiguous rows (a prefill of
    # 600 tokens spent 0.2 s gathering strided ones).
    use_onednn_linears(model)
    use_decode_attention(model)


__all__ = ["store_linear_weights_transposed", "use_decode_layout"]
