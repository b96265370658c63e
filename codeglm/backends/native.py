"""The ``native`` backend: this project's engine over a model directory (CodeGeeX, or a
Llama-family or StarCoder-family model: see ``codeglm.inference.loading``).

Prompts with a suffix are laid out for fill-in-the-middle where the tokenizer has FIM
tokens (``codeglm.inference.fim``; StarCoder, Qwen2.5-Coder, DeepSeek-Coder, CodeLlama).

``generate_batch`` hands several requests to one ``Engine.stream_requests`` call, so
the engine decodes them as one batch whatever their prompts, ``n``, sampling
parameters and stop strings; each request keeps its own cancel token, and a streaming
caller's listener is told each sample's new text after every step (serve-api's
batcher uses it for streamed and whole requests alike). ``stream`` runs the same
engine call for one sample in a worker thread, so generation does not wait for the
reader.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from codeglm.backends.base import BackendError, CancelToken, Completion, GenerationRequest, ModelFilesError
from codeglm.backends.batch_entry import BatchEntry
from codeglm.backends.cancel import AnyCancelToken
from codeglm.backends.spec import BackendSpecError
from codeglm.backends.worker_stream import stream_from_worker
from codeglm.inference import model_thread
from codeglm.inference.engine import DEFAULT_PREFIX_CACHE_TOKENS, Engine
from codeglm.inference.fim import FimTokens, detect_fim_tokens, prompt_token_ids
from codeglm.inference.jobs import PromptRequest
from codeglm.inference.loading import load_model, load_model_tokenizer
from codeglm.inference.speculative import DEFAULT_DRAFT_TOKENS, DRAFT_KINDS, int8_draft

if TYPE_CHECKING:
    from codeglm.inference.engine import Engine


# A hub id: "owner/name", neither part starting with a dot (a path like ./x or ../x is a path).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def hub_snapshot(name: str) -> Path:
    """The local copy of hub model ``name`` (downloaded once into the hub cache: config,
    safetensors weights and tokenizer files only), or ``ModelFilesError`` saying why not."""
    if not HUB_ID.fullmatch(name):
        raise ModelFilesError(
            f"model directory {name} does not exist: give a directory written by `codeglm convert` or "
            "`save_pretrained`, or a hub id (owner/name) where there is a network"
        )
    from huggingface_hub import snapshot_download  # deferred: only hub ids need it

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]))
    except Exception as error:  # offline, unknown repository, gated model: all reported the same way
        raise ModelFilesError(
            f"{name} is not a local directory and could not be fetched from the model hub ({type(error).__name__}: "
            f"{error}); on a machine without a network give the directory the model was saved in"
        ) from error


class NativeBackend:
    """``Backend`` over ``codeglm.inference.engine.Engine``."""

    def __init__(self, engine: Engine, name: str = "native") -> None:
        self.engine: Engine | None = engine
        self.name = name
        self.context_length: int = engine.context_length
        vocabulary = getattr(engine.tokenizer, "vocabulary", None)  # CodeGeeX's has no FIM tokens
        self.fim: FimTokens | None = detect_fim_tokens(vocabulary) if vocabulary is not None else None
        self.supports_fim = self.fim is not None
        self.start_ids: tuple[int, ...] = getattr(engine.tokenizer, "start_ids", ())

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        dtype: str = "fp32",
        max_batch_size: int = 8,
        prefix_cache: int | None = None,
        draft: str = "none",
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
        progress: bool = False,
    ) -> NativeBackend:
        """Load the model and tokenizer saved in ``path``: a directory (``codeglm convert``'s
        output, or a transformers directory of a supported family), or a hub id such as
        ``Qwen/Qwen2.5-Coder-1.5B`` where there is a network (see ``hub_snapshot``).
        ``draft="int8"``: speculative decoding with an int8 copy of the model
        (``codeglm.inference.speculative``) for greedy one-sample requests."""
        if draft not in DRAFT_KINDS:
            raise BackendSpecError(f"unknown draft {draft!r}: choose one of {', '.join(DRAFT_KINDS)}")
        if draft != "none" and dtype == "int8":
            raise BackendSpecError("draft=int8 speeds up a floating-point model: give dtype fp32, fp16 or bf16, or drop the draft")
        directory = Path(path).expanduser()
        if not directory.is_dir():
            directory = hub_snapshot(str(path))
        with tqdm(total=2, desc=f"loading {directory.name}", unit="step", file=sys.stderr, disable=not progress) as bar:
            try:
                bar.set_postfix_str("weights")
                model = load_model(directory, device=device, dtype=dtype)
                bar.update()
                bar.set_postfix_str("tokenizer")
                tokenizer = load_model_tokenizer(directory, model)
                bar.update()
            except (OSError, ValueError) as error:  # TokenizerFilesError and UnsupportedModelError are ValueErrors
                raise ModelFilesError(f"cannot load the model in {directory}: {error}") from error
        cache = DEFAULT_PREFIX_CACHE_TOKENS if prefix_cache is None else prefix_cache
        draft_model = model_thread.run(lambda: int8_draft(model)) if draft == "int8" else None
        engine = Engine(model, tokenizer, max_batch_size=max_batch_size, prefix_cache_size=cache, draft=draft_model,
                        draft_tokens=draft_tokens)
        return cls(engine, name=f"native:{directory}")

    def _engine(self) -> Engine:
        if self.engine is None:
            raise BackendError(f"backend {self.name} is closed")
        return self.engine

    def count_tokens(self, text: str) -> int:
        return self._engine().count_tokens(text)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The request's prompt as the model reads it (``codeglm.inference.fim.prompt_token_ids``)."""
        return prompt_token_ids(
            self._engine().tokenizer.encode, request.prompt, request.suffix, self.fim, self.start_ids
        )

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
        return self.generate_batch([BatchEntry(request, cancel)])[0]

    def generate_many(
        self, requests: Sequence[GenerationRequest], cancel: CancelToken | None = None
    ) -> list[list[Completion]]:
        """Completions of several requests in one engine call, all cancelled by ``cancel``."""
        return self.generate_batch([BatchEntry(r, cancel) for r in requests])

    def generate_batch(self, entries: Sequence[BatchEntry]) -> list[list[Completion]]:
        """Completions of each entry, decoded in one engine call; see ``BatchingBackend``."""
        if not entries:
            return []
        engine = self._engine()
        requests = [self._prompt_request(e.request, e.cancel) for e in entries]
        try:
            steps = engine.stream_requests(requests)
        except ValueError as error:  # the engine's prompt checks
            raise BackendError(str(error)) from error
        results: list[list[Completion | None]] = [[None] * e.request.n for e in entries]
        with closing(steps):  # a listener that raises must not leave the engine held
            for updates in steps:
                for update in updates:
                    listener = entries[update.prompt_index].listener
                    if listener is not None:
                        listener(update.sample_index, update.delta, update.completion)
                    if update.completion is not None:
                        results[update.prompt_index][update.sample_index] = update.completion
        return [[c for c in per_entry if c is not None] for per_entry in results]

    def _prompt_request(self, request: GenerationRequest, cancel: CancelToken | None) -> PromptRequest:
        tokens = tuple(self.prompt_ids(request))
        return PromptRequest(tokens, request.params, request.n, tuple(request.stop), request.finished, cancel)

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Generator[str, None, Completion]:
        if request.n != 1:
            raise ValueError(f"stream() gives one sample: request.n must be 1, got {request.n}")
        self.check_prompt(request.prompt)
        stop_worker = CancelToken()
        token = AnyCancelToken(stop_worker, cancel)

        def work(emit: Callable[[str], None]) -> Completion:
            def on_sample(index: int, delta: str, completion: Completion | None) -> None:
                if delta:
                    emit(delta)

            [[completion]] = self.generate_batch([BatchEntry(request, token, on_sample)])
            return completion

        return stream_from_worker(work, stop_worker, name="codeglm-native-stream")

    def last_generation(self) -> dict[str, float | int]:
        """What the engine's last generation did (``GenerationStats``): prompt tokens, the
        part taken from the prefix cache, prefill seconds, decode steps and seconds."""
        return dataclasses.asdict(self._engine().last_stats)

    def close(self) -> None:
        self.engine = None


__all__ = ["NativeBackend"]
