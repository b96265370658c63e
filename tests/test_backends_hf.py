"""The hf backend with small transformers models made here: a random GPT-2 with the
CodeGeeX tokenizer, and the same with StarCoder-style FIM tokens added."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backends_fixtures import FIM, save_gpt2
from transformers import AutoModelForCausalLM

from codeglm.backends import BackendError, CancelToken, GenerationRequest, SamplingParams, load_backend
from codeglm.backends.hf import HFBackend
from codeglm.backends.worker_stream import drain
from codeglm.inference.fim import detect_fim_tokens
from codeglm.model.tokenizer import load_tokenizer

PROMPT = "def add(a, b):\n    "
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_gpt2(tmp_path_factory.mktemp("gpt2"), fim=False)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    loaded = load_backend(f"hf:{model_dir}?dtype=fp32")
    assert isinstance(loaded, HFBackend)
    return loaded


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=tokens, temperature=0.0)


def test_facts_come_from_the_config_and_tokenizer(backend: HFBackend) -> None:
    assert backend.context_length == 128 and backend.supports_fim is False
    assert backend.count_tokens("def f():\n    return 1") == len(load_tokenizer().encode("def f():\n    return 1"))


def test_greedy_text_is_what_transformers_generate_gives(backend: HFBackend, model_dir: Path) -> None:
    [completion] = backend.generate(GenerationRequest(PROMPT, greedy(16)))
    tokenizer = load_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=50256)
    expected = tokenizer.decode(out[0, ids.shape[1] :].tolist())
    if "<|endoftext|>" in expected:
        expected = expected[: expected.index("<|endoftext|>")]
    assert completion.text == expected
    assert completion.finish_reason == ("stop" if completion.generated_tokens < 16 else "length")


def test_stop_strings_and_streaming(backend: HFBackend) -> None:
    [whole] = backend.generate(GenerationRequest(PROMPT, greedy(24)))
    text, completion = drain(backend.stream(GenerationRequest(PROMPT, greedy(24))))
    assert text == whole.text and completion is not None and completion.finish_reason == whole.finish_reason
    stop = next(whole.text[i : i + 2] for i in range(len(whole.text) // 2, len(whole.text) - 2)
                if whole.text[i : i + 2].strip() and "\ufffd" not in whole.text[i : i + 2])
    request = GenerationRequest(PROMPT, greedy(24), stop=(stop,))
    [cut] = backend.generate(request)
    assert cut.text == whole.text[: whole.text.find(stop)] and cut.finish_reason == "stop"
    assert drain(backend.stream(request))[0] == cut.text


def test_seeded_samples_are_reproducible_and_n_are_returned(backend: HFBackend) -> None:
    request = GenerationRequest(PROMPT, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7), n=3)
    first = backend.generate(request)
    assert len(first) == 3 and first == backend.generate(request)


def test_cancellation(backend: HFBackend) -> None:
    cancel = CancelToken()
    cancel.cancel()
    [completion] = backend.generate(GenerationRequest(PROMPT, greedy(16)), cancel)
    assert completion.finish_reason == "cancelled" and completion.generated_tokens == 0
    cancel = CancelToken()
    stream = backend.stream(GenerationRequest(PROMPT, greedy(100)), cancel)
    next(stream)
    cancel.cancel()
    _, completion = drain(stream)
    assert completion is not None and completion.finish_reason in ("cancelled", "stop")
    assert completion.generated_tokens < 100


def test_fim_tokens_are_found_in_the_vocabulary() -> None:
    assert detect_fim_tokens({"<fim_prefix>": 1, "<fim_suffix>": 2, "<fim_middle>": 3, "a": 4}) is not None
    qwen = detect_fim_tokens({"<|fim_prefix|>": 7, "<|fim_suffix|>": 8, "<|fim_middle|>": 9})
    assert qwen is not None and (qwen.prefix, qwen.suffix, qwen.middle) == (7, 8, 9)
    assert detect_fim_tokens({"<fim_prefix>": 1, "<fim_suffix>": 2}) is None


def test_fill_in_the_middle_prompt(tmp_path: Path) -> None:
    backend = HFBackend.load(str(save_gpt2(tmp_path, fim=True)))
    assert backend.supports_fim
    vocab = backend.tokenizer.get_vocab()
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    request = GenerationRequest(prefix, greedy(6), suffix=suffix)
    tokenizer = load_tokenizer()
    assert backend.prompt_ids(request) == [
        vocab[FIM[0]], *tokenizer.encode(prefix), vocab[FIM[1]], *tokenizer.encode(suffix), vocab[FIM[2]]
    ]
    [completion] = backend.generate(request)
    assert completion.generated_tokens >= 1


def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot load a transformers causal LM"):
        load_backend(f"hf:{tmp_path}")
