"""CPU linear layers through oneDNN for the few rows of a decode step.

For ``x @ W^T + b`` with a handful of rows and a weight far larger than the caches,
torch's oneDNN linear kernel (``torch.ops.mkldnn._linear_pointwise``, the one
``torch.compile`` emits on CPUs) reads an fp32 weight markedly faster than the BLAS
behind ``F.linear`` (MKL). Measured on the benchmark machine (2 cores, AMD EPYC), one
row: 0.28 against 0.32 ms for the fused q/k/v weight, 0.31 against 0.40 ms for the
MLP's first layer, 3.8 against 5.4 ms for the logits; eight rows: 25-40% less. But a
call costs ~30 us more, which small weights (below ``ONEDNN_MIN_WEIGHT_BYTES``, or
held in the caches) do not earn back, and for longer inputs (a prefill) MKL is the
faster: so only large layers are swapped, and inputs of more than ``ONEDNN_MAX_ROWS``
rows keep ``F.linear``. The weight is used as stored, in either memory order: no
packed copy, no extra memory.

``use_onednn_linears`` swaps a model's large ``nn.Linear`` layers for ``OneDNNLinear``,
which keeps their parameters (names, values, tying) and computes with autograd as before.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codeglm.inference.cpu_kernels import FloatGemv, float_gemv, kernel_extras
from codeglm.model.layers import Activation

ONEDNN_MAX_ROWS = 16
# Inputs of at most this many rows go through the AVX2 kernel where it is built: it reads
# the weights once for all of them, and took 2-45% less time than oneDNN for 2-8 rows of
# each of Qwen2.5-Coder-0.5B's products (a speculative check is 6 rows; 2 cores, 2026-12-06).
KERNEL_MAX_ROWS = 8
# Weights of at most this many bytes stay with F.linear: measured break-even ~2 MiB
# (a 768 x 768 fp32 weight, 2.25 MiB: 123 us against 156 us; 4096 x 128, 2 MiB: even).
ONEDNN_MIN_WEIGHT_BYTES = 2 * 2**20


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build runs the oneDNN linear kernel (and gets it right)."""
    if not torch.backends.mkldnn.is_available():
        return False
    x, weight, bias = torch.randn(2, 8), torch.randn(3, 8), torch.randn(3)
    try:
        got = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    except (AttributeError, RuntimeError):  # no such operator in this build
        return False
    return bool(torch.allclose(got, F.linear(x, weight, bias), atol=1e-5))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through oneDNN for CPU fp32 inputs of at most ``ONEDNN_MAX_ROWS``
    rows when no gradient is being recorded."""
    if (
        x.numel() <= ONEDNN_MAX_ROWS * x.shape[-1]
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and onednn_available()
    ):
        return torch.ops.mkldnn._linear_pointwise.default(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose decode-step products run through oneDNN (``linear``), and
    products of up to ``KERNEL_MAX_ROWS`` rows with an (out, in) contiguous weight through
    this project's AVX2 kernel where it is built (``codeglm.inference.cpu_kernels``: ~30 us
    less a call)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gemv: FloatGemv | None = float_gemv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fused_forward(x)
        return linear(x, self.weight, self.bias) if y is None else y

    def fused_forward(
        self,
        x: torch.Tensor,
        norm: nn.Module | None = None,
        residual: torch.Tensor | None = None,
        activation: Activation | None = None,
    ) -> torch.Tensor | None:
        """``residual + activation(self(norm(x)))``, each part if given, in one call of the AVX2
        kernel for an fp32 CPU input of at most ``KERNEL_MAX_ROWS`` rows and an (out, in)
        contiguous weight, outside autograd; None where the kernel does not take it."""
        weight = self.weight
        if (
            self._gemv is None
            or x.shape[-1] != self.in_features
            or x.numel() > KERNEL_MAX_ROWS * self.in_features
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
            or x.device.type != "cpu"
            or not weight.is_contiguous()
            or torch.is_grad_enabled()
        ):
            return None
        extras = kernel_extras(norm, residual, activation)
        return None if extras is None else self._gemv(x, weight, self.bias, *extras)


def use_onednn_linears(model: nn.Module, min_weight_bytes: int = ONEDNN_MIN_WEIGHT_BYTES) -> int:
    """Replace the model's CPU fp32 ``nn.Linear`` layers whose weight has more than
    ``min_weight_bytes`` by ``OneDNNLinear`` layers holding the same parameter objects,
    in place; returns how many were replaced. Parameter names, values and weight tying
    are unchanged; other layers (small, int8) are left alone."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
        and child.weight.device.type == "cpu"
        and child.weight.dtype == torch.float32
        and child.weight.numel() * child.weight.element_size() > min_weight_bytes
    ]
    for parent, name, child in targets:
        replacement = OneDNNLinear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
        replacement.weight = child.weight
        replacement.bias = child.bias
        replacement.train(child.training)
        setattr(parent, name, replacement)
    return len(targets)


__all__ = ["KERNEL_MAX_ROWS", "ONEDNN_MAX_ROWS", "ONEDNN_MIN_WEIGHT_BYTES", "OneDNNLinear", "linear", "onednn_available", "use_onednn_linears"]
