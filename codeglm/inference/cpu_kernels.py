"""AVX2 kernels for decode steps (``csrc/cpu_gemv.cpp``), built on first use: the one-row
products of batch-1 steps, with the layer norm before and GELU or the residual after
them, and one-query attention against the KV cache.

A decode step of a CodeGeeX model makes four products a block. oneDNN's fp32 kernel
costs ~30 us a call before any arithmetic and fbgemm's int8 one ~20; these cost a few
microseconds and read the weight rows as long streams per thread. ``float_linear`` sums
in fp32 like any BLAS (another order of the same sums); ``int8_linear`` rounds each
activation row to 13-bit integers (relative error ~1e-4) where fbgemm uses 7 bits.
They are compiled once per machine with torch's extension builder (a C++ compiler and
ninja; ~30 s) into torch's extension cache, ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``. Where they cannot be built or run (no AVX2, no compiler,
``CODEGLM_CPU_KERNELS=off``) ``int8_gemv()``, ``float_gemv()`` and ``decode_attention()``
are None and oneDNN, fbgemm and SDPA do the work.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "cpu_gemv.cpp"
# int8_linear(x, weight_int8, scales, bias, norm_weight=None, norm_bias=None, eps=1e-5,
# residual=None, gelu=False) and float_linear(x, weight, bias, <the same keywords>):
# y = x @ W^T + bias with, if given, a layer norm of x before and GELU, then the residual
# added, after; x (..., in) fp32 on the CPU.
Int8Gemv = Callable[..., torch.Tensor]
FloatGemv = Callable[..., torch.Tensor]
# decode_attention(q, k, v, key_cache, value_cache, position): q, k, v (B, 1, nh * hs);
# writes k and v at ``position`` of the (B, nh, capacity, hs) caches, returns the
# attention of q over positions [0, position], (B, 1, nh * hs).
DecodeAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def cpu_has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512", "AVX512_BF16", "AMX")


def int8_gemv() -> Int8Gemv | None:
    """``int8_linear(x, weight_int8, scales, bias)`` of the built kernels, or None."""
    module = build()
    return None if module is None else module.int8_linear


def float_gemv() -> FloatGemv | None:
    """``float_linear(x, weight, bias)`` (weight (out, in) contiguous), or None."""
    module = build()
    return None if module is None else module.float_linear


def decode_attention() -> DecodeAttention | None:
    """``decode_attention`` of the built kernels, or None."""
    module = build()
    return None if module is None else module.decode_attention


def kernel_extras(
    norm: torch.nn.Module | None, residual: torch.Tensor | None, gelu: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, float, torch.Tensor | None, bool] | None:
    """The products' ``norm_weight, norm_bias, eps, residual, gelu`` arguments for a layer
    norm before (or None) and a residual after (or None), or None where the kernels
    cannot take them (a norm without weight or bias, a residual not contiguous)."""
    if residual is not None and not residual.is_contiguous():
        return None
    if norm is None:
        return None, None, 1e-5, residual, gelu
    if not isinstance(norm, torch.nn.LayerNorm) or norm.weight is None or norm.bias is None or len(norm.normalized_shape) != 1:
        return None  # the kernels' norm is a LayerNorm with weight and bias (not Llama's RMSNorm)
    return norm.weight, norm.bias, norm.eps, residual, gelu


@functools.cache
def build() -> Any | None:
    """The compiled extension module, or None where it cannot be had."""
    if os.environ.get("CODEGLM_CPU_KERNELS", "") == "off" or not cpu_has_avx2():
        return None
    try:
        import ninja  # the pip package: its binary need not be on PATH

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass  # a system ninja may be on PATH
    from torch.utils.cpp_extension import load  # deferred: only to build the kernels

    log.info("building the decode kernels once (~30 s): %s", SOURCE)
    try:
        return load(
            name="codeglm_cpu_gemv",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # a missing compiler or ninja, a failed build: oneDNN, fbgemm and SDPA stay
        log.warning("the AVX2 decode kernels could not be built, using oneDNN, fbgemm and SDPA: %s", error)
        return None


__all__ = ["DecodeAttention", "FloatGemv", "Int8Gemv", "build", "cpu_has_avx2", "decode_attention", "float_gemv", "int8_gemv", "kernel_extras"]
