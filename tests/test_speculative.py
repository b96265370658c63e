"""Speculative decoding with an int8 draft (``codeglm.inference.speculative``): the
engine's greedy output with a draft is the model's own (transformers' ``generate()`` and
the engine without a draft), for every family and CodeGeeX, through the prefix cache,
at every budget and stop string; sampled and n-sample requests do not use the draft; a
draft that cannot share the model's cache, or one asked of an int8 model, is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _backends_fixtures import shared_tiny_model_dir
from _torch_fixtures import one_thread  # noqa: F401 (autouse)
from test_families import FAMILY_NAMES, OTHER, PROMPT, assert_close, greedy, hf_greedy, save_family

from codeglm.backends import load_backend
from codeglm.backends.base import GenerationRequest
from codeglm.backends.spec import BackendSpecError
from codeglm.inference.engine import Engine
from codeglm.inference.loading import load_model, load_model_tokenizer
from codeglm.inference.quantize import Int8Linear
from codeglm.inference.speculative import int8_draft
from codeglm.inference.types import CancelToken, SamplingParams


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    return directory, save_family(directory, request.param)


def engines(directory: Path, draft_tokens: int = 5) -> tuple[Engine, Engine]:
    """The same model with and without an int8 draft (one model object: the draft shares its tensors)."""
    model = load_model(directory)
    tokenizer = load_model_tokenizer(directory, model)
    draft = int8_draft(model)
    plain = Engine(model, tokenizer, prefix_cache_size=0)
    return plain, Engine(model, tokenizer, draft=draft, draft_tokens=draft_tokens)


def test_greedy_output_is_the_models_own_for_every_family(family: tuple[Path, Any]) -> None:
    """Each chosen token's logits are transformers' for the same sequence, the tokens are
    ``generate()``'s, and most drafted tokens were accepted (int8 agrees with fp32)."""
    directory, reference = family
    plain, speculative = engines(directory)
    prompt = speculative.tokenizer.encode(PROMPT)
    steps: list[torch.Tensor] = []
    speculative.logits_tap = lambda logits: steps.append(logits.clone())
    [[completion]] = speculative.generate_tokens([prompt], greedy(24))
    tokens = [int(logits[0].argmax()) for logits in steps]
    assert completion.generated_tokens == len(tokens) == 24
    assert tokens == hf_greedy(reference, prompt, 24)
    assert completion.text == plain.generate_tokens([prompt], greedy(24))[0][0].text
    with torch.no_grad():
        expected = reference(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    assert_close(torch.cat(steps), expected)
    stats = speculative.last_stats
    assert stats.decode_steps == 23
    assert 0 < stats.speculative_steps < 23  # fewer model passes than tokens
    assert stats.accepted_draft_tokens >= stats.drafted_tokens // 2
    # The draft's layers are its own: the model's stay floating point.
    assert not any(isinstance(m, Int8Linear) for m in plain.model.modules())  # type: ignore[attr-defined]
    assert any(isinstance(m, Int8Linear) for m in speculative.draft.modules())  # type: ignore[union-attr]


def test_a_keystroke_reuses_the_prefix_cache_with_a_draft(family: tuple[Path, Any]) -> None:
    directory, _ = family
    plain, speculative = engines(directory, draft_tokens=3)
    prompt = speculative.tokenizer.encode(OTHER)
    [[first]] = speculative.generate_tokens([prompt], greedy(16))
    typed = prompt + speculative.tokenizer.encode(first.text)[:1]
    [[again]] = speculative.generate_tokens([typed], greedy(15))
    assert speculative.last_stats.reused_prefix_tokens == len(prompt)
    assert again.text == plain.generate_tokens([typed], greedy(15))[0][0].text


def test_every_budget_and_stop_string_ends_where_plain_decoding_does(tmp_path: Path) -> None:
    save_family(tmp_path, "qwen2 gqa tied")
    plain, speculative = engines(tmp_path, draft_tokens=4)
    full = plain.generate([PROMPT], greedy(20))[0][0]
    for budget in range(1, 12):  # steps end inside, at and past a draft's room
        ours = speculative.generate([PROMPT], greedy(budget))[0][0]
        theirs = plain.generate([PROMPT], greedy(budget))[0][0]
        assert (ours.text, ours.finish_reason, ours.generated_tokens) == (
            theirs.text, theirs.finish_reason, theirs.generated_tokens
        )
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    assert stop and stop in full.text
    ours = speculative.generate([PROMPT], greedy(20), stop=[stop])[0][0]
    assert ours.text == full.text[: full.text.index(stop)] and ours.finish_reason == "stop"


def test_sampled_and_n_sample_requests_decode_without_the_draft(tmp_path: Path) -> None:
    save_family(tmp_path, "starcoder multi-query")
    plain, speculative = engines(tmp_path)
    sampled = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=12, seed=7)
    assert [c.text for c in speculative.generate([PROMPT], sampled)[0]] == [c.text for c in plain.generate([PROMPT], sampled)[0]]
    assert speculative.last_stats.speculative_steps == 0
    two = speculative.generate([PROMPT], greedy(12), n=2)[0]
    assert speculative.last_stats.speculative_steps == 0
    assert [c.text for c in two] == [plain.generate([PROMPT], greedy(12))[0][0].text] * 2


