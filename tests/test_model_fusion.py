"""Fused attention projections (``CodeGeeXModel.fuse_attention_projections``, done when an
inference load finishes): the same logits with fewer matmuls, the state dict of the
separate layers (so saving and loading work as before), and training, dtype moves and
int8 quantization of the fused layer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _torch_fixtures import one_thread, random_model  # noqa: F401 (one_thread: autouse)
from torch.overrides import TorchFunctionMode

from codeglm.inference.cpu_kernels import float_gemv
from codeglm.inference.layout import store_linear_weights_transposed, use_decode_layout
from codeglm.inference.loading import load_model
from codeglm.inference.quantize import Int8Linear, fbgemm_available, quantize_int8
from codeglm.model.codegeex import CodeGeeXForCausalLM, output_cache

LAYERS = 2
# Fusing changes which matmul computes a projection, not the sums it makes; allow
# float rounding anyway (the BLAS may block a wider matrix differently).
RELATIVE_LOGIT_TOLERANCE = 1e-6


def tiny_model() -> CodeGeeXForCausalLM:
    return random_model(300, 80, LAYERS, 4, 96, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def fused_layers(model: CodeGeeXForCausalLM) -> list[torch.nn.Module | None]:
    """Each block's fused projection, the top query layer's last (None where not fused)."""
    return [block.attention.query_key_value for block in model.transformer.layers] + [
        model.transformer.top_query_layer.attention.key_value
    ]


def assert_same_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= RELATIVE_LOGIT_TOLERANCE * scale


@torch.no_grad()
def prefill_and_decode_logits(model: CodeGeeXForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a prefill of all but the last 3 tokens, then 3 cached one-token steps."""
    out = model(ids[:, :-3], use_cache=True)
    logits, cache = [out.logits], output_cache(out)
    for t in range(ids.shape[1] - 3, ids.shape[1]):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
    return torch.cat(logits, dim=1)


