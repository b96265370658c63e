"""Linear layers through oneDNN for decode steps: the same products as ``F.linear`` for
few rows without autograd, ``F.linear`` itself otherwise, and a model whose layers are
swapped keeps its parameters and its logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _torch_fixtures import one_thread, random_model  # noqa: F401 (one_thread: autouse)

from codeglm.inference.onednn import (
    ONEDNN_MAX_ROWS,
    OneDNNLinear,
    linear,
    onednn_available,
    use_onednn_linears,
)
from codeglm.inference.quantize import Int8Linear, quantize_int8
from codeglm.model.codegeex import CodeGeeXForCausalLM

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear kernel")


def tiny_model() -> CodeGeeXForCausalLM:
    return random_model(300, 80, 2, 4, 96, bos_token_id=None, eos_token_id=None, pad_token_id=None)


@pytest.mark.parametrize("rows", [1, 8])
@pytest.mark.parametrize("layout", ["(out, in)", "(in, out)"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_few_rows_give_the_products_of_f_linear(rows: int, layout: str, with_bias: bool) -> None:
    torch.manual_seed(rows)
    weight = torch.randn(96, 80)
    if layout == "(in, out)":
        weight = weight.t().contiguous().t()
    bias = torch.randn(96) if with_bias else None
    x = torch.randn(1, rows, 80)
    with torch.inference_mode():
        got = linear(x, weight, bias)
    expected = F.linear(x, weight, bias)
    assert got.shape == expected.shape == (1, rows, 96)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_long_inputs_and_autograd_take_f_linear() -> None:
    weight, bias = torch.randn(48, 32), torch.randn(48)
    long_input = torch.randn(1, ONEDNN_MAX_ROWS + 1, 32)
    with torch.inference_mode():
        assert torch.equal(linear(long_input, weight, bias), F.linear(long_input, weight, bias))
    layer = OneDNNLinear(32, 48)
    x = torch.randn(2, 32, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


def test_swapped_model_keeps_parameters_tying_and_logits() -> None:
    reference = tiny_model()
    model = tiny_model()
    assert use_onednn_linears(model) == 0  # small layers: a oneDNN call costs more than it saves
    assert use_onednn_linears(model, min_weight_bytes=0) == 6 * 3 + 1  # six per block (three blocks), the logits
    assert all(type(m) is OneDNNLinear for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert list(model.state_dict()) == list(reference.state_dict())
    ids = torch.randint(0, 300, (1, 12))
    with torch.inference_mode():
        prompt = model(ids[:, :-1], use_cache=True)
        step = model(ids[:, -1:], past_key_values=prompt.past_key_values, use_cache=True).logits[0, -1]
        expected = reference(ids).logits[0, -1]
    assert torch.allclose(step, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_quantized_layers_are_left_alone_and_swapped_ones_quantize() -> None:
    quantized = quantize_int8(tiny_model(), kernel="dequant")
    assert use_onednn_linears(quantized, min_weight_bytes=0) == 0
    swapped = tiny_model()
    use_onednn_linears(swapped, min_weight_bytes=0)
    quantize_int8(swapped, kernel="dequant")
    assert isinstance(swapped.transformer.layers[0].mlp.dense_h_to_4h, Int8Linear)


def test_fused_projections_of_swapped_layers_run_through_onednn() -> None:
    reference = tiny_model()
    model = tiny_model()
    use_onednn_linears(model, min_weight_bytes=0)
    assert model.transformer.fuse_attention_projections() == 3
    assert all(type(block.attention.query_key_value) is OneDNNLinear for block in model.transformer.layers)
    assert type(model.transformer.top_query_layer.attention.key_value) is OneDNNLinear
    ids = torch.randint(0, 300, (2, 12))
    with torch.inference_mode():
        prompt = model(ids[:, :-1], use_cache=True)
        step = model(ids[:, -1:], past_key_values=prompt.past_key_values, use_cache=True).logits[:, -1]
        expected = reference(ids).logits[:, -1]
    assert torch.allclose(step, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
