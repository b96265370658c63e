"""The AVX2 int8 kernel for decode steps (``csrc/int8_gemv.cpp``), built on first use.

fbgemm's int8 GEMM costs ~20 us a call before any arithmetic, and a decode step of a
CodeGeeX model makes four calls a block; this kernel costs a few microseconds. It
rounds each activation row to 13-bit integers (relative error ~1e-4) where fbgemm uses
7 bits. It is compiled once per machine with torch's extension builder (a C++ compiler
and ninja; ~30 s) into torch's extension cache, ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``. Where it cannot be built or run (no AVX2, no compiler,
``CODEGLM_INT8_KERNEL=fbgemm``), ``int8_gemv()`` is None and the fbgemm kernel is used.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "int8_gemv.cpp"
Int8Gemv = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def cpu_has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512", "AVX512_BF16", "AMX")


@functools.cache
def int8_gemv() -> Int8Gemv | None:
    """``int8_linear(x, weight_int8, scales, bias)`` of the built kernel, or None."""
    if os.environ.get("CODEGLM_INT8_KERNEL", "") == "fbgemm" or not cpu_has_avx2():
        return None
    try:
        import ninja  # the pip package: its binary need not be on PATH

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass  # a system ninja may be on PATH
    from torch.utils.cpp_extension import load

    log.info("building the int8 decode kernel once (~30 s): %s", SOURCE)
    try:
        module = load(
            name="codeglm_int8_gemv",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # a missing compiler or ninja, a failed build: fbgemm stays
        log.warning("the AVX2 int8 kernel could not be built, using fbgemm: %s", error)
        return None
    return module.int8_linear


__all__ = ["cpu_has_avx2", "int8_gemv"]
