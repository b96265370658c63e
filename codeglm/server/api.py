"""``codeglm serve-api``: an OpenAI-compatible completions API in front of any backend.

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` (``prompt`` as a string or a
list of strings, ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``n``,
``stop``, ``stream``, ``seed``, ``suffix``), ``POST /tokenize`` (vLLM's shape: token
ids and their count), ``GET /stats`` (batching and streaming counters, and what the engine's last
generation did) and
``GET /health``.

Concurrency: every request, streamed or not, goes to a ``BatchScheduler`` that
gathers the ones arriving together; with the native backend each gathering is one
engine call that decodes them as one batch, streams getting their text after every
step (see ``codeglm.backends.batching``). When a client disconnects its requests
are cancelled within one decode step; the others in its batch go on. Bad requests
get 400 (wrong field types or values, numbers out of the range the engine takes, text
that is not valid Unicode, a prompt that with ``max_tokens`` does not fit the context,
``n`` too large) or 422 (a body that is not a JSON object). Every error, whatever the
endpoint or the fault, has one shape: OpenAI's ``{"error": {"message": ...}}``. A bad
request never fails another client's request batched with it (see ``BatchScheduler``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from codeglm.backends import last_generation
from codeglm.backends.base import (
    Backend,
    BackendError,
    CancelToken,
    Completion,
    GenerationRequest,
    SamplingParams,
)
from codeglm.backends.batch_entry import SampleListener
from codeglm.backends.batching import BatchScheduler
from codeglm.inference.types import SEED_RANGE


def valid_unicode(text: str) -> str:
    """``text`` if it is valid Unicode; JSON's escapes can carry a lone surrogate
    (``"\\ud800"``), which no tokenizer or UTF-8 encoder takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"has a lone surrogate (U+{ord(text[error.start]):04X}) at character {error.start}: "
            "send valid Unicode text"
        ) from None
    return text


Text = Annotated[StrictStr, AfterValidator(valid_unicode)]
StrictNonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
StrictPositiveInt = Annotated[int, Field(strict=True, ge=1)]
# What each field must be, for error messages (pydantic's own are per union member).
FIELD_HELP = {
    "model": "a string",
    "prompt": "a string or a list of strings",
    "max_tokens": "an integer >= 0",
    "temperature": "a finite number >= 0",
    "top_p": "a number in (0, 1]",
    "top_k": "an integer >= 0",
    "n": "an integer >= 1",
    "stop": "a string, a list of strings or null",
    "stream": "true or false",
    "seed": "an integer from -2**63 to 2**63-1, or null",
    "suffix": "a string or null",
    "echo": "false",
    "best_of": "null or equal to n",
    "logprobs": "null",
}


class CompletionBody(BaseModel):
    """The fields of an OpenAI completions request this server understands."""

    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    prompt: Text | list[Text]
    max_tokens: StrictNonNegativeInt = 16
    temperature: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, Field(strict=True, gt=0, le=1)] = 1.0
    top_k: StrictNonNegativeInt = 0
    n: StrictPositiveInt = 1
    stop: Text | list[Text] | None = None
    stream: StrictBool = False
    seed: Annotated[int, Field(strict=True, ge=SEED_RANGE[0], le=SEED_RANGE[1])] | None = None
    suffix: Text | None = None
    echo: StrictBool = False
    best_of: StrictPositiveInt | None = None
    logprobs: None = None


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    prompt: Text


@dataclass(frozen=True)
class ServerSettings:
    model_name: str = "codeglm"
    max_n: int = 16  # samples per prompt
    max_choices: int = 64  # prompts x n per request
    batch_window: float = 0.01  # seconds the batcher waits for more requests
    max_batch_requests: int = 8


