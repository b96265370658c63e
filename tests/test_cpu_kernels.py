"""The AVX2 decode kernels (``codeglm/csrc/cpu_gemv.cpp``): built where they can be, the
fp32 products of ``F.linear`` and the int8-weight products to within 13-bit activation
rounding, and used for single rows only."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _torch_fixtures import one_thread  # noqa: F401 (autouse)

from codeglm.cpu_kernels import build, cpu_has_avx2, float_gemv, int8_gemv
from codeglm.onednn import OneDNNLinear, linear
from codeglm.quantize import Int8Linear, fbgemm_available

# Rounding activations to 13 bits: |error| <= 2^-13 of a row's largest activation per
# term; measured ~2e-4 of the largest output.
RELATIVE_ERROR = 1e-3

pytestmark = pytest.mark.skipif(not fbgemm_available(), reason="int8 CPU kernels run on x86 only")


def build_blocker() -> str | None:
    """Why the kernels cannot be built on this machine, or None if they must be."""
    if os.environ.get("CODEGLM_CPU_KERNELS", "") == "off":
        return "turned off (CODEGLM_CPU_KERNELS=off)"
    if not cpu_has_avx2():
        return "this CPU has no AVX2"
    if not shutil.which("g++"):
        return "no C++ compiler (g++)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers"
    return None


@pytest.fixture(scope="module")
def kernels() -> Any:
    """The built extension. Only a machine that cannot build it skips (oneDNN and fbgemm
    then serve every product, which the engine, oneDNN and quantize tests cover); where
    it can be built, a failed build fails here."""
    blocker = build_blocker()
    if blocker is not None:
        pytest.skip(f"the AVX2 kernels cannot be built here: {blocker}")
    module = build()
    assert module is not None, "the AVX2 kernels could be built here, but the build failed (see the log)"
    return module


def test_the_kernels_are_built_where_they_can_be(kernels: Any) -> None:
    assert int8_gemv() is kernels.int8_linear and float_gemv() is kernels.float_linear


@pytest.mark.parametrize(("out_features", "in_features"), [(5, 7), (33, 80), (384, 128), (96, 4100)])
def test_float_products_equal_f_linear(kernels: Any, out_features: int, in_features: int) -> None:
    gemv = kernels.float_linear
    torch.manual_seed(in_features)
    weight, bias = torch.randn(out_features, in_features), torch.randn(out_features)
    for x in (torch.randn(1, in_features), torch.randn(1, 1, in_features), torch.randn(3, in_features)):
        expected = F.linear(x, weight, bias)
        got = gemv(x, weight, bias)
        assert got.shape == expected.shape
        scale = float(expected.abs().max())  # fp32 sums in another order: rounding apart
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
        assert torch.allclose(gemv(x, weight, None), F.linear(x, weight), rtol=1e-5, atol=1e-5 * scale)


def test_onednn_linear_takes_the_kernel_for_one_row_of_an_out_in_weight(kernels: Any) -> None:
    gemv = kernels.float_linear
    torch.manual_seed(0)
    layer = OneDNNLinear(64, 48)
    one, two = torch.randn(1, 1, 64), torch.randn(1, 2, 64)
    with torch.inference_mode():
        assert torch.equal(layer(one), gemv(one, layer.weight, layer.bias))
        assert torch.equal(layer(two), linear(two, layer.weight, layer.bias))
        transposed = OneDNNLinear(64, 48)
        transposed.weight.data = layer.weight.data.t().contiguous().t()  # (in, out) storage: oneDNN's
        transposed.bias.data = layer.bias.data
        assert torch.equal(transposed(one), linear(one, transposed.weight, transposed.bias))


@pytest.mark.parametrize(("out_features", "in_features"), [(5, 7), (33, 80), (384, 128), (96, 4100)])
@pytest.mark.parametrize("shape", ["row", "(1, 1, in)", "three rows"])
def test_products_equal_the_int8_weights_products(kernels: Any, out_features: int, in_features: int, shape: str) -> None:
    gemv = kernels.int8_linear
    torch.manual_seed(out_features)
    layer = Int8Linear.from_linear(torch.nn.Linear(in_features, out_features), "fbgemm")
    dims = {"row": (1, in_features), "(1, 1, in)": (1, 1, in_features), "three rows": (3, in_features)}[shape]
    x = torch.randn(*dims) * 3
    expected = (x @ layer.weight_int8.float().t()) * layer.scales + layer.bias  # exact in the int8 weights
    got = gemv(x, layer.weight_int8, layer.scales, layer.bias)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= RELATIVE_ERROR * float(expected.abs().max())
    assert torch.allclose(gemv(x, layer.weight_int8, layer.scales, None), got - layer.bias, atol=1e-5)


def test_int8_linear_takes_the_kernel_for_one_row_and_fbgemm_for_more(kernels: Any) -> None:
    gemv = kernels.int8_linear
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(torch.nn.Linear(64, 48), "fbgemm")
    one, two = torch.randn(1, 1, 64), torch.randn(1, 2, 64)
    with torch.inference_mode():
        assert torch.equal(layer(one), gemv(one, layer.weight_int8, layer.scales, layer.bias))
        assert torch.equal(layer(two), torch.ops.quantized.linear_dynamic(two, layer._packed, True))
    dequant = Int8Linear.from_linear(torch.nn.Linear(64, 48), "dequant")
    assert dequant._gemv is None  # the GPU and prefill path never takes it
