"""Parity with the reference implementation (codegeex==1.0): converted checkpoints give
the same logits, whole-sequence and token by token, and the same greedy continuations.

Tolerance: fp16 on the CPU, max |logit difference| <= 2e-3 x max |logit| (about two
fp16 ulps at the largest logit: the two implementations order their fp16 ops differently).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _reference import SHAPES, Shape, causal_mask, reference_greedy, reference_model, save_original

from codeglm.model.codegeex import CodeGeeXForCausalLM, output_cache
from codeglm.model.convert import convert

FP16_RELATIVE_TOLERANCE = 2e-3


def assert_close_fp16(got: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.float().abs().max().item()
    diff = (got.float() - expected.float()).abs().max().item()
    assert diff <= FP16_RELATIVE_TOLERANCE * scale, f"max diff {diff} at logit scale {scale}"


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"h{s.hidden}-L{s.layers}-nh{s.heads}")
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    shape: Shape = request.param
    ref = reference_model(shape)
    work = tmp_path_factory.mktemp("parity")
    ckpt = save_original(ref, work / "codegeex.pt", nested=shape.layers % 2 == 1)
    out = convert(ckpt, work / "model", dtype="fp16", num_attention_heads=shape.heads, progress=False)
    ours = CodeGeeXForCausalLM.from_pretrained(out, dtype=torch.float16).eval()
    return shape, ref, ours


def test_config_inferred_from_shapes(pair) -> None:
    shape, _, ours = pair
    cfg = ours.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (shape.hidden, shape.layers, shape.heads)
    assert (cfg.vocab_size, cfg.max_position_embeddings) == (shape.vocab, shape.positions)


@torch.no_grad()
def test_whole_sequence_logits_match(pair) -> None:
    shape, ref, ours = pair
    ids = torch.randint(0, shape.vocab, (2, 50), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(50).unsqueeze(0).expand(2, -1)
    expected, _ = ref(ids, pos, causal_mask(shape.positions), get_key_value=True)
    got = ours(ids).logits
    assert got.shape == expected.shape
    assert_close_fp16(got, expected)


@torch.no_grad()
def test_token_by_token_through_kv_cache_matches(pair) -> None:
    shape, ref, ours = pair
    ids = torch.randint(0, shape.vocab, (1, 24), generator=torch.Generator().manual_seed(2))
    mask = causal_mask(shape.positions)
    # Prefill 8 tokens, then one token at a time, in both implementations.
    ref_logits, ref_past = ref(ids[:, :8], torch.arange(8).unsqueeze(0), mask, get_key_value=True)
    out = ours(ids[:, :8], use_cache=True)
    ours_steps, ref_steps = [out.logits], [ref_logits]
    cache = output_cache(out)
    assert len(cache.layers) == shape.layers + 1  # the top query layer is cached too
    for i in range(8, 24):
        step = ours(ids[:, i : i + 1], cache=cache, use_cache=True)
        cache = output_cache(step)
        ours_steps.append(step.logits)
        r, ref_past = ref(ids[:, i : i + 1], torch.tensor([[i]]), mask, layer_past=ref_past, get_key_value=True)
        ref_steps.append(r)
    assert_close_fp16(torch.cat(ours_steps, 1), torch.cat(ref_steps, 1))


@torch.no_grad()
def test_greedy_32_tokens_identical(pair) -> None:
    shape, ref, ours = pair
    prompt = torch.randint(0, shape.vocab, (1, 12), generator=torch.Generator().manual_seed(3))
    expected = reference_greedy(ref, prompt, 32, shape.positions)
    ids, cache, got = prompt, None, []
    for _ in range(32):
        step = ours(ids, cache=cache, use_cache=True)
        cache = output_cache(step)
        token = int(step.logits[0, -1].float().argmax())
        got.append(token)
        ids = torch.tensor([[token]])
    assert got == expected


@torch.no_grad()
def test_transformers_generate_matches_reference_greedy(pair) -> None:
    shape, ref, ours = pair
    prompt = torch.randint(0, shape.vocab, (1, 10), generator=torch.Generator().manual_seed(4))
    expected = reference_greedy(ref, prompt, 32, shape.positions)
    generated = ours.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=32,
        min_new_tokens=32,
        do_sample=False,
        pad_token_id=0,
    )
    assert generated[0, 10:].tolist() == expected


def test_flat_and_nested_checkpoints_convert_identically(tmp_path: Path) -> None:
    ref = reference_model(SHAPES[0], seed=5)
    nested = convert(save_original(ref, tmp_path / "n.pt", nested=True), tmp_path / "n", progress=False,
                     num_attention_heads=SHAPES[0].heads)
    flat = convert(save_original(ref, tmp_path / "f.pt", nested=False), tmp_path / "f", progress=False,
                   num_attention_heads=SHAPES[0].heads)
    a = CodeGeeXForCausalLM.from_pretrained(nested).state_dict()
    b = CodeGeeXForCausalLM.from_pretrained(flat).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