class BadRequest(ValueError):
    """A request this server will not run; the message is for the client."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class StreamStats:
    started: int = 0
    finished: int = 0
    cancelled: int = 0  # ended because the client went away
    cancelled_generated_tokens: list[int] = field(default_factory=list)  # how far those got
    active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def opened(self) -> None:
        with self.lock:
            self.started += 1
            self.active += 1

    def closed(self, completions: Sequence[Completion]) -> None:
        cancelled = [c.generated_tokens for c in completions if c.finish_reason == "cancelled"]
        with self.lock:
            self.active -= 1
            self.finished += 1
            if cancelled:
                self.cancelled += 1
                self.cancelled_generated_tokens.append(max(cancelled))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "started": self.started,
                "finished": self.finished,
                "cancelled": self.cancelled,
                "cancelled_generated_tokens": list(self.cancelled_generated_tokens[-20:]),
                "active": self.active,
            }


@dataclass(frozen=True)
class CompletionPlan:
    """A checked request: one ``GenerationRequest`` per prompt, and its prompt token counts."""

    requests: tuple[GenerationRequest, ...]
    prompt_tokens: tuple[int, ...]
    n: int


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def plan_completion(body: CompletionBody, backend: Backend, settings: ServerSettings) -> CompletionPlan:
    """Check a request against the server's limits and the model's context."""
    if body.echo:
        raise BadRequest("echo is not supported", "echo")
    if body.best_of is not None and body.best_of != body.n:
        raise BadRequest("best_of is not supported (leave it out or set it equal to n)", "best_of")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise BadRequest("prompt is an empty list: give at least one prompt", "prompt")
    if body.n > settings.max_n:
        raise BadRequest(f"n = {body.n} is too large: this server gives at most {settings.max_n} samples", "n")
    if len(prompts) * body.n > settings.max_choices:
        raise BadRequest(
            f"{len(prompts)} prompts x n = {body.n} asks for {len(prompts) * body.n} completions; "
            f"this server gives at most {settings.max_choices} per request",
            "n",
        )
    if body.suffix is not None and not backend.supports_fim:
        raise BadRequest("this model has no fill-in-the-middle: leave out suffix", "suffix")
    try:
        params = SamplingParams(
            max_new_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
            seed=body.seed,
        )
    except ValueError as error:
        raise BadRequest(str(error)) from None
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    counts = []
    for i, prompt in enumerate(prompts):
        tokens = backend.count_tokens(prompt)
        where = "prompt" if len(prompts) == 1 else f"prompt {i}"
        if tokens == 0:
            raise BadRequest(f"{where} is empty: give at least one token of text to continue", "prompt")
        if tokens >= backend.context_length:
            raise BadRequest(
                f"{where} has {tokens} tokens but the model's context is {backend.context_length} tokens "
                "(prompt and completion together): shorten it",
                "prompt",
            )
        if tokens + body.max_tokens > backend.context_length:
            raise BadRequest(context_overflow_message(where, tokens, body.max_tokens, backend.context_length),
                             "max_tokens")
        counts.append(tokens)
    requests = tuple(
        GenerationRequest(prompt=p, params=params, n=body.n, stop=stop, suffix=body.suffix) for p in prompts
    )
    return CompletionPlan(requests=requests, prompt_tokens=tuple(counts), n=body.n)


def context_overflow_message(where: str, prompt_tokens: int, max_tokens: int, context: int) -> str:
    """What vLLM says when prompt and completion together exceed the context."""
    return (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} for the completion). "
        f"Reduce the prompt or max_tokens (at most {context - prompt_tokens} with this prompt)."
    )


def _describe_validation_errors(errors: Sequence[Any]) -> tuple[int, str, str | None]:
    """(status, message, first bad field) for pydantic's errors about a request body."""
    fields: dict[str, str] = {}
    # Our own validators' messages (value_error) first: in a union such as ``stop`` the
    # member the value was meant for says what is wrong, the others only "not a string".
    for error in sorted(errors, key=lambda e: e.get("type") != "value_error"):
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "json_invalid" or loc in (("body",), ()):
            return 422, f"the request body is not a JSON object: {error.get('msg', 'malformed')}", None
        name = str(loc[1]) if len(loc) > 1 else "body"
        if name in fields:
            continue
        if error.get("type") == "missing":
            fields[name] = f"{name} is required ({FIELD_HELP.get(name, 'see the OpenAI completions API')})"
        elif error.get("type") == "value_error":
            fields[name] = f"{name} {error.get('ctx', {}).get('error', error.get('msg'))}"
        else:
            given = json.dumps(error.get("input"), default=str)
            if len(given) > 60:
                given = given[:57] + "..."
            fields[name] = f"{name} must be {FIELD_HELP.get(name, 'valid')}, got {given}"
    return 400, "; ".join(fields.values()), next(iter(fields), None)


def served_model_name(backend: Backend) -> str:
    target = backend.name.split(":", 1)[-1].split("?", 1)[0].split("#")[-1].rstrip("/")
    return target.rsplit("/", 1)[-1] or "codeglm"


def _completion_response(
    plan: CompletionPlan, results: Sequence[Sequence[Completion]], model: str
) -> dict[str, Any]:
    choices = []
    for p, completions in enumerate(results):
        for k, completion in enumerate(completions):
            choices.append(
                {"index": p * plan.n + k, "text": completion.text, "logprobs": None,
                 "finish_reason": completion.finish_reason}
            )
    generated = sum(c.generated_tokens for completions in results for c in completions)
    prompt_tokens = sum(plan.prompt_tokens)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated},
    }


