"""Fused attention projections (``fuse_attention_projections``): the same logits with
fewer matmuls, the same parameters and state dict, and the separate path whenever the
fused weights no longer are the parameters (a dtype move, quantization, autograd)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _torch_fixtures import one_thread, random_model  # noqa: F401 (one_thread: autouse)
from torch.overrides import TorchFunctionMode

from codeglm.inference.cpu_kernels import float_gemv
from codeglm.inference.decode import fuse_attention_projections
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


def attentions(model: CodeGeeXForCausalLM) -> list[torch.nn.Module]:
    return [block.attention for block in (*model.transformer.layers, model.transformer.top_query_layer)]


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
    if layout != "out-major":
        store_linear_weights_transposed(fused)
    assert fuse_attention_projections(fused) == LAYERS + 1
    assert [a.fused.names for a in attentions(fused)] == [("query", "key", "value")] * LAYERS + [("key", "value")]
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
        fuse_attention_projections(model)
    separate, fused = counts
    assert separate == 6 * (LAYERS + 1) + 1  # q, k, v, dense, 2 MLP per block; the logits
    assert separate - fused == 2 * LAYERS + 1


def test_parameters_state_dict_and_save_are_unchanged(tmp_path: Path) -> None:
    reference = tiny_model()
    fused = copy.deepcopy(reference)
    fuse_attention_projections(fused)
    assert [name for name, _ in fused.named_parameters()] == [name for name, _ in reference.named_parameters()]
    expected = reference.state_dict()
    got = fused.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    fused.save_pretrained(tmp_path)
    loaded = CodeGeeXForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)


def test_in_place_parameter_changes_reach_the_fused_path() -> None:
    reference = tiny_model()
    fused = copy.deepcopy(reference)
    fuse_attention_projections(fused)
    with torch.no_grad():
        for model in (reference, fused):
            model.transformer.layers[1].attention.value.weight.mul_(2.0)
            model.transformer.top_query_layer.attention.key.bias.add_(0.5)
    assert all(a.fused is not None and a.fused.in_place(a) for a in attentions(fused))
    ids = torch.randint(0, 300, (1, 12))
    assert_same_logits(prefill_and_decode_logits(fused, ids), prefill_and_decode_logits(reference, ids))


def test_a_dtype_move_drops_the_stale_fusion() -> None:
    reference = tiny_model().double()
    fused = tiny_model()
    fuse_attention_projections(fused)
    fused = fused.double()  # new parameter tensors: the fp32 fused weights are stale
    ids = torch.randint(0, 300, (1, 12))
    assert torch.equal(prefill_and_decode_logits(fused, ids), prefill_and_decode_logits(reference, ids))
    assert all(a.fused is None for a in attentions(fused))


def test_quantizing_a_fused_model_uses_the_int8_layers() -> None:
    quantized_fused = tiny_model()
    fuse_attention_projections(quantized_fused)
    quantize_int8(quantized_fused, kernel="dequant")
    quantized = quantize_int8(tiny_model(), kernel="dequant")
    ids = torch.randint(0, 300, (1, 12))
    assert torch.equal(prefill_and_decode_logits(quantized_fused, ids), prefill_and_decode_logits(quantized, ids))


@pytest.mark.parametrize("kernel", ["fbgemm", "dequant"])
def test_int8_projections_fuse_with_the_same_logits(kernel: str) -> None:
    if kernel == "fbgemm" and not fbgemm_available():
        pytest.skip("fbgemm runs on x86 CPUs only")
    quantized = quantize_int8(tiny_model(), kernel=kernel)
    ids = torch.randint(0, 300, (2, 15))
    expected = prefill_and_decode_logits(quantized, ids)
    assert fuse_attention_projections(quantized) == LAYERS + 1
    assert all(isinstance(a.fused.project, Int8Linear) and a.fused.in_place(a) for a in attentions(quantized))
    assert_same_logits(prefill_and_decode_logits(quantized, ids), expected)
    # The parts' buffers are views into the stacked layer's: no second copy.
    attention = quantized.transformer.layers[0].attention
    assert attention.value.weight_int8.data_ptr() == attention.fused.project.weight_int8[160:].data_ptr()


def test_training_a_fused_model_reaches_every_projection() -> None:
    model = tiny_model().train()
    fuse_attention_projections(model)
    ids = torch.randint(0, 300, (2, 10))
    model(ids, labels=ids).loss.backward()
    for attention in attentions(model):
        for linear in (attention.query, attention.key, attention.value):
            assert linear.weight.grad is not None and bool(linear.weight.grad.abs().sum() > 0)


def test_load_model_fuses_and_decode_layout_is_idempotent(tmp_path: Path) -> None:
    reference = tiny_model()
    reference.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert all(a.fused is not None and a.fused.in_place(a) for a in attentions(loaded))
    use_decode_layout(loaded)  # again: nothing moves
    assert all(a.fused is not None and a.fused.in_place(a) for a in attentions(loaded))
    ids = torch.randint(0, 300, (2, 15))
    assert_same_logits(prefill_and_decode_logits(loaded, ids), prefill_and_decode_logits(reference, ids))


def test_decode_layout_stores_rows_the_long_way_and_keeps_values() -> None:
    reference = tiny_model()
    model = copy.deepcopy(reference)
    use_decode_layout(model)
    block = model.transformer.layers[0]
    # The logits' weight is stored (in, out), for oneDNN. The blocks' weights stay
    # (out, in) where the AVX2 kernel takes their one-row products; without it the
    # widening ones are stored (in, out) too: the contiguous rows are the longer side.
    assert model.lm_head.weight.t().is_contiguous() and not model.lm_head.weight.is_contiguous()
    widening = (block.attention.dense, block.mlp.dense_h_to_4h)
    if float_gemv() is not None:
        assert all(linear.weight.is_contiguous() for linear in widening)
    else:
        assert all(linear.weight.t().is_contiguous() and not linear.weight.is_contiguous() for linear in widening)
    assert block.mlp.dense_4h_to_h.weight.is_contiguous()
    assert model.lm_head.weight is model.transformer.wte.weight
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
