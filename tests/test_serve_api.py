"""``codeglm serve-api`` running for real on loopback, used by the ``openai`` backend
and by raw HTTP: streaming and not, several clients at once (batched), a client that
disconnects mid-stream, bad requests, and an unreachable server."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _backends_fixtures import ServeApi, free_port, save_gpt2, shared_tiny_model_dir

from codeglm.backends import BackendError, CancelToken, GenerationRequest, SamplingParams, load_backend
from codeglm.backends.openai import OpenAIBackend
from codeglm.backends.worker_stream import drain

PROMPT = "def fibonacci(n):\n    "
CONTEXT = 2048
LONG = 2000  # tokens: a generation that a disconnect interrupts
PROMPTS = [f"def function_{i}(x):\n    return x * {i}\n\n" for i in range(6)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A long context so that a long generation takes seconds: disconnects land mid-way.
    return shared_tiny_model_dir(tmp_path_factory, context=CONTEXT)


@pytest.fixture(scope="module")
def server(model_dir: Path):
    # A long batch window makes "arrived together" certain on a busy machine.
    api = ServeApi(f"native:{model_dir}", "--batch-window-ms", "300", "--max-n", "4", "--model-name", "tiny")
    yield api
    api.stop()


@pytest.fixture(scope="module")
def remote(server: ServeApi) -> OpenAIBackend:
    backend = load_backend(f"openai:{server.url}/v1#tiny?retries=0&timeout=60")
    assert isinstance(backend, OpenAIBackend)
    return backend


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=tokens, temperature=0.0)


def test_models_and_model_facts(server: ServeApi, remote: OpenAIBackend) -> None:
    listing = httpx.get(f"{server.url}/v1/models").json()
    assert listing["object"] == "list" and listing["data"][0]["id"] == "tiny"
    assert remote.context_length == CONTEXT
    local = load_backend(f"native:{server_model(server)}")
    assert remote.count_tokens("def f():\n        pass") == local.count_tokens("def f():\n        pass")


def server_model(server: ServeApi) -> str:
    return server.process.args[server.process.args.index("--backend") + 1].removeprefix("native:")


def test_openai_backend_matches_the_model_run_locally(server: ServeApi, remote: OpenAIBackend) -> None:
    local = load_backend(f"native:{server_model(server)}")
    request = GenerationRequest(PROMPT, greedy(30))
    [expected] = local.generate(request)
    [whole] = remote.generate(request)
    assert (whole.text, whole.finish_reason) == (expected.text, "length")
    deltas: list[str] = []
    text, streamed = drain(remote.stream(request), deltas.append)
    assert text == expected.text and len(deltas) > 1
    assert streamed is not None and streamed.finish_reason == "length"
    stop = expected.text[10:13]
    [cut] = remote.generate(GenerationRequest(PROMPT, greedy(30), stop=(stop,)))
    assert cut.text == expected.text[: expected.text.find(stop)] and cut.finish_reason == "stop"


def test_raw_response_shapes(server: ServeApi) -> None:
    body = {"model": "tiny", "prompt": [PROMPT, "import os\n"], "max_tokens": 5, "temperature": 0, "n": 2}
    answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert answer["object"] == "text_completion" and [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert all(c["finish_reason"] == "length" for c in answer["choices"])
    assert answer["usage"]["completion_tokens"] == 20
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[5:]) for line in lines[:-1]]
    texts = ["".join(e["choices"][0]["text"] for e in events if e["choices"][0]["index"] == i) for i in range(4)]
    assert texts == [c["text"] for c in answer["choices"]]  # greedy: streamed equals whole


def test_several_clients_at_once_are_batched(server: ServeApi, remote: OpenAIBackend) -> None:
    before = server.stats()["batching"]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            [completion] = remote.generate(GenerationRequest(PROMPTS[i], greedy(20)))
            results[i] = completion.text
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    streamed: list[str] = []
    stream_thread = threading.Thread(target=lambda: streamed.append(drain(remote.stream(GenerationRequest(PROMPT, greedy(20))))[0]))
    for thread in [*threads, stream_thread]:
        thread.start()
    for thread in [*threads, stream_thread]:
        thread.join(timeout=120)
    assert not errors and sorted(results) == list(range(len(PROMPTS))) and len(streamed) == 1
    after = server.stats()["batching"]
    requests = after["requests"] - before["requests"]
    calls = after["backend_calls"] - before["backend_calls"]
    assert requests == len(PROMPTS) + 1  # the stream too: it may share their batch
    assert calls < requests and after["largest_batch"] >= 2
    # Batching does not change greedy results.
    [alone] = remote.generate(GenerationRequest(PROMPTS[3], greedy(20)))
    assert results[3] == alone.text


def wait_for(condition, seconds: float = 30.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass
class StreamRead:
    """What a raw streaming client saw: text and finish reason per choice index."""

    texts: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    done: bool = False  # the stream ended with data: [DONE]
    chunks: int = 0
    leave: threading.Event = field(default_factory=threading.Event)  # set: disconnect at the next chunk


def read_stream(server: ServeApi, body: dict, seen: StreamRead, leave_after: int | None = None) -> None:
    """Stream a completion into ``seen``; with ``leave_after``, disconnect after that many chunks."""
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            if line == "data: [DONE]":
                seen.done = True
                return
            choice = json.loads(line[5:])["choices"][0]
            seen.chunks += 1
            seen.texts[choice["index"]] = seen.texts.get(choice["index"], "") + choice["text"]
            if choice["finish_reason"]:
                seen.reasons[choice["index"]] = choice["finish_reason"]
            if seen.leave.is_set() or (leave_after is not None and seen.chunks >= leave_after):
                return  # leaving the block closes the connection


def run_clients(clients: list[tuple[dict, StreamRead, int | None]], server: ServeApi) -> None:
    errors: list[BaseException] = []

    def client(body: dict, seen: StreamRead, leave_after: int | None) -> None:
        try:
            read_stream(server, body, seen, leave_after)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=args) for args in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_concurrent_streams_share_engine_batches_and_a_leaver_does_not_break_them(server: ServeApi) -> None:
    greedy_body = {"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}
    whole = httpx.post(f"{server.url}/v1/completions", json=greedy_body, timeout=60).json()["choices"][0]["text"]
    stop = whole[8:11]
    bodies = [
        greedy_body,
        {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0},
        {**greedy_body, "stop": [stop]},
        {"prompt": PROMPTS[2], "max_tokens": 16, "temperature": 0.8, "top_p": 0.9, "seed": 7, "n": 2},
    ]
    expected = [httpx.post(f"{server.url}/v1/completions", json=b, timeout=60).json()["choices"] for b in bodies]
    before = server.stats()
    reads = [StreamRead() for _ in bodies]
    leaver = StreamRead()
    leaver_body = {"prompt": PROMPT, "max_tokens": LONG, "temperature": 0}
    run_clients([*((b, r, None) for b, r in zip(bodies, reads, strict=True)), (leaver_body, leaver, 3)], server)

    for read, choices in zip(reads, expected, strict=True):
        assert read.done
        assert read.texts == {c["index"]: c["text"] for c in choices}  # streamed equals whole, seeded n=2 too
        assert read.reasons == {c["index"]: c["finish_reason"] for c in choices}
    assert reads[2].reasons[0] == "stop" and reads[2].texts[0] == whole[: whole.find(stop)]
    assert not leaver.done
    after = wait_for(lambda: (s := server.stats())["streams"]["active"] == 0 and s)
    requests = after["batching"]["requests"] - before["batching"]["requests"]
    streamed = after["batching"]["streamed"] - before["batching"]["streamed"]
    calls = after["batching"]["backend_calls"] - before["batching"]["backend_calls"]
    assert requests == streamed == len(bodies) + 1
    assert calls < requests  # streams were decoded together
    assert after["streams"]["cancelled"] == before["streams"]["cancelled"] + 1
    assert after["streams"]["cancelled_generated_tokens"][-1] < LONG


def test_a_short_stream_ends_before_the_long_one_in_its_batch(server: ServeApi) -> None:
    before = server.stats()
    short, long = StreamRead(), StreamRead()
    long_thread = threading.Thread(
        target=read_stream, args=(server, {"prompt": PROMPT, "max_tokens": LONG, "temperature": 0}, long)
    )
    long_thread.start()
    time.sleep(0.05)  # well inside the batch window: both join one batch
    read_stream(server, {"prompt": PROMPTS[4], "max_tokens": 8, "temperature": 0}, short)
    chunks_when_short_ended = long.chunks
    assert short.done and short.reasons == {0: "length"}
    wait_for(lambda: long.chunks > chunks_when_short_ended + 5)  # the long one is still being generated
    assert not long.done
    long.leave.set()
    long_thread.join(timeout=60)
    after = wait_for(lambda: (s := server.stats())["streams"]["active"] == 0 and s)
    assert after["batching"]["backend_calls"] - before["batching"]["backend_calls"] == 1  # one batch held both
    assert after["streams"]["cancelled"] == before["streams"]["cancelled"] + 1


def test_max_tokens_beyond_the_room_left_is_a_400_like_vllm(server: ServeApi) -> None:
    prompt_tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": PROMPT}).json()["count"]
    room = CONTEXT - prompt_tokens
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": room + 1}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens"
    assert error["message"] == (
        f"This model's maximum context length is {CONTEXT} tokens. However, you requested {CONTEXT + 1} tokens "
        f"({prompt_tokens} in the prompt, {room + 1} for the completion). "
        f"Reduce the prompt or max_tokens (at most {room} with this prompt)."
    )
    body = {"prompt": [PROMPT, "x = 1\n" * 200], "max_tokens": room, "stream": True}
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 400 and "in the prompt 1," in response.json()["error"]["message"]


def test_the_openai_backend_clips_max_tokens_to_the_room_left_like_the_native_engine(
    server: ServeApi, remote: OpenAIBackend
) -> None:
    unit = "x = 1\n" * 100
    per_unit = remote.count_tokens(unit)
    prompt = unit * ((CONTEXT - 40) // per_unit) + PROMPT
    room = CONTEXT - remote.count_tokens(prompt)
    assert 0 < room < 60
    request = GenerationRequest(prompt, greedy(room + 100))  # more than fits: vLLM would answer 400
    [expected] = load_backend(f"native:{server_model(server)}").generate(request)
    [whole] = remote.generate(request)
    assert (whole.text, whole.finish_reason) == (expected.text, "length")
    text, streamed = drain(remote.stream(request), lambda delta: None)
    assert text == expected.text and streamed is not None and streamed.finish_reason == "length"
    with pytest.raises(BackendError, match=f"fills the model's context of {CONTEXT} tokens: shorten it"):
        remote.generate(GenerationRequest(unit * (CONTEXT // per_unit + 1), greedy(8)))


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(server: ServeApi) -> None:
    before = server.stats()["streams"]["cancelled"]
    body = {"prompt": PROMPT, "max_tokens": LONG, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        chunks = 0
        for line in response.iter_lines():
            chunks += line.startswith("data:")
            if chunks == 3:
                break  # leaving the block closes the connection
    stats = wait_for(lambda: (s := server.stats()["streams"])["cancelled"] > before and s["active"] == 0 and s)
    assert stats["cancelled_generated_tokens"][-1] < LONG


def test_a_client_that_gives_up_on_a_whole_completion_cancels_it(server: ServeApi) -> None:
    before = server.stats()["batching"]["cancelled"]
    body = {"prompt": PROMPT, "max_tokens": LONG, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_for(lambda: server.stats()["batching"]["cancelled"] > before)


def test_closing_the_openai_backends_stream_cancels_on_the_server(server: ServeApi, remote: OpenAIBackend) -> None:
    before = server.stats()["streams"]["cancelled"]
    stream = remote.stream(GenerationRequest(PROMPT, greedy(LONG)))
    next(stream)
    stream.close()
    wait_for(lambda: server.stats()["streams"]["cancelled"] > before)


def test_finished_callback_and_cancel_through_the_openai_backend(remote: OpenAIBackend) -> None:
    [completion] = remote.generate(
        GenerationRequest(PROMPT, greedy(100), finished=lambda text: 4 if len(text) >= 6 else None)
    )
    assert len(completion.text) == 4 and completion.finish_reason == "stop"
    cancel = CancelToken()
    cancel.cancel()
    [cancelled] = remote.generate(GenerationRequest(PROMPT, greedy(100)), cancel)
    assert cancelled.finish_reason == "cancelled" and len(cancelled.text) < 100


@pytest.mark.parametrize(
    ("body", "status", "complaint"),
    [
        ({"prompt": PROMPT, "max_tokens": "5"}, 400, "max_tokens must be an integer >= 0"),
        ({"prompt": 17}, 400, "prompt must be a string or a list of strings"),
        ({"prompt": PROMPT, "temperature": -1}, 400, "temperature must be a finite number >= 0"),
        ({"prompt": PROMPT, "stream": "yes"}, 400, "stream must be true or false"),
        ({"max_tokens": 5}, 400, "prompt is required"),
        ({"prompt": PROMPT, "n": 5}, 400, "n = 5 is too large"),
        ({"prompt": "x = 1\n" * 1200}, 400, "the model's context is 2048 tokens"),
        ({"prompt": ""}, 400, "prompt is empty"),
        ({"prompt": []}, 400, "empty list"),
        ({"prompt": PROMPT, "suffix": "\n"}, 400, "no fill-in-the-middle"),
        ([PROMPT], 422, "not a JSON object"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server: ServeApi, body: object, status: int, complaint: str) -> None:
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == status
    assert complaint in response.json()["error"]["message"]


def test_malformed_json_is_422_and_the_server_lives_on(server: ServeApi, remote: OpenAIBackend) -> None:
    response = httpx.post(
        f"{server.url}/v1/completions", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "not a JSON object" in response.json()["error"]["message"]
    with pytest.raises(BackendError, match=r"refused the request \(HTTP 400\): n = 9 is too large"):
        remote.generate(GenerationRequest(PROMPT, greedy(4), n=9))
    assert len(remote.generate(GenerationRequest(PROMPT, greedy(3)))) == 1


def test_an_unreachable_server_is_a_clear_error_after_retries() -> None:
    port = free_port()  # bound and released: nothing listens there
    backend = load_backend(f"openai:http://127.0.0.1:{port}/v1#m?retries=2&backoff=0.1&timeout=2")
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        backend.generate(GenerationRequest(PROMPT, greedy(4)))
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/v1/completions" in message and "after 3 attempts" in message
    assert "ConnectError" in message and "check that the server is running" in message
    assert time.monotonic() - started >= 0.3  # waited 0.1 + 0.2 between the attempts
    with pytest.raises(BackendError, match="after 3 attempts"):
        list(backend.stream(GenerationRequest(PROMPT, greedy(4))))


def test_the_api_in_front_of_an_hf_backend(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from codeglm.backends.hf import HFBackend
    from codeglm.server.api import create_app

    backend = HFBackend.load(str(save_gpt2(tmp_path)))
    [expected] = backend.generate(GenerationRequest(PROMPT, greedy(8)))
    with TestClient(create_app(backend)) as client:
        body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}
        answer = client.post("/v1/completions", json=body).json()
        assert answer["choices"][0]["text"] == expected.text
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected.text
        assert client.post("/v1/completions", json={"prompt": "x " * 200}).status_code == 400  # context 128
