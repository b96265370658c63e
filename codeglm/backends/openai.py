"""The ``openai`` backend: any OpenAI-compatible ``/v1/completions`` server.

vLLM, TGI, llama.cpp's server and ``codeglm serve-api`` all speak it. Requests are
retried with exponential backoff (``backoff * 2**attempt`` seconds, or the server's
``Retry-After``) after connection errors, timeouts, 429 and 5xx; other 4xx answers
are reported at once. A generation with a ``finished`` callback or a cancel token is
streamed, so it can stop early: closing the stream disconnects, and a server that
cancels on disconnect (serve-api, vLLM) stops generating.

Token counts: with ``tokenizer=PATH`` (a tokenizer.json or a directory holding one)
they are exact; otherwise the server's ``/tokenize`` (serve-api, vLLM) is asked;
failing that they are estimated as one token per three bytes of UTF-8, which
over-counts typical code, so prompt budgets err on the safe side.

``max_tokens`` is clipped to the room the prompt leaves in the model's context when
both are known exactly (the context given or listed by the server as
``max_model_len``, tokens counted exactly): the native engine stops at the context's
end as well, where vLLM would refuse the whole request.

What kind of server it is (llama-cpp-python's quirks: ``n`` ignored, its own sampling
defaults, a broken ``suffix``) is probed once and remembered: see ``openai_server.py``.

Threads: one backend may be called from several threads at once (``codeglm eval generate
--concurrency N``). Requests share one httpx client (its connection pool is thread-safe);
what is asked of the server once (the model, its dialect, context length and token
counter) is asked under a lock, so the first callers wait for one probe instead of each
sending their own; replacing the client after a broken stream happens under that lock.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from codeglm.backends.base import BackendError, CancelToken, Completion, GenerationRequest
from codeglm.backends.openai_server import GENERIC, ServerDialect, probe_dialect
from codeglm.inference.text_rules import Sample, first_stop

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_CONTEXT = 2048
BYTES_PER_TOKEN_ESTIMATE = 3
MAX_RETRY_AFTER = 30.0
# After a failed probe of what the server is, wait this long before probing again (a host
# that drops packets would otherwise cost a connect timeout at every look).
PROBE_AGAIN_AFTER = 10.0
CONTEXT_IN_ERROR = re.compile(r"maximum context length is (\d+) tokens")


def api_root(url: str) -> str:
    """``http://host:8000``, ``.../v1`` and ``.../v1/`` all give ``http://host:8000/v1``."""
    root = url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:500]


