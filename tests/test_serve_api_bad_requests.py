"""``codeglm serve-api`` against bad requests: every field with every wrong type, numbers
out of the range the engine takes, lone surrogates in every text field, bodies that are
not UTF-8 JSON. Each gets a 4xx in one error shape, alone and sent beside valid
requests, and the valid ones are unaffected. And below the server, the batcher: a
request that fails inside the engine fails alone, not the batch it shares."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from _backends_fixtures import ServeApi, shared_tiny_model_dir

from codeglm.backends import GenerationRequest, SamplingParams, load_backend
from codeglm.backends.batch_entry import BatchEntry
from codeglm.backends.batching import BatchScheduler

PROMPT = "def fibonacci(n):\n    "
VALID = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}

# (name, raw JSON body, status, a phrase of the message). Raw text, not json.dumps, so
# that NaN, Infinity and lone surrogates reach the server as a client could send them.
BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("model not a string", b'{"prompt": "x", "model": 3}', 400, "model must be a string"),
    ("model lone surrogate", b'{"prompt": "x", "model": "m\\udfff"}', 400, "model has a lone surrogate (U+DFFF)"),
    ("prompt number", b'{"prompt": 17}', 400, "prompt must be a string or a list of strings"),
    ("prompt null", b'{"prompt": null}', 400, "prompt must be a string or a list of strings"),
    ("prompt list of numbers", b'{"prompt": [1, 2]}', 400, "prompt must be a string or a list of strings"),
    ("prompt object", b'{"prompt": {"a": 1}}', 400, "prompt must be a string or a list of strings"),
    ("prompt lone surrogate", b'{"prompt": "def f():\\ud800"}', 400, "prompt has a lone surrogate (U+D800) at character 8"),
    ("prompt list lone surrogate", b'{"prompt": ["ok", "\\udc00x"]}', 400, "prompt has a lone surrogate (U+DC00)"),
    ("max_tokens string", b'{"prompt": "x", "max_tokens": "5"}', 400, "max_tokens must be an integer >= 0"),
    ("max_tokens float", b'{"prompt": "x", "max_tokens": 5.5}', 400, "max_tokens must be an integer >= 0"),
    ("max_tokens negative", b'{"prompt": "x", "max_tokens": -1}', 400, "max_tokens must be an integer >= 0"),
    ("max_tokens 2**70", b'{"prompt": "x", "max_tokens": 1180591620717411303424}', 400, "maximum context length"),
    ("temperature string", b'{"prompt": "x", "temperature": "hot"}', 400, "temperature must be a finite number"),
    ("temperature negative", b'{"prompt": "x", "temperature": -1}', 400, "temperature must be a finite number"),
    ("temperature NaN", b'{"prompt": "x", "temperature": NaN}', 400, "temperature must be a finite number"),
    ("temperature Infinity", b'{"prompt": "x", "temperature": Infinity}', 400, "temperature must be a finite number"),
    ("temperature 1e999", b'{"prompt": "x", "temperature": 1e999}', 400, "temperature must be a finite number"),
    ("top_p zero", b'{"prompt": "x", "top_p": 0}', 400, "top_p must be a number in (0, 1]"),
    ("top_p above 1", b'{"prompt": "x", "top_p": 1.5}', 400, "top_p must be a number in (0, 1]"),
    ("top_p NaN", b'{"prompt": "x", "top_p": NaN}', 400, "top_p must be a number in (0, 1]"),
    ("top_p bool", b'{"prompt": "x", "top_p": true}', 400, "top_p must be a number in (0, 1]"),
    ("top_k negative", b'{"prompt": "x", "top_k": -3}', 400, "top_k must be an integer >= 0"),
    ("top_k float", b'{"prompt": "x", "top_k": 2.0}', 400, "top_k must be an integer >= 0"),
    ("n zero", b'{"prompt": "x", "n": 0}', 400, "n must be an integer >= 1"),
    ("n string", b'{"prompt": "x", "n": "2"}', 400, "n must be an integer >= 1"),
    ("n too large", b'{"prompt": "x", "n": 5}', 400, "n = 5 is too large"),
    ("n 2**70", b'{"prompt": "x", "n": 1180591620717411303424}', 400, "too large"),
    ("stop number", b'{"prompt": "x", "stop": 3}', 400, "stop must be a string, a list of strings or null"),
    ("stop list of numbers", b'{"prompt": "x", "stop": [3]}', 400, "stop must be a string, a list of strings"),
    ("stop lone surrogate", b'{"prompt": "x", "stop": "\\ud800"}', 400, "stop has a lone surrogate (U+D800)"),
    ("stop list lone surrogate", b'{"prompt": "x", "stop": ["a", "\\ud83d"]}', 400, "stop has a lone surrogate"),
    ("stream string", b'{"prompt": "x", "stream": "yes"}', 400, "stream must be true or false"),
    ("stream number", b'{"prompt": "x", "stream": 1}', 400, "stream must be true or false"),
    ("seed 2**70", b'{"prompt": "x", "temperature": 1, "seed": 1180591620717411303424}', 400,
     "seed must be an integer from -2**63 to 2**63-1"),
    ("seed 2**63", b'{"prompt": "x", "seed": 9223372036854775808}', 400, "seed must be an integer"),
    ("seed below -2**63", b'{"prompt": "x", "seed": -9223372036854775809}', 400, "seed must be an integer"),
    ("seed float", b'{"prompt": "x", "seed": 1.5}', 400, "seed must be an integer"),
    ("seed string", b'{"prompt": "x", "seed": "1"}', 400, "seed must be an integer"),
    ("suffix number", b'{"prompt": "x", "suffix": 1}', 400, "suffix must be a string or null"),
    ("suffix lone surrogate", b'{"prompt": "x", "suffix": "\\udc80"}', 400, "suffix has a lone surrogate (U+DC80)"),
    ("suffix without FIM", b'{"prompt": "x", "suffix": "\\n"}', 400, "no fill-in-the-middle"),
    ("echo true", b'{"prompt": "x", "echo": true}', 400, "echo is not supported"),
    ("echo string", b'{"prompt": "x", "echo": "no"}', 400, "echo must be false"),
    ("best_of differs", b'{"prompt": "x", "best_of": 3}', 400, "best_of is not supported"),
    ("best_of zero", b'{"prompt": "x", "best_of": 0}', 400, "best_of must be null or equal to n"),
    ("logprobs", b'{"prompt": "x", "logprobs": 2}', 400, "logprobs must be null"),
    ("body a list", b'["x"]', 422, "not a JSON object"),
    ("body a number", b"3", 422, "not a JSON object"),
    ("body cut short", b'{"prompt": ', 422, "not a JSON object"),
    ("body empty", b"", 422, "not a JSON object"),
    ("body not UTF-8", b'{"prompt": "\xff\xfe"}', 400, "send a JSON object encoded as UTF-8"),
    ("body nested deep", b"[" * 100_000 + b"]" * 100_000, 400, "could not be parsed"),
    ("body object nested deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "could not be parsed"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # A long batch window: bad and valid requests sent together arrive in one window.
    api = ServeApi(f"native:{shared_tiny_model_dir(tmp_path_factory)}", "--batch-window-ms", "300",
                   "--max-n", "4", "--model-name", "tiny")
    yield api
    api.stop()


def post(server: ServeApi, body: bytes, path: str = "/v1/completions") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)


def assert_error_shape(response: httpx.Response, status: int, phrase: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body  # OpenAI's shape, never FastAPI's {"detail": ...}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert phrase in error["message"], error["message"]
    assert "Traceback" not in error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")


@pytest.mark.parametrize(("name", "body", "status", "phrase"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_a_bad_body_alone_gets_a_4xx_in_the_one_error_shape(
    server: ServeApi, name: str, body: bytes, status: int, phrase: str
) -> None:
    assert_error_shape(post(server, body), status, phrase)


def test_bad_bodies_beside_valid_requests_leave_the_valid_ones_unaffected(server: ServeApi) -> None:
    alone = post(server, json.dumps(VALID).encode())
    assert alone.status_code == 200
    expected = alone.json()["choices"][0]["text"]
    seeded = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0.8, "seed": 7}
    seeded_alone = post(server, json.dumps(seeded).encode()).json()["choices"][0]["text"]
    before = server.stats()["batching"]["batches"]
    valid = [json.dumps(VALID).encode()] * 4 + [json.dumps(seeded).encode()] * 2
    with ThreadPoolExecutor(max_workers=16) as pool:
        bad = [pool.submit(post, server, body) for _, body, _, _ in BAD_BODIES]
        good = [pool.submit(post, server, body) for body in valid]
        good_results = [f.result() for f in good]
        bad_results = [f.result() for f in bad]
    for response, (_, _, status, phrase) in zip(bad_results, BAD_BODIES, strict=True):
        assert_error_shape(response, status, phrase)
    texts = [r.json()["choices"][0]["text"] for r in good_results if r.status_code == 200]
    assert texts == [expected] * 4 + [seeded_alone] * 2
    # The valid ones were batched together (fewer batches than requests), not one by one.
    assert server.stats()["batching"]["batches"] - before < len(valid)


@pytest.mark.parametrize(
    ("name", "body", "phrase"),
    [
        ("lone surrogate", b'{"prompt": "a\\ud800b"}', "prompt has a lone surrogate (U+D800) at character 1"),
        ("number", b'{"prompt": 5}', "prompt must be a string"),
        ("missing", b"{}", "prompt is required"),
        ("not UTF-8", b'{"prompt": "\xc3"}', "encoded as UTF-8"),
    ],
)
def test_tokenize_refuses_bad_text_in_the_same_shape(server: ServeApi, name: str, body: bytes, phrase: str) -> None:
    assert_error_shape(post(server, body, "/tokenize"), 400, phrase)
    assert post(server, b'{"prompt": "def f():"}', "/tokenize").json()["count"] > 0


def test_unknown_paths_and_methods_answer_in_the_same_shape(server: ServeApi) -> None:
    assert_error_shape(httpx.get(f"{server.url}/v1/chat", timeout=10), 404, "no such endpoint: /v1/chat")
    assert_error_shape(httpx.get(f"{server.url}/v1/completions", timeout=10), 405,
                       "GET is not allowed on /v1/completions")


def test_tiny_temperatures_are_greedy_not_nan(server: ServeApi) -> None:
    """Dividing float32 logits by 1e-300 overflows: such a temperature means greedy."""
    greedy = post(server, json.dumps(VALID).encode()).json()["choices"][0]["text"]
    tiny = post(server, json.dumps({**VALID, "temperature": 1e-300, "seed": 1}).encode())
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == greedy


def test_seeds_across_the_whole_64_bit_range_sample(server: ServeApi) -> None:
    for seed in (-(2**63), -1, 0, 2**63 - 1):
        body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 1.0, "seed": seed, "n": 4}
        first = post(server, json.dumps(body).encode())
        assert first.status_code == 200, first.text
        again = post(server, json.dumps(body).encode())
        assert [c["text"] for c in first.json()["choices"]] == [c["text"] for c in again.json()["choices"]]


def test_a_request_that_fails_in_the_engine_fails_alone_not_its_batch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A row error inside the real engine (here a ``finished`` callback that raises, as a
    caller's code could) fails its own request; the others batched with it get their
    completions, equal to what they get alone."""
    backend = load_backend(f"native:{shared_tiny_model_dir(tmp_path_factory)}")
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)

    def explode(text: str) -> int | None:
        raise RuntimeError("a caller's callback failed")

    good = [GenerationRequest(f"def f{i}(x):\n    ", greedy) for i in range(3)]
    expected = [backend.generate_batch([BatchEntry(r)])[0][0].text for r in good]  # type: ignore[attr-defined]
    scheduler = BatchScheduler(backend, window=0.5, max_requests=8)
    try:
        futures = [scheduler.submit(r) for r in good[:2]]
        bad = scheduler.submit(GenerationRequest(PROMPT, greedy, finished=explode))
        futures.append(scheduler.submit(good[2]))
        with pytest.raises(RuntimeError, match="a caller's callback failed"):
            bad.result(timeout=60)
        assert [f.result(timeout=60)[0].text for f in futures] == expected
        stats = scheduler.stats.snapshot()
        assert stats["isolated_batches"] == 1 and stats["largest_batch"] == 4
    finally:
        scheduler.close()


def test_a_streamed_request_that_fails_in_the_engine_fails_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    backend = load_backend(f"native:{shared_tiny_model_dir(tmp_path_factory)}")
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    calls = 0

    def explode_late(text: str) -> int | None:
        nonlocal calls
        calls += 1
        if calls > 3:  # after some text has reached the stream's caller
            raise RuntimeError("late failure")
        return None

    [[expected]] = backend.generate_batch([BatchEntry(GenerationRequest("import os\n", greedy))])  # type: ignore[attr-defined]
    scheduler = BatchScheduler(backend, window=0.5, max_requests=8)
    deltas: list[str] = []
    try:
        streamed = scheduler.submit(GenerationRequest(PROMPT, greedy, finished=explode_late), None,
                                    lambda k, delta, done: deltas.append(delta))
        other = scheduler.submit(GenerationRequest("import os\n", greedy))
        with pytest.raises(RuntimeError, match="late failure"):
            streamed.result(timeout=60)
        assert other.result(timeout=60)[0].text == expected.text
    finally:
        scheduler.close()