def test_a_cancelled_request_ends_within_a_step(tmp_path: Path) -> None:
    save_family(tmp_path, "llama mha untied biases")
    _, speculative = engines(tmp_path)
    cancel = CancelToken()
    deltas = []
    for delta in speculative.stream(PROMPT, greedy(40), cancel=cancel):
        deltas.append(delta)
        cancel.cancel()
    assert speculative.last_stats.speculative_steps <= 1
    assert speculative.last_stats.decode_steps <= 6  # the step under way when the cancel came, at most


def test_codegeex_decodes_with_an_int8_draft(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = shared_tiny_model_dir(tmp_path_factory)
    plain, speculative = engines(directory)
    prompt = "def add(a, b):\n    "
    assert speculative.generate([prompt], greedy(24))[0][0].text == plain.generate([prompt], greedy(24))[0][0].text
    assert speculative.last_stats.speculative_steps > 0


def test_the_native_backend_option_and_its_errors(tmp_path: Path) -> None:
    save_family(tmp_path, "mistral gqa 4:1 head_dim")
    request = GenerationRequest(prompt=PROMPT, params=greedy(10))
    plain = load_backend(f"native:{tmp_path}").generate(request)
    backend = load_backend(f"native:{tmp_path}?draft=int8&draft_tokens=3")
    assert [c.text for c in backend.generate(request)] == [c.text for c in plain]
    assert backend.last_generation()["speculative_steps"] > 0  # type: ignore[attr-defined]
    with pytest.raises(BackendSpecError, match="draft=int8 speeds up a floating-point model"):
        load_backend(f"native:{tmp_path}?draft=int8&dtype=int8")
    with pytest.raises(BackendSpecError, match="'fp8' is not one of none, int8"):
        load_backend(f"native:{tmp_path}?draft=fp8")
    with pytest.raises(BackendSpecError, match="draft_tokens"):
        load_backend(f"native:{tmp_path}?draft=int8&draft_tokens=0")


def test_a_draft_of_another_model_or_of_an_int8_model_is_refused(tmp_path: Path) -> None:
    save_family(tmp_path / "a", "qwen2 gqa tied")
    save_family(tmp_path / "b", "starcoder multi-query")
    model, other = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    tokenizer = load_model_tokenizer(tmp_path / "a", model)
    with pytest.raises(ValueError, match="KV cache layout"):
        Engine(model, tokenizer, draft=int8_draft(other))
    with pytest.raises(ValueError, match="already int8"):
        int8_draft(load_model(tmp_path / "a", dtype="int8"))
    with pytest.raises(ValueError, match="draft_tokens must be >= 1"):
        Engine(model, tokenizer, draft=int8_draft(model), draft_tokens=0)
