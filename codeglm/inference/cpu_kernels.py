"""AVX2 kernels for decode steps (``csrc/cpu_gemv.cpp``), built on first use: the one-row
products of batch-1 steps, with the layer norm or RMSNorm before and the activation
(GELU, GELU-tanh, SwiGLU) and the residual after them, and one-query attention against
the KV cache (rotary positions and grouped-query heads included).

A decode step of a CodeGeeX model makes four products a block. oneDNN's fp32 kernel
costs ~30 us a call before any arithmetic and fbgemm's int8 one ~20; these cost a few
microseconds and read the weight rows as long streams per thread. ``float_linear`` sums
in fp32 like any BLAS (another order of the same sums); ``int8_linear`` rounds each
activation row to 13-bit integers (relative error ~1e-4) where fbgemm uses 7 bits.
They are compiled once per machine with torch's extension builder (a C++ compiler and
ninja; ~30 s) into a directory of torch's extension cache (``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``) named by what the build depends on: the source, the flags,
torch's version and the environment's prefix. Two checkouts or virtualenvs on one machine
would otherwise rebuild the same directory in turn (ninja sees other include paths) and
wait on each other's build lock; a lock left by a build that was killed is cleared after
``STALE_LOCK_SECONDS``, where torch would wait for it forever. Where they cannot be built or run (no AVX2, no compiler,
``CODEGLM_CPU_KERNELS=off``) ``int8_gemv()``, ``float_gemv()`` and ``decode_attention()``
are None and oneDNN, fbgemm and SDPA do the work.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from codeglm.model.layers import Activation, RMSNorm

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "cpu_gemv.cpp"
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
# A build takes ~30 s (minutes on a loaded machine); a lock older than this was left by a
# build that did not finish.
STALE_LOCK_SECONDS = 600
# int8_linear(x, weight_int8, scales, bias, norm_weight=None, norm_bias=None, eps=1e-5,
# residual=None, activation=0) and float_linear(x, weight, bias, <the same keywords>):
# y = x @ W^T + bias with, if given, a norm of x before (a layer norm with norm_bias, an
# RMSNorm without) and the activation (``ACTIVATION_CODES``), then the residual added,
# after; x (..., in) fp32 on the CPU.
Int8Gemv = Callable[..., torch.Tensor]
FloatGemv = Callable[..., torch.Tensor]
# decode_attention(q, k, v, key_cache, value_cache, position, cos=None, sin=None):
# q (B, 1, nh * hs), k and v (B, 1, nkv * hs); rotates q and k by cos and sin (1 or B, hs)
# if given, writes k and v at ``position`` of the (B, nkv, capacity, hs) caches, returns
# the attention of q over positions [0, position], (B, 1, nh * hs).
DecodeAttention = Callable[..., torch.Tensor]
# The kernels' codes for the activations of ``codeglm.model.layers`` (csrc: enum Activation).
ACTIVATION_CODES: dict[Activation | None, int] = {None: 0, "fast_gelu": 1, "gelu_tanh": 2, "swiglu": 3}


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
    norm: torch.nn.Module | None, residual: torch.Tensor | None, activation: Activation | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, float, torch.Tensor | None, int] | None:
    """The products' ``norm_weight, norm_bias, eps, residual, activation`` arguments for a
    norm before (or None) and a residual after (or None), or None where the kernels
    cannot take them (a layer norm without weight or bias, a norm's weight not fp32, a
    residual not contiguous)."""
    if residual is not None and not residual.is_contiguous():
        return None
    code = ACTIVATION_CODES[activation]
    if norm is None:
        return None, None, 1e-5, residual, code
    if isinstance(norm, RMSNorm):
        if norm.weight.dtype != torch.float32:
            return None
        return norm.weight, None, norm.eps, residual, code
    if not isinstance(norm, torch.nn.LayerNorm) or norm.weight is None or norm.bias is None or len(norm.normalized_shape) != 1:
        return None  # the kernels' norms: a LayerNorm with weight and bias, or an RMSNorm
    return norm.weight, norm.bias, norm.eps, residual, code


def build_directory() -> Path:
    """The build's own directory in torch's extension cache, named by the source, the
    flags, torch's version and this environment (``sys.prefix``)."""
    from torch.utils.cpp_extension import get_default_build_root  # deferred: only to build

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS + LDFLAGS).encode(), torch.__version__.encode(), os.path.realpath(sys.prefix).encode()):
        key.update(part)
        key.update(b"\0")
    cache_root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return cache_root / f"codeglm_cpu_gemv-{key.hexdigest()[:16]}"


def clear_stale_lock(directory: Path, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock if it is older than ``max_age`` seconds (its build was killed);
    returns whether one was removed."""
    lock = directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age:
        return False
    log.warning("removing a build lock left %.0f s ago by a build that did not finish: %s", age, lock)
    lock.unlink(missing_ok=True)
    return True


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

    directory = build_directory()
    log.info("building the decode kernels once (~30 s) in %s: %s", directory, SOURCE)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        clear_stale_lock(directory)
        return load(
            name="codeglm_cpu_gemv",
            sources=[str(SOURCE)],
            extra_cflags=CFLAGS,
            extra_ldflags=LDFLAGS,
            build_directory=str(directory),
            verbose=False,
        )
    except Exception as error:  # a missing compiler or ninja, a failed build: oneDNN, fbgemm and SDPA stay
        log.warning("the AVX2 decode kernels could not be built, using oneDNN, fbgemm and SDPA: %s", error)
        return None


__all__ = ["ACTIVATION_CODES", "DecodeAttention", "FloatGemv", "Int8Gemv", "build", "cpu_has_avx2", "decode_attention", "float_gemv", "int8_gemv", "kernel_extras"]
