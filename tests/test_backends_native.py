"""The native backend over a tiny random CodeGeeX model: stop rules, the finished
callback, cancellation, streaming, and batching several requests in one engine call."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _backends_fixtures import shared_tiny_model_dir

from codeglm.backends import (
    BackendError,
    CancelToken,
    Completion,
    GenerationRequest,
    SamplingParams,
    load_backend,
)
from codeglm.backends.batch_entry import BatchEntry, SampleListener
from codeglm.backends.native import NativeBackend
from codeglm.backends.worker_stream import drain

PROMPT = "def fibonacci(n):\n    "
OTHER_PROMPT = "import os\n\nclass Config:\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> NativeBackend:
    loaded = load_backend(f"native:{model_dir}?prefix_cache=0")
    assert isinstance(loaded, NativeBackend)
    return loaded


def greedy(tokens: int, **kwargs) -> SamplingParams:
    return SamplingParams(max_new_tokens=tokens, temperature=0.0, **kwargs)


@pytest.fixture(scope="module")
def reference(backend: NativeBackend) -> str:
    [completion] = backend.generate(GenerationRequest(PROMPT, greedy(40)))
    assert completion.finish_reason == "length" and completion.generated_tokens == 40
    return completion.text


def test_facts_come_from_the_model(backend: NativeBackend) -> None:
    assert backend.context_length == 512
    assert backend.supports_fim is False
    assert backend.count_tokens("def f():\n        return 1") == len(backend.engine.tokenizer.encode("def f():\n        return 1"))


def test_stream_gives_the_same_text_and_the_final_completion(backend: NativeBackend, reference: str) -> None:
    deltas: list[str] = []
    text, completion = drain(backend.stream(GenerationRequest(PROMPT, greedy(40))), deltas.append)
    assert text == reference and len(deltas) > 1
    assert completion is not None and completion.text == reference
    assert completion.finish_reason == "length" and completion.generated_tokens == 40


def stop_string_in(text: str) -> tuple[str, int]:
    """A three-character stop string from the middle of ``text`` and where it first occurs."""
    for start in range(len(text) // 3, len(text) - 3):
        candidate = text[start : start + 3]
        if "\ufffd" not in candidate and candidate.strip():
            return candidate, text.find(candidate)
    raise AssertionError(f"no usable stop string in {text!r}")


def test_stop_string_ends_generation_and_is_not_returned(backend: NativeBackend, reference: str) -> None:
    stop, cut = stop_string_in(reference)
    request = GenerationRequest(PROMPT, greedy(40), stop=("never-generated-stop", stop))
    [completion] = backend.generate(request)
    assert completion.text == reference[:cut] and completion.finish_reason == "stop"
    text, streamed = drain(backend.stream(request))
    assert text == reference[:cut]  # the stop string's start was held back, never streamed
    assert streamed is not None and streamed.finish_reason == "stop"


def test_finished_callback_cuts_the_text(backend: NativeBackend, reference: str) -> None:
    seen: list[str] = []

    def finished(text: str) -> int | None:
        seen.append(text)
        return 5 if len(text) >= 8 else None

    [completion] = backend.generate(GenerationRequest(PROMPT, greedy(40), finished=finished))
    assert completion.text == reference[:5] and completion.finish_reason == "stop"
    assert completion.generated_tokens < 40 and all(reference.startswith(t) for t in seen)


def test_a_cancelled_token_stops_before_any_token(backend: NativeBackend) -> None:
    cancel = CancelToken()
    cancel.cancel()
    [completion] = backend.generate(GenerationRequest(PROMPT, greedy(40)), cancel)
    assert completion.finish_reason == "cancelled" and completion.generated_tokens == 0


def test_cancelling_mid_stream_stops_generation(backend: NativeBackend) -> None:
    cancel = CancelToken()
    stream = backend.stream(GenerationRequest(PROMPT, greedy(400)), cancel)
    next(stream)
    next(stream)
    cancel.cancel()
    _, completion = drain(stream)
    assert completion is not None and completion.finish_reason == "cancelled"
    assert completion.generated_tokens < 400


def test_closing_a_stream_early_stops_its_worker(backend: NativeBackend) -> None:
    stream = backend.stream(GenerationRequest(PROMPT, greedy(400)))
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "codeglm-native-stream"]


def test_requests_batched_in_one_engine_call_equal_each_alone(backend: NativeBackend) -> None:
    requests = [GenerationRequest(PROMPT, greedy(12), n=2), GenerationRequest(OTHER_PROMPT, greedy(12), n=2)]
    together = backend.generate_many(requests)
    assert backend.engine.last_stats.rows == 4  # one engine call decoded both
    assert together == [backend.generate(r) for r in requests]


def test_requests_with_different_settings_share_one_engine_call(backend: NativeBackend, reference: str) -> None:
    stop, cut = stop_string_in(reference)
    sampled = SamplingParams(max_new_tokens=9, temperature=0.8, top_p=0.9, seed=3)
    requests = [
        GenerationRequest(PROMPT, greedy(40), stop=(stop,)),
        GenerationRequest(OTHER_PROMPT, sampled, n=3),
        GenerationRequest(PROMPT, greedy(5)),
    ]
    heard: dict[tuple[int, int], str] = {}
    last: dict[tuple[int, int], Completion] = {}

    def listener(entry: int) -> SampleListener:
        def on_sample(index: int, delta: str, completion: Completion | None) -> None:
            assert (entry, index) not in last  # no text after a sample's completion
            heard[(entry, index)] = heard.get((entry, index), "") + delta
            if completion is not None:
                last[(entry, index)] = completion

        return on_sample

    cancel = CancelToken()
    cancel.cancel()
    entries = [BatchEntry(r, listener=listener(i)) for i, r in enumerate(requests)]
    together = backend.generate_batch([*entries, BatchEntry(GenerationRequest(PROMPT, greedy(40)), cancel)])
    assert backend.engine.last_stats.rows == 5  # one batch; the cancelled request took no row
    assert together[:3] == [backend.generate(r) for r in requests]
    assert together[0][0].text == reference[:cut] and together[2][0].text == reference[: len(together[2][0].text)]
    assert together[3] == [Completion("", "cancelled", 0)]
    assert {key: c.text for key, c in last.items()} == heard
    assert sorted(last) == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]


def test_prompts_that_do_not_fit_are_refused(backend: NativeBackend) -> None:
    long_prompt = "x = 1\n" * 400
    with pytest.raises(BackendError, match="does not fit the model's context of 512 tokens"):
        backend.generate(GenerationRequest(long_prompt, greedy(4)))
    with pytest.raises(BackendError, match="does not fit"):
        backend.stream(GenerationRequest(long_prompt, greedy(4)))
    with pytest.raises(BackendError, match="empty prompt"):
        backend.stream(GenerationRequest("", greedy(4)))


def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        load_backend(f"native:{tmp_path / 'missing'}")
    with pytest.raises(BackendError, match="no config.json"):
        load_backend(f"native:{tmp_path}")
