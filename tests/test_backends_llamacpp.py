"""The ``openai`` backend against a server that is not ours: llama.cpp's, through
llama-cpp-python's ``python -m llama_cpp.server``, started here on a loopback port over
a small random Llama written to an f32 GGUF (tests/_llamacpp_fixtures.py).

The same weights run in this project's engine (``native:DIR``), so most answers are
checked against it token for token: greedy text, FIM, stop strings, token counts.
The server's quirks (``n`` ignored, its own sampling defaults, a broken ``suffix``, no
``/tokenize``, streams cut short on failure) are handled in the backend
(codeglm/backends/openai_server.py); these tests go through ``openai:URL#MODEL`` only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _llamacpp_fixtures import (
    MODEL_ALIAS,
    QWEN_FIM,
    LlamaCppServer,
    as_llama_cpp_python_decodes,
    free_port,
    llamacpp_missing,
    make_llama_dir,
)

from codeglm.backends import BackendError, CancelToken, GenerationRequest, SamplingParams, load_backend
from codeglm.backends.openai import OpenAIBackend
from codeglm.backends.openai_server import LLAMA_CPP_PYTHON
from codeglm.backends.worker_stream import drain

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(llamacpp_missing() is not None, reason=str(llamacpp_missing())),
]

PROMPTS = [
    "def fibonacci(n: int) -> int:\n    ",
    "import os\nfor name in os.listdir('.'):\n",
    "public class Main {\n    public static void main(String[] args) {\n",
]
CROSS_TOKENS = 32


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=tokens)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from codeglm.model.gguf_export import write_gguf

    directory = make_llama_dir(tmp_path_factory.mktemp("tiny-llama") / "model")
    gguf = directory.parent / "model-f32.gguf"
    write_gguf(directory, gguf)
    return directory, gguf


@pytest.fixture(scope="module")
def server(model_files: tuple[Path, Path]) -> Iterator[LlamaCppServer]:
    _, gguf = model_files
    running = LlamaCppServer(gguf, gguf.parent / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def remote(server: LlamaCppServer) -> Iterator[OpenAIBackend]:
    backend = load_backend(server.backend_spec())
    assert isinstance(backend, OpenAIBackend)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def native(model_files: tuple[Path, Path]) -> Iterator[Any]:
    backend = load_backend(f"native:{model_files[0]}")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_tokenizer(model_files: tuple[Path, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_files[0]))


def test_llama_cpp_splits_text_exactly_as_transformers_does(server: LlamaCppServer, hf_tokenizer: Any) -> None:
    """The premise of every comparison below: the GGUF tokenizer round-trips like the HF one."""
    texts = [*PROMPTS, "x  =  [1,2,3]\t# tabs\tand  spaces\n\n", "naïve café → 日本語 ✓", "".join(QWEN_FIM) + "a"]
    for text in texts:
        answer = httpx.post(f"{server.url}/extras/tokenize", json={"input": text}, timeout=30).json()
        assert answer["tokens"] == hf_tokenizer.encode(text, add_special_tokens=False), text


def test_the_backend_recognises_llama_cpp_python_and_its_fim_markers(remote: OpenAIBackend) -> None:
    dialect = remote.dialect
    assert dialect.kind == LLAMA_CPP_PYTHON and dialect.one_choice_per_request
    assert dialect.fim_markers == QWEN_FIM and remote.supports_fim
    assert dialect.neutral_sampling == {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}


def test_token_counts_are_exact(remote: OpenAIBackend, hf_tokenizer: Any) -> None:
    for text in PROMPTS:
        assert remote.count_tokens(text) == len(hf_tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_text_equals_the_native_engines_on_the_same_weights(
    remote: OpenAIBackend, native: Any, prompt: str
) -> None:
    """Cross-engine agreement; needs repeat_penalty 1.0 sent (llama-cpp-python's default is 1.1)."""
    request = GenerationRequest(prompt, greedy(CROSS_TOKENS))
    [want] = native.generate(request)
    assert want.generated_tokens == CROSS_TOKENS and want.finish_reason == "length"
    [got] = remote.generate(request)
    expected = as_llama_cpp_python_decodes(want.text)
    assert (got.text, got.finish_reason, got.generated_tokens) == (expected, "length", CROSS_TOKENS)
    text, completion = drain(remote.stream(request), lambda delta: None)
    assert text == expected and completion is not None and completion.finish_reason == "length"


def test_streaming_gives_the_text_in_several_deltas(remote: OpenAIBackend, native: Any) -> None:
    request = GenerationRequest(PROMPTS[0], greedy(CROSS_TOKENS))
    deltas = list(remote.stream(request))
    assert len(deltas) > 3 and "".join(deltas) == as_llama_cpp_python_decodes(native.generate(request)[0].text)


def test_stop_strings_cut_where_the_native_engine_cuts(remote: OpenAIBackend, native: Any) -> None:
    [full] = native.generate(GenerationRequest(PROMPTS[0], greedy(CROSS_TOKENS)))
    assert "\ufffd" not in full.text  # all UTF-8 (see as_llama_cpp_python_decodes), so stops fall alike
    stop = full.text[len(full.text) // 2: len(full.text) // 2 + 3]  # a piece from the middle
    request = GenerationRequest(PROMPTS[0], greedy(CROSS_TOKENS), stop=(stop,))
    [want] = native.generate(request)
    assert want.finish_reason == "stop" and stop not in want.text
    [got] = remote.generate(request)
    assert (got.text, got.finish_reason) == (want.text, "stop")
    text, completion = drain(remote.stream(request), lambda delta: None)
    assert text == want.text and completion is not None and completion.finish_reason == "stop"


def test_n_samples_from_a_server_that_answers_one_choice(remote: OpenAIBackend) -> None:
    """llama-cpp-python ignores ``n``: the backend asks once per sample, sample k seeded seed + k."""
    params = SamplingParams(temperature=0.9, max_new_tokens=12, seed=7)
    samples = remote.generate(GenerationRequest(PROMPTS[0], params, n=3))
    assert len(samples) == 3 and len({s.text for s in samples}) > 1
    for k, sample in enumerate(samples):
        [alone] = remote.generate(GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.9, max_new_tokens=12, seed=7 + k)))
        assert alone.text == sample.text
    # Streamed (a finished callback forces the streaming path) and greedy: all equal.
    streamed = remote.generate(GenerationRequest(PROMPTS[0], greedy(8), n=2, finished=lambda text: None))
    assert len(streamed) == 2 and streamed[0].text == streamed[1].text != ""


