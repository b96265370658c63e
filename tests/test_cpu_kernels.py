"""The AVX2 decode kernels (``codeglm/inference/csrc/cpu_gemv.cpp``): built where they can be, the
fp32 products of ``F.linear`` and the int8-weight products to within 13-bit activation
rounding, used for single rows only, with the norms (LayerNorm, RMSNorm), activations
(GELU, GELU-tanh, SwiGLU) and residual they take on; and the decode attention (rotary
positions, grouped-query heads) against SDPA."""

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

from codeglm.inference import cpu_kernels
from codeglm.inference.cpu_kernels import (
    ACTIVATION_CODES,
    build,
    build_directory,
    clear_stale_lock,
    cpu_has_avx2,
    float_gemv,
    int8_gemv,
)
from codeglm.inference.onednn import KERNEL_MAX_ROWS, OneDNNLinear, linear
from codeglm.inference.quantize import Int8Linear, fbgemm_available
from codeglm.model.layers import RMSNorm, activate, apply_rotary, fast_gelu, linear_step, rotary_cos_sin

# Rounding activations to 13 bits: |error| <= 2^-13 of a row's largest activation per
# term; measured ~2e-4 of the largest output.
RELATIVE_ERROR = 1e-3
GELU = ACTIVATION_CODES["fast_gelu"]

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