class OpenAIBackend:
    """``Backend`` over HTTP. ``model`` None: the first model the server lists."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        tokenizer: str | None = None,
        context: int | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        fim: bool | None = None,
    ) -> None:
        self.root = api_root(url)
        self._model = model
        self.name = f"openai:{url}" + (f"#{model}" if model else "")
        self.retries = retries
        self.backoff = backoff
        self._fim = fim
        self._dialect: ServerDialect | None = None
        self._probe_failed_at = -math.inf
        self._context = context
        self._context_known = context is not None
        self._tokenizer_path = tokenizer
        self._count: Callable[[str], int] | None = None
        # Guards the facts asked of the server once (and the client's replacement). Reentrant:
        # probing the dialect asks for the model, choosing the token counter for the dialect.
        self._facts_lock = threading.RLock()
        api_key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._new_client = lambda: httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers)
        self._client = self._new_client()

    # --- the server's facts, asked for lazily ---------------------------------------

    @property
    def model(self) -> str:
        if self._model is None:
            with self._facts_lock:
                if self._model is None:
                    models = self._models()
                    if not models:
                        raise BackendError(
                            f"the server at {self.root} lists no models: name one with openai:URL#MODEL"
                        )
                    self._model = str(models[0]["id"])
        return self._model

    def _models(self) -> list[dict[str, Any]]:
        response = self._request("GET", "/models")
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as error:
            raise BackendError(f"{self.root}/models did not answer with a model list: {error}") from error
        return [m for m in data if isinstance(m, dict) and "id" in m]

    @property
    def dialect(self) -> ServerDialect:
        """What the server is (probed once; see ``openai_server.py``). While the server
        cannot be reached, the generic dialect stands in and the probe is tried again
        next time, so a server started after the backend is still identified."""
        if self._dialect is not None:
            return self._dialect
        with self._facts_lock:
            if self._dialect is not None:
                return self._dialect
            if time.monotonic() - self._probe_failed_at < PROBE_AGAIN_AFTER:
                return ServerDialect(kind=GENERIC)
            server_root = self.root.removesuffix("/v1")
            try:
                self._dialect = probe_dialect(
                    lambda path, body: self._client.post(server_root + path, json=body), self.model
                )
            except (httpx.TransportError, BackendError):
                self._probe_failed_at = time.monotonic()
                return ServerDialect(kind=GENERIC)
            return self._dialect

    @property
    def supports_fim(self) -> bool:
        """``fim=true``/``false`` as given; by default, whether the server takes a FIM prompt
        the backend can lay out itself (the model's FIM markers found by probing)."""
        if self._fim is not None:
            return self._fim
        return self.dialect.fim_markers is not None

    def _prompt_text(self, request: GenerationRequest) -> str:
        """The prompt as sent: with a suffix and client-side FIM markers, prefix-suffix-middle."""
        markers = self.dialect.fim_markers
        if request.suffix is not None and self.supports_fim and markers is not None:
            before, after, middle = markers
            return f"{before}{request.prompt}{after}{request.suffix}{middle}"
        return request.prompt

    @property
    def context_length(self) -> int:
        if self._context is not None:
            return self._context
        with self._facts_lock:
            if self._context is None:
                context, known = DEFAULT_CONTEXT, False
                try:
                    for entry in self._models():
                        if entry["id"] == self.model and isinstance(entry.get("max_model_len"), int):
                            context, known = entry["max_model_len"], True
                except BackendError:
                    pass  # the default stands; generation will report the server's state
                self._context_known = known  # before the context: a reader sees both or neither
                self._context = context
            return self._context

    def count_tokens(self, text: str) -> int:
        if self._count is None:
            with self._facts_lock:
                if self._count is None:
                    self._count = self._choose_counter()
        return self._count(text)

    def _choose_counter(self) -> Callable[[str], int]:
        if self._tokenizer_path is not None:
            from tokenizers import Tokenizer  # deferred: only with a local tokenizer file

            path = Path(self._tokenizer_path).expanduser()
            file = path / "tokenizer.json" if path.is_dir() else path
            try:
                tokenizer = Tokenizer.from_file(str(file))
            except Exception as error:  # tokenizers raises its own exception type
                raise BackendError(f"cannot read the tokenizer {file}: {error}") from error
            return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
        server_root = self.root.removesuffix("/v1")
        dialect = self.dialect

        @lru_cache(maxsize=256)
        def ask_server(text: str) -> int:
            response = self._client.post(
                f"{server_root}{dialect.count_path}", json={"model": self.model, dialect.count_field: text}
            )
            response.raise_for_status()
            return int(response.json()["count"])

        try:
            ask_server("probe")
        except (httpx.HTTPError, BackendError, ValueError, KeyError, TypeError):
            return estimate_tokens
        return ask_server

    # --- HTTP with retries ------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, stream: bool = False,
        cancel: CancelToken | None = None,
    ) -> httpx.Response:
        """Send, retrying transient failures; the response is open when ``stream``."""
        url = self.root + path
        problem = ""
        attempts = self.retries + 1
        for attempt in range(attempts):
            delay = self.backoff * 2**attempt
            client = self._client  # one client per attempt: another thread may replace it
            try:
                request = client.build_request(method, url, json=body)
                response = client.send(request, stream=stream)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            except RuntimeError:
                if client is self._client:
                    raise
                problem = "the connection pool was replaced after a broken stream"  # see _replace_client
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                if response.status_code not in RETRY_STATUSES:
                    response.close()
                    message = _error_message(response)
                    self._learn_context(message)
                    raise BackendError(f"the server at {url} refused the request (HTTP {response.status_code}): {message}")
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                retry_after = response.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), MAX_RETRY_AFTER)
                response.close()
            if attempt + 1 < attempts:
                self._sleep(delay, cancel)
        raise BackendError(
            f"cannot reach the OpenAI-compatible server at {url} after {attempts} attempt"
            f"{'s' if attempts > 1 else ''} ({problem}): check that the server is running and that the URL "
            "in the backend string openai:URL#MODEL is right"
        )

    def _learn_context(self, message: str) -> None:
        """Take the context length from a refusal that states it ("This model's maximum
        context length is N tokens": vLLM, llama-cpp-python and serve-api word it so), so
        later prompts are budgeted and clipped against it: llama-cpp-python lists no
        context anywhere else."""
        stated = CONTEXT_IN_ERROR.search(message)
        if stated:
            with self._facts_lock:
                self._context = int(stated.group(1))
                self._context_known = True

    @staticmethod
    def _sleep(seconds: float, cancel: CancelToken | None) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if cancel is not None and cancel.cancelled:
                return
            time.sleep(min(left, 0.05))

    def _max_tokens(self, request: GenerationRequest) -> int:
        """``max_new_tokens``, clipped to the room the prompt leaves in the context when
        both are known exactly (see the module's text)."""
        wanted = request.params.max_new_tokens
        context = self.context_length
        if not self._context_known:
            return wanted
        sent = self._prompt_text(request)
        if request.suffix is not None and self.supports_fim and self.dialect.fim_markers is None:
            sent += request.suffix
        used = self.count_tokens(sent)
        if self._count is estimate_tokens:  # an estimate could cut a completion short
            return wanted
        if used >= context:
            raise BackendError(f"the prompt of {used} tokens fills the model's context of {context} tokens: shorten it")
        return min(wanted, context - used)

    def _body(self, request: GenerationRequest, n: int, stream: bool) -> dict[str, Any]:
        params = request.params
        dialect = self.dialect
        body: dict[str, Any] = {
            **dialect.neutral_sampling,  # what "off" means to this server, unless asked otherwise below
            "model": self.model,
            "prompt": self._prompt_text(request),
            "max_tokens": self._max_tokens(request),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": n,
            "stream": stream,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.top_k:
            body["top_k"] = params.top_k  # an extension vLLM, llama.cpp and serve-api accept
        if request.suffix is not None and self.supports_fim and dialect.fim_markers is None:
            body["suffix"] = request.suffix
        return body

    @contextmanager
    def _events(self, request: GenerationRequest, n: int, cancel: CancelToken | None) -> Iterator[Iterator[dict]]:
        """The server-sent events of a streamed completion, as parsed JSON objects."""
        response = self._request("POST", "/completions", self._body(request, n, stream=True), stream=True, cancel=cancel)

        def events() -> Iterator[dict]:
            try:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    if not payload:
                        continue  # llama-cpp-python's keep-alive pings
                    event = json.loads(payload)
                    if isinstance(event, dict) and "error" in event:
                        error = event["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise BackendError(f"the server at {self.root} failed during generation: {message}")
                    yield event
            except httpx.TransportError as error:
                raise BackendError(f"the connection to {self.root} broke during generation: {error}") from error
            except json.JSONDecodeError as error:
                raise BackendError(f"the server at {self.root} sent a malformed stream event: {error}") from error
            if not (cancel is not None and cancel.cancelled):
                # llama-cpp-python ends the stream this way when generation fails (a prompt
                # longer than its context, say): no error event, no [DONE]; and it resets
                # that connection, which httpx would hand to the next request from its pool.
                self._replace_client()
                raise BackendError(
                    f"the server at {self.root} ended the stream before it was done (no [DONE]): "
                    "generation failed on the server; its log says why"
                )

        try:
            yield events()
        finally:
            response.close()  # disconnects: the server may stop generating

    # --- Backend ------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        if request.n > 1 and self.dialect.one_choice_per_request:
            return self._generate_one_by_one(request, cancel)
        if cancel is None and request.finished is None:
            return self._generate_whole(request)
        samples = [Sample(request.stop, request.finished) for _ in range(request.n)]
        with self._events(request, request.n, cancel) as events:
            for event in events:
                for choice in event.get("choices", []):
                    sample = samples[int(choice.get("index", 0)) % request.n]
                    sample.add_text(choice.get("text") or "")
                    if choice.get("finish_reason"):
                        sample.finish(sample.text, str(choice["finish_reason"]))
                if cancel is not None and cancel.cancelled:
                    for sample in samples:
                        sample.finish(sample.text, "cancelled")
                if all(sample.done for sample in samples):
                    break
        return [sample.completion(self.count_tokens(sample.text)) for sample in samples]

    def _generate_one_by_one(self, request: GenerationRequest, cancel: CancelToken | None) -> list[Completion]:
        """``n`` samples from a server that answers one choice per request: one request
        each, sample k seeded ``seed + k`` (as serve-api does for such backends)."""
        completions: list[Completion] = []
        for k in range(request.n):
            seed = None if request.params.seed is None else request.params.seed + k
            one = dataclasses.replace(request, n=1, params=dataclasses.replace(request.params, seed=seed))
            if cancel is not None and cancel.cancelled:
                completions.append(Completion(text="", finish_reason="cancelled", generated_tokens=0))
                continue
            completions += self.generate(one, cancel)
        return completions

    def _generate_whole(self, request: GenerationRequest) -> list[Completion]:
        response = self._request("POST", "/completions", self._body(request, request.n, stream=False))
        try:
            answer = response.json()
            choices = sorted(answer["choices"], key=lambda c: int(c.get("index", 0)))
        except (ValueError, KeyError, TypeError) as error:
            raise BackendError(f"the server at {self.root} sent a malformed completion: {error}") from error
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        completions = []
        for choice in choices[: request.n]:
            text = str(choice.get("text") or "")
            reason = str(choice.get("finish_reason") or "stop")
            cut = first_stop(text, request.stop)  # in case the server ignored the stop strings
            if cut is not None:
                text, reason = text[:cut], "stop"
            # One choice, text as the server made it: its own count of what it generated is
            # exact, where counting the text again may not be (a model's tokens need not be
            # the ones its tokenizer would choose for that text).
            served = usage.get("completion_tokens")
            if len(choices) == 1 and cut is None and isinstance(served, int):
                tokens = served
            else:
                tokens = self.count_tokens(text)
            completions.append(Completion(text=text, finish_reason=reason, generated_tokens=tokens))
        if len(completions) < request.n:
            raise BackendError(
                f"the server at {self.root} answered {len(completions)} of the {request.n} samples asked for (n)"
            )
        return completions

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Generator[str, None, Completion]:
        if request.n != 1:
            raise ValueError(f"stream() gives one sample: request.n must be 1, got {request.n}")
        return self._stream(request, cancel)

    def _stream(self, request: GenerationRequest, cancel: CancelToken | None) -> Generator[str, None, Completion]:
        sample = Sample(request.stop, request.finished)
        with self._events(request, 1, cancel) as events:
            for event in events:
                for choice in event.get("choices", []):
                    sample.add_text(choice.get("text") or "")
                    if choice.get("finish_reason"):
                        sample.finish(sample.text, str(choice["finish_reason"]))
                if cancel is not None and cancel.cancelled:
                    sample.finish(sample.text, "cancelled")
                delta = sample.take_delta()
                if delta:
                    yield delta
                if sample.done:
                    break
        sample.finish(sample.text, "stop")  # the stream ended without a finish reason
        tail = sample.take_delta()
        if tail:
            yield tail
        return sample.completion(self.count_tokens(sample.text))

    def _replace_client(self) -> None:
        """A fresh client (empty pool) in place of the current one. Requests other threads
        have in flight on the old one may break: they are retried on the new one (``_request``)."""
        with self._facts_lock:
            old, self._client = self._client, self._new_client()
        old.close()

    def close(self) -> None:
        self._client.close()


__all__ = ["OpenAIBackend", "api_root", "estimate_tokens"]