def test_fim_matches_the_native_engines_prefix_suffix_middle_prompt(remote: OpenAIBackend, native: Any) -> None:
    """llama-cpp-python's ``suffix`` puts token 0 where the FIM markers go: the backend lays
    the prompt out itself, and gets what the native engine's FIM prompt gives."""
    request = GenerationRequest("def area(r):\n    return ", greedy(CROSS_TOKENS), suffix="\n\nprint(area(2))\n")
    assert native.supports_fim and remote.supports_fim
    [want] = native.generate(request)
    [got] = remote.generate(request)
    assert got.text == as_llama_cpp_python_decodes(want.text)
    [without_suffix] = native.generate(GenerationRequest(request.prompt, greedy(CROSS_TOKENS)))
    assert want.text != without_suffix.text  # the suffix mattered
    # Why the backend does not send `suffix`: the server's own FIM prompt is not the model's.
    body = {"prompt": request.prompt, "suffix": request.suffix, "max_tokens": CROSS_TOKENS, "temperature": 0,
            **remote.dialect.neutral_sampling}
    served = httpx.post(f"{remote.root}/completions", json=body, timeout=60).json()["choices"][0]["text"]
    assert served != got.text


def test_max_tokens_is_clipped_to_the_context(remote: OpenAIBackend, native: Any, server: LlamaCppServer) -> None:
    """The server's context is 2048; a prompt of ~2030 tokens leaves room for a few only."""
    unit = "x = 1\n"
    per_unit = remote.count_tokens(unit * 10) // 10
    prompt = unit * ((2048 - 20) // per_unit)
    used = remote.count_tokens(prompt)
    assert 2048 - 30 < used < 2048
    for backend in (remote, load_backend(server.backend_spec("retries=0&context=2048"))):
        [got] = backend.generate(GenerationRequest(prompt, greedy(200)))
        assert got.finish_reason == "length" and got.generated_tokens <= 2048 - used
    too_long = GenerationRequest(unit * (2100 // per_unit), greedy(8))
    learner = load_backend(server.backend_spec())  # no context=: llama-cpp-python lists none
    with pytest.raises(BackendError, match="maximum context length is 2048 tokens"):
        learner.generate(too_long)
    # Learned from the refusal: the next too-long prompt is refused here, before sending.
    with pytest.raises(BackendError, match="fills the model's context of 2048 tokens: shorten it"):
        learner.generate(too_long)
    # Streamed, the server ends the stream without [DONE] and resets the connection.
    with pytest.raises(BackendError, match=r"ended the stream before it was done \(no \[DONE\]\)"):
        list(remote.stream(GenerationRequest(unit * (2100 // per_unit), greedy(8))))
    [after] = remote.generate(GenerationRequest(PROMPTS[0], greedy(2)))  # not on the reset connection
    assert after.generated_tokens == 2


def test_cancelling_mid_stream_stops_the_servers_generation(remote: OpenAIBackend, server: LlamaCppServer) -> None:
    """After a cancel the server must not go on generating: the next request is served at
    once, not after the rest of the cancelled one (the server runs one at a time)."""
    long_tokens = 1900
    started = time.monotonic()
    [full] = remote.generate(GenerationRequest(PROMPTS[0], greedy(long_tokens)))
    full_seconds = time.monotonic() - started
    assert full.generated_tokens > 1000  # a long generation: seconds of work left to cancel

    cancel = CancelToken()
    stream = remote.stream(GenerationRequest(PROMPTS[0], greedy(long_tokens)), cancel)
    received = ""
    cancelled_at = math.inf
    for delta in stream:
        received += delta
        if len(received) > 10 and not cancel.cancelled:
            cancel.cancel()
            cancelled_at = time.monotonic()
    # The backend let go at once (it did not read the rest of the stream first).
    assert len(received) < len(full.text) / 4 and time.monotonic() - cancelled_at < full_seconds / 2
    started = time.monotonic()
    [short] = remote.generate(GenerationRequest(PROMPTS[1], greedy(4)))
    assert short.generated_tokens == 4
    assert time.monotonic() - started < full_seconds / 2, (time.monotonic() - started, full_seconds)
    deadline = time.monotonic() + 10
    while "Disconnected from client" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Disconnected from client" in server.log()


@pytest.fixture
def doomed_server(model_files: tuple[Path, Path], tmp_path: Path) -> Iterator[LlamaCppServer]:
    running = LlamaCppServer(model_files[1], tmp_path / "doomed.log")
    yield running
    running.stop()


@pytest.mark.parametrize("streamed", [True, False])
def test_a_server_that_dies_mid_request_is_a_clear_error_not_a_hang(
    doomed_server: LlamaCppServer, streamed: bool
) -> None:
    backend = load_backend(doomed_server.backend_spec("retries=1&backoff=0.1&timeout=20"))
    request = GenerationRequest(PROMPTS[0], greedy(1900))
    backend.count_tokens("warm up the probes")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if streamed:
                for _ in backend.stream(request):
                    doomed_server.kill()
            else:
                backend.generate(request)
        except BaseException as error:  # noqa: BLE001 (checked below)
            errors.append(error)

    worker = threading.Thread(target=run)
    started = time.monotonic()
    worker.start()
    if not streamed:
        time.sleep(0.3)  # the whole request is being generated
        doomed_server.kill()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the backend hung after the server died"
    assert time.monotonic() - started < 25
    assert len(errors) == 1 and isinstance(errors[0], BackendError), errors
    message = str(errors[0])
    assert doomed_server.url in message
    assert ("broke during generation" in message) if streamed else ("cannot reach" in message)


def test_a_server_that_is_not_there_is_a_clear_error_naming_the_url() -> None:
    port = free_port()  # bound and released: nothing listens there
    backend = load_backend(f"openai:http://127.0.0.1:{port}/v1#{MODEL_ALIAS}?retries=1&backoff=0.1&timeout=2")
    assert backend.supports_fim is False  # unknown until the server answers; asked again later
    with pytest.raises(BackendError) as caught:
        backend.generate(GenerationRequest(PROMPTS[0], greedy(4)))
    assert f"http://127.0.0.1:{port}/v1/completions" in str(caught.value)
    assert "check that the server is running" in str(caught.value)