def create_app(backend: Backend, settings: ServerSettings | None = None) -> FastAPI:
    """The API app over ``backend`` (which it closes on shutdown)."""
    settings = settings or ServerSettings(model_name=served_model_name(backend))
    scheduler = BatchScheduler(backend, window=settings.batch_window, max_requests=settings.max_batch_requests)
    streams = StreamStats()
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(scheduler.close)
        backend.close()

    app = FastAPI(title="codeglm serve-api", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message, param = _describe_validation_errors(error.errors())
        return JSONResponse(error_body(message, param=param), status_code=status)

    @app.exception_handler(BadRequest)
    async def on_bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse(error_body(str(error), param=error.param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own errors (unknown path, wrong method, a body that
        # is not UTF-8 or is nested too deep to parse) in the same shape as ours.
        message = str(error.detail)
        if message == "There was an error parsing the body":
            message = ("the request body could not be parsed: send a JSON object encoded as UTF-8 "
                       "(and nested less than a few hundred levels deep)")
        elif error.status_code == 404:
            message = f"no such endpoint: {request.url.path} (see /v1/completions, /v1/models, /tokenize)"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(error_body(message, kind=kind), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(BackendError)
    async def on_backend_error(request: Request, error: BackendError) -> JSONResponse:
        return JSONResponse(error_body(str(error), kind="server_error"), status_code=503)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        message = f"internal error: {type(error).__name__}: {error}"
        return JSONResponse(error_body(message, kind="server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": settings.model_name, "object": "model", "created": started, "owned_by": "codeglm",
                 "max_model_len": backend.context_length}
        return {"object": "list", "data": [entry]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"batching": scheduler.stats.snapshot(), "streams": streams.snapshot(),
                "last_generation": last_generation(backend)}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeBody) -> dict[str, Any]:
        count = await run_in_threadpool(backend.count_tokens, body.prompt)
        return {"count": count, "max_model_len": backend.context_length}

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionBody, request: Request) -> JSONResponse | StreamingResponse:
        plan = await run_in_threadpool(plan_completion, body, backend, settings)
        if body.stream:
            return StreamingResponse(
                _stream_events(plan, scheduler, settings.model_name, streams), media_type="text/event-stream"
            )
        tokens = [CancelToken() for _ in plan.requests]
        futures = [asyncio.wrap_future(scheduler.submit(r, t)) for r, t in zip(plan.requests, tokens, strict=True)]
        pending = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.2)
            if pending and await request.is_disconnected():
                for token in tokens:
                    token.cancel()
                await asyncio.wait(pending)  # let the batch see the cancel; nobody reads the answer
                return JSONResponse(error_body("client disconnected"), status_code=499)
        results = [future.result() for future in futures]
        return JSONResponse(_completion_response(plan, results, settings.model_name))

    return app


def _chunk(completion_id: str, model: str, index: int, text: str, finish_reason: str | None) -> str:
    event = {
        "id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(event)}\n\n"


async def _stream_events(
    plan: CompletionPlan, scheduler: BatchScheduler, model: str, stats: StreamStats
) -> AsyncIterator[str]:
    """Server-sent events of a streamed completion; leaving early cancels its requests.

    Each prompt is one request to the batcher, which may decode it together with other
    clients' requests; choices' chunks interleave as their text arrives.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
    tokens = [CancelToken() for _ in plan.requests]

    def put(kind: str, index: int = 0, text: str = "") -> None:
        # Raises RuntimeError once the event loop is gone: the batcher then cancels the request.
        loop.call_soon_threadsafe(events.put_nowait, (kind, index, text))

    def listener_for(prompt_index: int) -> SampleListener:
        def on_sample(sample_index: int, delta: str, completion: Completion | None) -> None:
            index = prompt_index * plan.n + sample_index
            if delta:
                put("delta", index, delta)
            if completion is not None and completion.finish_reason != "cancelled":
                put("end", index, completion.finish_reason)

        return on_sample

    outstanding = len(plan.requests)
    ended: list[Completion] = []
    lock = threading.Lock()

    def on_done(future: Future[list[Completion]]) -> None:
        nonlocal outstanding
        error = future.exception()
        with lock:
            outstanding -= 1
            last = outstanding == 0
            if error is None:
                ended.extend(future.result())
        try:
            if error is not None:
                message = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
                put("error", 0, message)
            if last:
                stats.closed(ended)
                put("done")
        except RuntimeError:  # the event loop is gone: nobody is listening
            pass

    stats.opened()
    for prompt_index, (request, token) in enumerate(zip(plan.requests, tokens, strict=True)):
        scheduler.submit(request, token, listener_for(prompt_index)).add_done_callback(on_done)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    try:
        while True:
            kind, index, text = await events.get()
            if kind == "delta":
                yield _chunk(completion_id, model, index, text, None)
            elif kind == "end":
                yield _chunk(completion_id, model, index, "", text)
            elif kind == "error":
                yield f"data: {json.dumps(error_body(text, kind='server_error'))}\n\n"
            else:
                break
        yield "data: [DONE]\n\n"
    finally:
        for token in tokens:
            token.cancel()  # a no-op after a full stream; stops generation if the client left


__all__ = ["CompletionBody", "ServerSettings", "create_app", "plan_completion"]