def test_each_source_and_environment_builds_in_a_directory_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two checkouts or virtualenvs on one machine must not rebuild one directory in turn."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = build_directory()
    assert here.parent == tmp_path and here == build_directory()
    other_source = tmp_path / "cpu_gemv.cpp"
    other_source.write_text(cpu_kernels.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", other_source)
    assert build_directory() != here
    monkeypatch.setattr(cpu_kernels, "SOURCE", Path(cpu_kernels.__file__).parent / "csrc" / "cpu_gemv.cpp")
    monkeypatch.setattr("sys.prefix", str(tmp_path / "another-venv"))
    assert build_directory() != here


def test_a_lock_left_by_a_killed_build_is_cleared_and_a_live_one_kept(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    assert not clear_stale_lock(tmp_path)
    lock.touch()
    assert not clear_stale_lock(tmp_path) and lock.exists()  # a build under way
    old = lock.stat().st_mtime - cpu_kernels.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    assert clear_stale_lock(tmp_path) and not lock.exists()


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


def test_onednn_linear_takes_the_kernel_for_up_to_kernel_max_rows_of_an_out_in_weight(kernels: Any) -> None:
    gemv = kernels.float_linear
    torch.manual_seed(0)
    layer = OneDNNLinear(64, 48)
    one, few, many = torch.randn(1, 1, 64), torch.randn(1, KERNEL_MAX_ROWS, 64), torch.randn(1, KERNEL_MAX_ROWS + 1, 64)
    with torch.inference_mode():
        assert torch.equal(layer(one), gemv(one, layer.weight, layer.bias))
        assert torch.equal(layer(few), gemv(few, layer.weight, layer.bias))
        assert torch.equal(layer(many), linear(many, layer.weight, layer.bias))
        transposed = OneDNNLinear(64, 48)
        transposed.weight.data = layer.weight.data.t().contiguous().t()  # (in, out) storage: oneDNN's
        transposed.bias.data = layer.bias.data
        assert torch.equal(transposed(one), linear(one, transposed.weight, transposed.bias))


@pytest.mark.parametrize(("out_features", "in_features"), [(33, 80), (384, 128), (9, 4100), (6, 5)])
def test_float_products_of_several_rows_take_norm_and_residual(kernels: Any, out_features: int, in_features: int) -> None:
    """2 to KERNEL_MAX_ROWS rows (a speculative check, n samples) go through the kernel's
    blocked path, groups of three rows and a remainder, weight rows in blocks of four and a
    remainder: every row equals torch's product of it, with an RMSNorm before and the
    residual after."""
    gemv = kernels.float_linear
    torch.manual_seed(out_features)
    weight, bias = torch.randn(out_features, in_features), torch.randn(out_features)
    norm = RMSNorm(in_features, 1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    for rows in range(2, KERNEL_MAX_ROWS + 1):
        x, residual = torch.randn(1, rows, in_features), torch.randn(1, rows, out_features)
        expected = F.linear(x, weight, bias)
        scale = float(expected.abs().max())
        got = gemv(x, weight, bias)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
        with torch.no_grad():
            expected = residual + F.linear(norm(x), weight, bias)
        scale = float(expected.abs().max())
        got = gemv(x, weight, bias, norm.weight, None, norm.eps, residual, 0)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


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


def layer_norm_and_linear_inputs(in_features: int, out_features: int) -> tuple[torch.Tensor, torch.nn.LayerNorm, torch.Tensor]:
    torch.manual_seed(in_features + out_features)
    norm = torch.nn.LayerNorm(in_features)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return torch.randn(1, 1, in_features) * 3 + 1, norm, torch.randn(1, 1, out_features)


@pytest.mark.parametrize(("out_features", "in_features"), [(5, 7), (96, 64), (3072, 768)])
def test_float_products_take_layer_norm_gelu_and_residual(kernels: Any, out_features: int, in_features: int) -> None:
    x, norm, residual = layer_norm_and_linear_inputs(in_features, out_features)
    weight, bias = torch.randn(out_features, in_features) / in_features**0.5, torch.randn(out_features)
    with torch.no_grad():
        normed = norm(x)
        cases = {
            "norm, gelu": (kernels.float_linear(x, weight, bias, norm.weight, norm.bias, norm.eps, None, GELU), fast_gelu(F.linear(normed, weight, bias))),
            "residual": (kernels.float_linear(x, weight, bias, residual=residual), residual + F.linear(x, weight, bias)),
            "norm, gelu, residual": (
                kernels.float_linear(x, weight, None, norm.weight, norm.bias, norm.eps, residual, GELU),
                residual + fast_gelu(F.linear(normed, weight)),
            ),
        }
    for name, (got, expected) in cases.items():
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max())), name


def test_int8_products_take_layer_norm_gelu_and_residual(kernels: Any) -> None:
    x, norm, residual = layer_norm_and_linear_inputs(256, 384)
    layer = Int8Linear.from_linear(torch.nn.Linear(256, 384), "fbgemm")
    with torch.no_grad():
        expected = residual + fast_gelu((norm(x) @ layer.weight_int8.float().t()) * layer.scales + layer.bias)
        got = kernels.int8_linear(x, layer.weight_int8, layer.scales, layer.bias, norm.weight, norm.bias, norm.eps, residual, GELU)
        assert float((got - expected).abs().max()) <= RELATIVE_ERROR * float(expected.abs().max())
        assert torch.equal(layer.fused_forward(x, norm, residual, "fast_gelu"), got)
        assert layer.fused_forward(torch.randn(1, 2, 256), norm) is None  # two rows: fbgemm's, through forward
        assert torch.equal(linear_step(layer, x, norm, residual, activation="fast_gelu"), got)


def test_gelu_holds_at_extreme_inputs(kernels: Any) -> None:
    x = torch.linspace(-200, 200, 40001).view(-1, 1)  # one feature: y = x exactly, then GELU
    got = kernels.float_linear(x, torch.ones(1, 1), None, activation=GELU).view(-1)
    assert bool(torch.isfinite(got).all())
    assert torch.allclose(got, fast_gelu(x.view(-1)), rtol=1e-6, atol=1e-6)


def rms_norm_inputs(in_features: int, out_features: int) -> tuple[torch.Tensor, RMSNorm, torch.Tensor]:
    torch.manual_seed(in_features * out_features)
    norm = RMSNorm(in_features, 1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    return torch.randn(1, 1, in_features) * 3 + 1, norm, torch.randn(1, 1, out_features)


@pytest.mark.parametrize("activation", [None, "gelu_tanh", "swiglu"])
@pytest.mark.parametrize(("out_features", "in_features"), [(6, 7), (96, 64), (2 * 4864, 896)])
def test_float_products_take_rms_norm_and_llama_and_starcoder_activations(
    kernels: Any, activation: str | None, out_features: int, in_features: int
) -> None:
    x, norm, _ = rms_norm_inputs(in_features, out_features)
    width = out_features // 2 if activation == "swiglu" else out_features
    residual = torch.randn(1, 1, width)
    weight, bias = torch.randn(out_features, in_features) / in_features**0.5, torch.randn(out_features)
    with torch.no_grad():
        y = F.linear(norm(x), weight, bias)
        expected = residual + (y if activation is None else activate(y, activation))  # type: ignore[arg-type]
        got = kernels.float_linear(x, weight, bias, norm.weight, None, norm.eps, residual, ACTIVATION_CODES[activation])  # type: ignore[index]
    assert got.shape == expected.shape == (1, 1, width)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_int8_products_take_rms_norm_and_swiglu(kernels: Any) -> None:
    x, norm, _ = rms_norm_inputs(256, 384)
    residual = torch.randn(1, 1, 192)
    layer = Int8Linear.from_linear(torch.nn.Linear(256, 384), "fbgemm")
    with torch.no_grad():
        y = (norm(x) @ layer.weight_int8.float().t()) * layer.scales + layer.bias
        expected = residual + activate(y, "swiglu")
        got = layer.fused_forward(x, norm, residual, "swiglu")
        assert got is not None and got.shape == expected.shape
        assert float((got - expected).abs().max()) <= RELATIVE_ERROR * float(expected.abs().max())
        assert torch.equal(linear_step(layer, x, norm, residual, activation="swiglu"), got)


def test_the_activations_hold_at_extreme_inputs(kernels: Any) -> None:
    x = torch.linspace(-200, 200, 40001).view(-1, 1)  # one feature: y = x exactly
    got = kernels.float_linear(x, torch.ones(1, 1), None, activation=ACTIVATION_CODES["gelu_tanh"]).view(-1)
    assert bool(torch.isfinite(got).all())
    assert torch.allclose(got, F.gelu(x.view(-1), approximate="tanh"), rtol=1e-5, atol=1e-6)
    gate_up = torch.cat((x, torch.full_like(x, 0.5)), dim=-1)  # two features: [gate; up], identity weight
    got = kernels.float_linear(gate_up, torch.eye(2), None, activation=ACTIVATION_CODES["swiglu"]).view(-1)
    assert bool(torch.isfinite(got).all())
    assert torch.allclose(got, F.silu(x.view(-1)) * 0.5, rtol=1e-6, atol=1e-6)


def test_the_products_refuse_what_they_cannot_take(kernels: Any) -> None:
    with pytest.raises(RuntimeError, match="unknown activation"):
        kernels.float_linear(torch.randn(1, 4), torch.randn(4, 4), None, activation=9)
    with pytest.raises(RuntimeError, match="even output width"):
        kernels.float_linear(torch.randn(1, 4), torch.randn(5, 4), None, activation=ACTIVATION_CODES["swiglu"])


def test_linear_step_takes_the_kernel_where_the_layer_has_it(kernels: Any) -> None:
    x, norm, residual = layer_norm_and_linear_inputs(64, 48)
    onednn_layer, plain = OneDNNLinear(64, 48), torch.nn.Linear(64, 48)
    plain.load_state_dict(onednn_layer.state_dict())
    with torch.inference_mode():
        fused = linear_step(onednn_layer, x, norm, residual, activation="fast_gelu")
        assert torch.equal(fused, kernels.float_linear(x, onednn_layer.weight, onednn_layer.bias, norm.weight, norm.bias, norm.eps, residual, GELU))
        by_torch = linear_step(plain, x, norm, residual, activation="fast_gelu")  # no kernel for a plain layer: torch's operations
        assert torch.allclose(fused, by_torch, rtol=1e-5, atol=1e-5 * float(by_torch.abs().max()))
    assert onednn_layer.fused_forward(x) is None  # under autograd: torch's path


@pytest.mark.parametrize(
    ("batch", "heads", "head_dim", "capacity", "position"),
    [(1, 12, 64, 256, 128), (3, 4, 32, 64, 0), (2, 3, 13, 40, 39), (1, 2, 8, 1100, 1023)],
)
def test_decode_attention_writes_the_cache_and_equals_sdpa(
    kernels: Any, batch: int, heads: int, head_dim: int, capacity: int, position: int
) -> None:
    torch.manual_seed(position)
    h = heads * head_dim
    projected = torch.randn(batch, 1, 3 * h) * 2  # q, k, v as slices of one projection, as decode steps pass them
    q, k, v = projected.chunk(3, dim=-1)
    key_cache, value_cache = torch.randn(batch, heads, capacity, head_dim), torch.randn(batch, heads, capacity, head_dim)
    expected_keys, expected_values = key_cache.clone(), value_cache.clone()
    expected_keys[:, :, position] = k.view(batch, heads, head_dim)
    expected_values[:, :, position] = v.view(batch, heads, head_dim)
    expected = F.scaled_dot_product_attention(
        q.view(batch, 1, heads, head_dim).transpose(1, 2), expected_keys[:, :, : position + 1], expected_values[:, :, : position + 1]
    ).transpose(1, 2).reshape(batch, 1, h)
    got = kernels.decode_attention(q, k, v, key_cache, value_cache, position)
    assert torch.equal(key_cache, expected_keys) and torch.equal(value_cache, expected_values)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "head_dim", "position", "angles_per_row"),
    [(1, 14, 2, 64, 130, False), (2, 4, 4, 16, 7, True), (3, 6, 1, 32, 0, False), (1, 8, 2, 128, 1023, False)],
)
def test_decode_attention_rotates_and_shares_key_value_heads_like_sdpa(
    kernels: Any, batch: int, heads: int, kv_heads: int, head_dim: int, position: int, angles_per_row: bool
) -> None:
    """Qwen2's and Llama's decode step: q and k rotated by the position's angles, each
    group of query heads reading one key/value head, against SDPA with ``enable_gqa``."""
    torch.manual_seed(position + heads)
    capacity = position + 5
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    projected = torch.randn(batch, 1, q_size + 2 * kv_size) * 2
    q, k, v = projected.split((q_size, kv_size, kv_size), dim=-1)
    positions = torch.full((batch if angles_per_row else 1, 1), position)
    cos, sin = rotary_cos_sin(positions, head_dim, 1e6, torch.float32)  # (B or 1, 1, 1, hs)
    key_cache, value_cache = torch.randn(batch, kv_heads, capacity, head_dim), torch.randn(batch, kv_heads, capacity, head_dim)
    q_rot = apply_rotary(q.view(batch, 1, heads, head_dim).transpose(1, 2), cos, sin)
    k_rot = apply_rotary(k.view(batch, 1, kv_heads, head_dim).transpose(1, 2), cos, sin)
    expected_keys, expected_values = key_cache.clone(), value_cache.clone()
    expected_keys[:, :, position] = k_rot[:, :, 0]
    expected_values[:, :, position] = v.view(batch, kv_heads, head_dim)
    expected = F.scaled_dot_product_attention(
        q_rot, expected_keys[:, :, : position + 1], expected_values[:, :, : position + 1], enable_gqa=kv_heads != heads
    ).transpose(1, 2).reshape(batch, 1, q_size)
    flat_angles = (cos.reshape(-1, head_dim), sin.reshape(-1, head_dim))
    got = kernels.decode_attention(q, k, v, key_cache, value_cache, position, *flat_angles)
    assert torch.allclose(key_cache, expected_keys, rtol=1e-6, atol=1e-6) and torch.equal(value_cache, expected_values)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_decode_attention_refuses_a_position_outside_the_cache(kernels: Any) -> None:
    q = torch.randn(1, 1, 16)
    cache = torch.zeros(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="outside the cache"):
        kernels.decode_attention(q, q, q, cache, cache.clone(), 4)
    with pytest.raises(RuntimeError, match=r"\(B, 1, nh \* hs\)"):
        kernels.decode_attention(torch.randn(1, 1, 15), q, q, cache, cache.clone(), 0)
    with pytest.raises(RuntimeError, match="evenly"):
        kernels.decode_attention(torch.randn(1, 1, 24), q, q, cache, cache.clone(), 0)
    with pytest.raises(RuntimeError, match="both cos and sin"):
        kernels.decode_attention(q, q, q, cache, cache.clone(), 0, torch.ones(1, 8), None)
