"""The model as a transformers model: Auto classes, save/load, generate(), padding,
dtypes, and the two ways positions are derived (from the cache or given)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codeglm.model.codegeex import CodeGeeXForCausalLM, output_cache
from codeglm.model.config import CodeGeeXConfig


def tiny_config(**overrides) -> CodeGeeXConfig:
    values = dict(vocab_size=300, hidden_size=80, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=96, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    values.update(overrides)
    return CodeGeeXConfig(**values)


@pytest.fixture(scope="module")
def model() -> CodeGeeXForCausalLM:
    torch.manual_seed(0)
    return CodeGeeXForCausalLM(tiny_config()).eval()


def test_bad_head_count_is_rejected() -> None:
    with pytest.raises(Exception, match="not divisible"):  # transformers wraps it in its own error type
        CodeGeeXConfig(hidden_size=100, num_attention_heads=3)


def test_output_weights_are_tied(model: CodeGeeXForCausalLM) -> None:
    assert model.lm_head.weight is model.transformer.wte.weight


def test_save_load_round_trip_with_auto_classes(model: CodeGeeXForCausalLM, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, CodeGeeXConfig) and config.num_hidden_layers == 2
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, CodeGeeXForCausalLM)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@torch.no_grad()
def test_the_top_query_layer_reads_its_own_position_table(model: CodeGeeXForCausalLM) -> None:
    ids = torch.randint(0, 300, (1, 9))
    before = model(ids).logits
    table = model.transformer.top_query_embeddings.weight
    saved = table[8].clone()
    table[8] += 1.0
    after = model(ids).logits
    table[8] = saved
    # Only the query at position 8 changes: earlier positions are untouched.
    assert torch.equal(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8], after[:, 8])


@torch.no_grad()
def test_positions_from_cache_equal_explicit_positions(model: CodeGeeXForCausalLM) -> None:
    ids = torch.randint(0, 300, (1, 12))
    implicit = model(ids[:, :7], use_cache=True)
    explicit = model(ids[:, :7], position_ids=torch.arange(7).unsqueeze(0), use_cache=True)
    a = model(ids[:, 7:], cache=output_cache(implicit), use_cache=True).logits
    # The cache's name before transformers 5.25 is still taken.
    b = model(ids[:, 7:], position_ids=torch.arange(7, 12).unsqueeze(0),
              past_key_values=output_cache(explicit), use_cache=True).logits
    full = model(ids).logits[:, 7:]
    assert torch.allclose(a, full, atol=1e-5) and torch.allclose(b, full, atol=1e-5)


@torch.no_grad()
def test_left_padded_batch_equals_single_sequences(model: CodeGeeXForCausalLM) -> None:
    long, short = torch.randint(0, 300, (1, 10)), torch.randint(0, 300, (1, 6))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1)])
    mask = torch.tensor([[1] * 10, [0] * 4 + [1] * 6])
    logits = model(batch, attention_mask=mask).logits
    assert torch.allclose(logits[0], model(long).logits[0], atol=1e-5)
    assert torch.allclose(logits[1, 4:], model(short).logits[0], atol=1e-5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@torch.no_grad()
def test_generate_greedy_equals_manual_greedy_and_batches_with_padding(
    model: CodeGeeXForCausalLM, use_cache: bool
) -> None:
    prompt = torch.randint(0, 300, (1, 8))
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                         min_new_tokens=12, do_sample=False, pad_token_id=0, use_cache=use_cache)
    ids = prompt
    for _ in range(12):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    # Each prompt of a left-padded batch continues as it does alone (a generate() that
    # lost the context would give both rows the same tokens after the first).
    other = torch.randint(0, 300, (1, 11))
    alone = model.generate(other, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1), other])
    mask = torch.tensor([[0] * 3 + [1] * 8, [1] * 11])
    both = model.generate(batch, attention_mask=mask, max_new_tokens=12, min_new_tokens=12,
                          do_sample=False, pad_token_id=0, use_cache=use_cache)
    assert torch.equal(both[0, 11:], out[0, 8:])
    assert torch.equal(both[1, 11:], alone[0, 11:])


def cache_in(arguments: dict) -> object:
    return arguments.get("cache", arguments.get("past_key_values"))


@torch.no_grad()
def test_generate_passes_only_arguments_forward_takes_and_the_cache_every_step(model: CodeGeeXForCausalLM) -> None:
    """Whatever names the installed transformers uses, every keyword generate() passes is one
    forward() declares (it has no **kwargs), and each step after the first gets one new token
    and a cache holding everything before it."""
    calls: list[tuple[set[str], int, int]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        cache = cache_in(kwargs)
        calls.append((set(kwargs), ids.shape[1], cache.get_seq_length() if cache is not None else 0))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        prompt = torch.randint(0, 300, (2, 6))
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, min_new_tokens=5,
                       do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    declared = set(inspect.signature(model.forward).parameters)
    assert not any(kind is inspect.Parameter.VAR_KEYWORD
                   for kind in (p.kind for p in inspect.signature(model.forward).parameters.values()))
    assert all(names <= declared for names, _, _ in calls), [names - declared for names, _, _ in calls]
    assert [(new, past) for _, new, past in calls] == [(6, 0), (1, 6), (1, 7), (1, 8), (1, 9)]


def test_an_argument_forward_does_not_know_is_an_error_naming_it(model: CodeGeeXForCausalLM) -> None:
    ids = torch.randint(0, 300, (1, 4))
    with pytest.raises(TypeError, match="cache_params"):
        model(ids, cache_params=None)
    cache = output_cache(model(ids, use_cache=True))
    with pytest.raises(ValueError, match="not both"):
        model(ids, cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="output_attentions"):
        model(ids, output_attentions=True)
    with pytest.raises(ValueError, match="cache_position"):
        model(ids, cache_position=torch.arange(3, 7))


def test_import_codeglm_is_light_and_hooks_nothing() -> None:
    """Registration is transformers' public API, run when codeglm.model.config / codeglm.model.codegeex are
    imported: ``import codeglm`` loads neither torch nor transformers, nor patches imports."""
    code = (
        "import sys; before = list(sys.meta_path); import codeglm, codeglm.languages; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'; "
        "assert sys.meta_path == before, 'import hook'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_saved_model_declares_its_classes_for_transformers_alone(model: CodeGeeXForCausalLM, tmp_path: Path) -> None:
    """A saved directory names its classes (auto_map): transformers with trust_remote_code loads
    it without anyone importing codeglm.model.codegeex first, and computes the same logits."""
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "config.CodeGeeXConfig", "AutoModelForCausalLM": "codegeex.CodeGeeXForCausalLM"}
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "expected.pt")
    torch.save(ids, tmp_path / "ids.pt")
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM; "
        f"d = {str(tmp_path)!r}; "
        "m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval(); "
        "assert 'codeglm.model.codegeex' not in sys.modules; "
        "logits = m(torch.load(d + '/ids.pt')).logits; "
        "assert torch.equal(logits, torch.load(d + '/expected.pt')), 'logits differ'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@torch.no_grad()
def test_generate_sampling_is_reproducible_with_a_seed(model: CodeGeeXForCausalLM) -> None:
    prompt = torch.randint(0, 300, (1, 5))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                                   min_new_tokens=10, do_sample=True, temperature=0.9, top_p=0.95,
                                   pad_token_id=0))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (1, 15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@torch.no_grad()
def test_runs_in_each_dtype(model: CodeGeeXForCausalLM, dtype: torch.dtype, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    cast = CodeGeeXForCausalLM.from_pretrained(tmp_path, dtype=dtype).eval()
    ids = torch.randint(0, 300, (1, 20))
    logits = cast(ids).logits
    assert logits.dtype == dtype
    reference = model(ids).logits
    assert (logits.float() - reference).abs().max() <= 0.05 * reference.abs().max()


def test_context_overflow_is_a_clear_error(model: CodeGeeXForCausalLM) -> None:
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model(torch.zeros(1, 97, dtype=torch.long))


def test_training_loss_is_the_next_token_cross_entropy(model: CodeGeeXForCausalLM) -> None:
    ids = torch.randint(0, 300, (2, 10))
    out = model(ids, labels=ids)
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, manual, atol=1e-6)
