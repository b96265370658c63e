"""The ``native`` backend: this project's engine over a CodeGeeX model directory.

``generate_many`` hands several requests that share their sampling parameters to
one ``Engine.generate`` call, so the engine batches them (serve-api uses it).
Streaming runs ``Engine.generate`` for one sample in a worker thread and reads the
text as it grows through the ``finished`` callback, which gives the exact finish
reason and token count at the end (``Engine.stream`` yields text only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from codeglm.backends.base import BackendError, CancelToken, Completion, GenerationRequest
from codeglm.backends.cancel import AnyCancelToken
from codeglm.backends.text_rules import StableDeltas
from codeglm.backends.worker_stream import stream_from_worker

if TYPE_CHECKING:
    from codeglm.engine import Engine


def batch_key(request: GenerationRequest) -> tuple[object, ...]:
    """Requests with equal keys can be generated in one engine call."""
    return (request.params, request.n, tuple(request.stop), id(request.finished) if request.finished else None)


class NativeBackend:
    """``Backend`` over ``codeglm.engine.Engine``. CodeGeeX has no fill-in-the-middle."""

    supports_fim = False

    def __init__(self, engine: Engine, name: str = "native") -> None:
        self.engine: Engine | None = engine
        self.name = name
        self.context_length: int = engine.context_length

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        dtype: str = "fp32",
        max_batch_size: int = 8,
        prefix_cache: int | None = None,
        progress: bool = False,
    ) -> NativeBackend:
        """Load the model and tokenizer saved in ``path`` (a ``codeglm convert`` output)."""
        from tqdm import tqdm

        from codeglm.engine import DEFAULT_PREFIX_CACHE_TOKENS, Engine, load_model
        from codeglm.tokenizer import TokenizerFilesError, load_tokenizer

        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise BackendError(
                f"model directory {directory} does not exist: give a directory written by `codeglm convert`"
            )
        with tqdm(total=2, desc=f"loading {directory.name}", unit="step", file=sys.stderr, disable=not progress) as bar:
            try:
                bar.set_postfix_str("weights")
                model = load_model(directory, device=device, dtype=dtype)
                bar.update()
                bar.set_postfix_str("tokenizer")
                tokenizer = load_tokenizer(directory)
                bar.update()
            except (OSError, ValueError, TokenizerFilesError) as error:
                raise BackendError(f"cannot load the model in {directory}: {error}") from error
        cache = DEFAULT_PREFIX_CACHE_TOKENS if prefix_cache is None else prefix_cache
        engine = Engine(model, tokenizer, max_batch_size=max_batch_size, prefix_cache_size=cache)
        return cls(engine, name=f"native:{directory}")

    def _engine(self) -> Engine:
        if self.engine is None:
            raise BackendError(f"backend {self.name} is closed")
        return self.engine

    def count_tokens(self, text: str) -> int:
        return self._engine().count_tokens(text)

    def check_prompt(self, prompt: str) -> None:
        """Raise ``BackendError`` if ``prompt`` is empty or does not fit the context."""
        tokens = self.count_tokens(prompt)
        if tokens == 0:
            raise BackendError("empty prompt: give at least one token of text to continue")
        if tokens >= self.context_length:
            raise BackendError(
                f"prompt of {tokens} tokens does not fit the model's context of {self.context_length} tokens: shorten it"
            )

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        return self.generate_many([request], cancel)[0]

    def generate_many(
        self, requests: Sequence[GenerationRequest], cancel: CancelToken | None = None
    ) -> list[list[Completion]]:
        """Completions of several requests in one engine call; they must share ``batch_key``."""
        if not requests:
            return []
        first = requests[0]
        if any(batch_key(r) != batch_key(first) for r in requests):
            raise ValueError("generate_many needs requests with equal sampling parameters, n, stop and finished")
        engine = self._engine()
        try:
            return engine.generate(
                [r.prompt for r in requests], first.params, first.n, first.stop, first.finished, cancel
            )
        except ValueError as error:  # the engine's prompt checks
            raise BackendError(str(error)) from error

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Generator[str, None, Completion]:
        if request.n != 1:
            raise ValueError(f"stream() gives one sample: request.n must be 1, got {request.n}")
        self.check_prompt(request.prompt)
        engine = self._engine()
        stop_worker = CancelToken()
        token = AnyCancelToken(stop_worker, cancel)
        deltas = StableDeltas(request.stop)
        user_finished = request.finished

        def work(emit: Callable[[str], None]) -> Completion:
            def on_text(text: str) -> int | None:
                keep = user_finished(text) if user_finished is not None else None
                if keep is None:
                    delta = deltas.update(text)
                    if delta:
                        emit(delta)
                return keep

            completion = engine.generate([request.prompt], request.params, 1, request.stop, on_text, token)[0][0]
            tail = deltas.update(completion.text, final=True)
            if tail:
                emit(tail)
            return completion

        return stream_from_worker(work, stop_worker, name="codeglm-native-stream")

    def close(self) -> None:
        self.engine = None


__all__ = ["NativeBackend", "batch_key"]