class LinearCalls(TorchFunctionMode):
    """Counts ``F.linear`` calls (each nn.Linear and each fused projection is one)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layout", ["out-major", "in-out (decode layout)"])
def test_fused_model_gives_the_same_logits(layout: str) -> None:
    reference = tiny_model()
    fused = copy.deepcopy(reference)
    assert fused.transformer.fuse_attention_projections() == LAYERS + 1
    if layout != "out-major":
        store_linear_weights_transposed(fused)
    attention = fused.transformer.layers[0].attention
    assert attention.query is attention.key is attention.value is None
    top = fused.transformer.top_query_layer.attention
    assert top.key is top.value is None and top.query is not None  # its query reads the position table
    ids = torch.randint(0, 300, (2, 15))
    assert_same_logits(prefill_and_decode_logits(fused, ids), prefill_and_decode_logits(reference, ids))


@torch.no_grad()
def test_fusion_saves_two_matmuls_per_block_and_one_in_the_top_layer() -> None:
    model = tiny_model()
    ids = torch.randint(0, 300, (1, 6))
    counts = []
    for _ in range(2):
        with LinearCalls() as calls:
            model(ids)
        counts.append(calls.count)
        model.transformer.fuse_attention_projections()
    separate, fused = counts
    assert separate == 6 * (LAYERS + 1) + 1  # q, k, v, dense, 2 MLP per block; the logits
    assert separate - fused == 2 * LAYERS + 1


def test_fusing_twice_changes_nothing() -> None:
    model = tiny_model()
    assert model.transformer.fuse_attention_projections() == LAYERS + 1
    layers = fused_layers(model)
    assert model.transformer.fuse_attention_projections() == 0
    assert all(a is b for a, b in zip(fused_layers(model), layers, strict=True))


def test_state_dict_save_and_load_keep_the_separate_layers(tmp_path: Path) -> None:
    reference = tiny_model()
    fused = copy.deepcopy(reference)
    fused.transformer.fuse_attention_projections()
    expected = reference.state_dict()
    got = fused.state_dict()
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    fused.save_pretrained(tmp_path)
    loaded = CodeGeeXForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)
    # And a fused model takes a state dict of separate layers (the load hook stacks them).
    other = tiny_model()
    other.transformer.fuse_attention_projections()
    other.load_state_dict(expected)
    assert_same_logits(prefill_and_decode_logits(other, ids), prefill_and_decode_logits(reference, ids))


def test_a_dtype_move_keeps_the_fusion() -> None:
    reference = tiny_model().double()
    fused = tiny_model()
    fused.transformer.fuse_attention_projections()
    fused = fused.double()
    assert all(layer is not None and layer.weight.dtype == torch.float64 for layer in fused_layers(fused))
    ids = torch.randint(0, 300, (1, 12))
    assert torch.allclose(prefill_and_decode_logits(fused, ids), prefill_and_decode_logits(reference, ids), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", ["fbgemm", "dequant"])
def test_quantizing_a_fused_model_gives_the_separate_layers_int8_products(kernel: str) -> None:
    """Int8 rows have one scale each, so quantizing the stacked layer quantizes each
    projection as it would alone."""
    if kernel == "fbgemm" and not fbgemm_available():
        pytest.skip("fbgemm runs on x86 CPUs only")
    fused = tiny_model()
    fused.transformer.fuse_attention_projections()
    quantize_int8(fused, kernel=kernel)
    assert all(isinstance(layer, Int8Linear) for layer in fused_layers(fused))
    separate = quantize_int8(tiny_model(), kernel=kernel)
    ids = torch.randint(0, 300, (1, 12))
    assert_same_logits(prefill_and_decode_logits(fused, ids), prefill_and_decode_logits(separate, ids))


def test_int8_layers_are_not_fused_after_quantizing() -> None:
    model = quantize_int8(tiny_model(), kernel="dequant")
    assert model.transformer.fuse_attention_projections() == 0
    assert isinstance(model.transformer.layers[0].attention.query, Int8Linear)


def test_training_a_fused_model_reaches_every_projection() -> None:
    model = tiny_model().train()
    model.transformer.fuse_attention_projections()
    ids = torch.randint(0, 300, (2, 10))
    model(ids, labels=ids).loss.backward()
    for layer in fused_layers(model):
        assert layer is not None and layer.weight.grad is not None
        rows = layer.weight.grad.abs().sum(dim=1)  # every projection's rows got a gradient
        assert all(bool(part.sum() > 0) for part in rows.chunk(layer.out_features // 80))


def test_load_model_fuses_and_decode_layout_is_idempotent(tmp_path: Path) -> None:
    reference = tiny_model()
    reference.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    layers = fused_layers(loaded)
    assert all(layer is not None for layer in layers)
    use_decode_layout(loaded)  # again: nothing is fused twice
    assert all(a is b for a, b in zip(fused_layers(loaded), layers, strict=True))
    ids = torch.randint(0, 300, (2, 15))
    assert_same_logits(prefill_and_decode_logits(loaded, ids), prefill_and_decode_logits(reference, ids))


def test_decode_layout_stores_rows_the_long_way_and_keeps_values() -> None:
    reference = tiny_model()
    model = copy.deepcopy(reference)
    use_decode_layout(model)
    block = model.transformer.layers[0]
    # Every weight stays (out, in) where the AVX2 kernel takes the one-row products;
    # without it the widening ones (the logits' too) are stored (in, out) for the BLAS:
    # the contiguous rows are the longer side.
    widening = (block.attention.dense, block.mlp.dense_h_to_4h, model.lm_head)
    if float_gemv() is not None:
        assert all(linear.weight.is_contiguous() for linear in widening)
    else:
        assert all(linear.weight.t().is_contiguous() and not linear.weight.is_contiguous() for linear in widening)
    assert block.mlp.dense_4h_to_h.weight.is_contiguous()
    assert model.lm_head.weight is model.transformer.wte.weight
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
