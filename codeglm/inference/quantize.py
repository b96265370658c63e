"""Int8 weight quantization of the linear layers, one scale per output channel.

Each weight row ``w`` is stored as ``round(w / s)`` in int8 with ``s = max|w| / 127``:
a quarter of fp32's bytes, which is what a memory-bound decode step moves.

Two kernels compute ``x @ W^T + b`` from that:

- ``fbgemm`` (CPU): torch's packed int8 GEMM (``quantized::linear_dynamic``). It also
  quantizes the activations, per call, to 7-bit unsigned integers with one scale per
  tensor; the weights are exactly the per-channel int8 ones above. Used for inputs of
  2 to ``FBGEMM_MAX_ROWS`` rows (decode steps of several samples); larger inputs
  (prefill) use ``dequant``. A single row (a batch-1 decode step) goes to this
  project's AVX2 kernel where it could be built (``codeglm.inference.cpu_kernels``: ~20 us less
  a call than fbgemm, activations rounded to 13 bits instead of 7).
- ``dequant`` (any device, the GPU path): the int8 weight is converted to the
  activation dtype inside the matmul and the per-channel scale applied to the output -
  weight-only, activations untouched.

``measure_int8_effect`` reports what quantization costs in logits and greedy choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codeglm.inference.cpu_kernels import Int8Gemv, int8_gemv, kernel_extras
from codeglm.model.codegeex import output_cache
from codeglm.model.layers import Activation

KERNELS = ("auto", "fbgemm", "dequant")
# fbgemm quantizes all rows of an input with one activation scale, so a long prompt's
# outlier tokens would cost every token precision. Inputs of more rows than this (a
# prefill; compute-bound anyway) take the weight-only path; decode steps take fbgemm.
FBGEMM_MAX_ROWS = 16


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (int8 weight (out, in), fp32 scales (out,))."""
    w = weight.detach()
    scales = (w.abs().amax(dim=1).float() / 127.0).clamp(min=1e-12)
    # Row chunks of about 16 MiB of fp32: a whole matrix's temporaries (a 150k x 896
    # output projection is 545 MB a copy) would dwarf the int8 result while loading.
    # Rows of q are in order whatever the weight's layout (the kernels read rows).
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    step = max(1, (1 << 22) // max(1, w.shape[1]))
    for start in range(0, w.shape[0], step):
        rows = w[start : start + step].float()
        q[start : start + step] = torch.round(rows / scales[start : start + step, None]).clamp(-127, 127)
    return q, scales


def fbgemm_available() -> bool:
    return any(e in torch.backends.quantized.supported_engines for e in ("fbgemm", "x86"))


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 rows with one scale per output channel."""

    def __init__(
        self, weight_int8: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, kernel: str
    ) -> None:
        super().__init__()
        if kernel not in ("fbgemm", "dequant"):
            raise ValueError(f"unknown int8 kernel {kernel!r}: choose fbgemm or dequant")
        if kernel == "fbgemm" and (weight_int8.device.type != "cpu" or not fbgemm_available()):
            raise ValueError("the fbgemm int8 kernel runs on the CPU only (x86): use kernel='dequant'")
        self.in_features = weight_int8.shape[1]
        self.out_features = weight_int8.shape[0]
        self.kernel = kernel
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self._packed: object | None = None
        self._gemv: Int8Gemv | None = None
        if kernel == "fbgemm":
            if scales.dtype == torch.float32 and (bias is None or bias.dtype == torch.float32):
                self._gemv = int8_gemv()
            with warnings.catch_warnings():
                # torch marks quantized tensor types deprecated; fbgemm's packing still takes one.
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch._make_per_channel_quantized_tensor(
                    weight_int8, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0
                )
            fp_bias = None if bias is None else bias.float()
            self._packed = torch.ops.quantized.linear_prepack(qweight, fp_bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str) -> Int8Linear:
        q, scales = quantize_rows(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        if kernel == "dequant":
            scales = scales.to(linear.weight.dtype)
        return cls(q, scales, bias, kernel)

    def fused_forward(
        self,
        x: torch.Tensor,
        norm: nn.Module | None = None,
        residual: torch.Tensor | None = None,
        activation: Activation | None = None,
    ) -> torch.Tensor | None:
        """``residual + activation(self(norm(x)))``, each part if given, in one call of the AVX2
        kernel for a one-row fp32 input; None where the kernel does not take it."""
        if self._gemv is None or x.numel() != self.in_features or x.dtype != torch.float32 or x.requires_grad:
            return None
        extras = kernel_extras(norm, residual, activation)
        return None if extras is None else self._gemv(x, self.weight_int8, self.scales, self.bias, *extras)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fused_forward(x)
        if y is not None:
            return y
        if self._packed is not None and x.numel() <= FBGEMM_MAX_ROWS * self.in_features:
            # reduce_range=True: 7-bit activations, so fbgemm's int16 pair sums cannot saturate.
            # It takes any leading dimensions: an fp32 input goes in as it is. (The overload
            # called directly: the packet's dispatch costs a few microseconds a call.)
            if x.dtype == torch.float32:
                return torch.ops.quantized.linear_dynamic.default(x, self._packed, True)
            return torch.ops.quantized.linear_dynamic.default(x.float(), self._packed, True).to(x.dtype)
        y = F.linear(x, self.weight_int8.to(x.dtype)) * self.scales.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def choose_kernel(kernel: str, device: torch.device) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"unknown int8 kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
    if kernel != "auto":
        return kernel
    return "fbgemm" if device.type == "cpu" and fbgemm_available() else "dequant"


def quantize_int8(model: nn.Module, kernel: str = "auto", include_lm_head: bool = True) -> nn.Module:
    """Replace the model's linear layers by ``Int8Linear`` in place; returns the model.

    The token embedding stays in floating point; the output projection tied to it gets
    its own int8 copy (``include_lm_head``), since it is read every decode step.
    """
    device = next(model.parameters()).device
    chosen = choose_kernel(kernel, device)
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) and (include_lm_head or name != "lm_head")
    ]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear.from_linear(child, chosen))
    return model


def linear_bytes(model: nn.Module) -> int:
    """Bytes of the weights a decode step reads in linear layers (fp or int8)."""
    total = 0
    for module in model.modules():
        if isinstance(module, Int8Linear):
            total += module.weight_int8.numel() + module.scales.numel() * module.scales.element_size()
        elif isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        else:
            continue
        bias = module.bias
        if bias is not None:
            total += bias.numel() * bias.element_size()
    return total


@dataclass(frozen=True)
class QuantizationEffect:
    """Int8 against floating point, both fed the same tokens as a generation would be."""

    positions: int  # next-token predictions compared
    max_logit_diff: float  # max |logit_int8 - logit_fp| over all positions and tokens
    mean_logit_diff: float
    max_abs_logit: float  # the scale the differences are relative to
    greedy_agreement: float  # share of positions where both pick the same token


@torch.inference_mode()
def generation_logits(model: nn.Module, prompt: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
    """Next-token logits as generation computes them: the prompt in one pass, then the
    continuation one token per step through the KV cache. (1 + len(continuation), V)"""
    device = next(model.parameters()).device
    out = model(torch.tensor([list(prompt)], device=device), use_cache=True, logits_to_keep=1)
    logits = [out.logits[0, -1]]
    cache = output_cache(out)
    for token in continuation:
        out = model(torch.tensor([[token]], device=device), cache=cache, use_cache=True)
        cache = output_cache(out)
        logits.append(out.logits[0, -1])
    return torch.stack(logits).float()


@torch.inference_mode()
def greedy_continuation(model: nn.Module, prompt: Sequence[int], tokens: int) -> list[int]:
    device = next(model.parameters()).device
    out = model.generate(torch.tensor([list(prompt)], device=device), max_new_tokens=tokens,
                         min_new_tokens=tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def measure_int8_effect(
    reference: nn.Module, quantized: nn.Module, prompts: Sequence[Sequence[int]], new_tokens: int = 16
) -> QuantizationEffect:
    """Compare the models on each prompt and the reference's greedy continuation of it.

    Both models see the same tokens (teacher forcing), the prompt as a prefill and the
    ``new_tokens`` continuation as decode steps, so each kernel path is measured where
    generation uses it.
    """
    positions = agree = 0
    max_diff = sum_diff = max_abs = 0.0
    for prompt in prompts:
        continuation = greedy_continuation(reference, prompt, new_tokens)
        ref = generation_logits(reference, prompt, continuation[:-1])
        got = generation_logits(quantized, prompt, continuation[:-1])
        diff = (got - ref).abs()
        positions += ref.shape[0]
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.mean()) * ref.shape[0]
        max_abs = max(max_abs, float(ref.abs().max()))
    if positions == 0:
        raise ValueError("no prompts to compare: give at least one non-empty prompt")
    return QuantizationEffect(positions, max_diff, sum_diff / positions, max_abs, agree / positions)


__all__ = [
    "Int8Linear",
    "QuantizationEffect",
    "choose_kernel",
    "generation_logits",
    "greedy_continuation",
    "linear_bytes",
    "measure_int8_effect",
    "quantize_int8",
    "quantize_rows",
]
