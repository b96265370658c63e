"""The ``hf`` backend: any transformers causal LM and its tokenizer.

``hf:PATH`` loads ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local
directory; a hub id is passed through to transformers (it downloads where there is a
network). Text rules (stop strings, the ``finished`` callback, cancellation) run in a
``StoppingCriteria`` that sees every new token, using the one ``Sample`` type so
every backend cuts text identically. Fill-in-the-middle is offered when the
tokenizer's vocabulary has one of the known FIM token triples.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

import codeglm.model.codegeex  # noqa: F401  (registers the codegeex model type with the Auto classes)
from codeglm.backends.base import (
    BackendError,
    CancelToken,
    Completion,
    GenerationRequest,
    ModelFilesError,
    SamplingParams,
)
from codeglm.backends.cancel import AnyCancelToken
from codeglm.backends.worker_stream import stream_from_worker
from codeglm.inference.fim import detect_fim_tokens, prompt_token_ids
from codeglm.inference.text_rules import Sample
from codeglm.model.tokenizer import TransformersTokenizer

TORCH_DTYPES: dict[str, Any] = {"auto": "auto", "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Configs name their context length differently; tokenizers often say 1e30 ("unknown").
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length")
DEFAULT_CONTEXT = 2048


def context_length_of(config: Any, tokenizer: Any) -> int:
    for attribute in CONTEXT_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return DEFAULT_CONTEXT


class _TextRules(StoppingCriteria):
    """Feeds each new token to its row's ``Sample``; a row stops when its sample is done."""

    def __init__(
        self, samples: list[Sample], eos_ids: frozenset[int], cancel: CancelToken, on_step: Callable[[], None]
    ) -> None:
        self.samples = samples
        self.eos_ids = eos_ids
        self.cancel = cancel
        self.on_step = on_step

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        for sample, token in zip(self.samples, input_ids[:, -1].tolist(), strict=True):
            sample.add_token(token, token if token in self.eos_ids else -1)
        self.on_step()
        if self.cancel.cancelled:
            for sample in self.samples:
                sample.finish(sample.text, "cancelled")
        done = [sample.done for sample in self.samples]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    """``Backend`` over a transformers causal LM."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "hf", context_length: int | None = None) -> None:
        self.model: Any = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = context_length or context_length_of(model.config, tokenizer)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids), 0)
        self._text = TransformersTokenizer(tokenizer)
        self.fim = detect_fim_tokens(self._text.vocabulary)
        self.supports_fim = self.fim is not None
        self._lock = threading.Lock()  # one generate() at a time on the model

    @classmethod
    def load(
        cls, target: str, device: str = "cpu", dtype: str = "auto", context: int | None = None, progress: bool = False
    ) -> HFBackend:

        with tqdm(total=2, desc=f"loading {target}", unit="step", file=sys.stderr, disable=not progress) as bar:
            try:
                bar.set_postfix_str("tokenizer")
                tokenizer = AutoTokenizer.from_pretrained(target)
                bar.update()
                bar.set_postfix_str("weights")
                model = AutoModelForCausalLM.from_pretrained(target, dtype=TORCH_DTYPES[dtype]).to(device)
                bar.update()
            except (OSError, ValueError) as error:
                raise ModelFilesError(
                    f"cannot load a transformers causal LM from {target!r}: {error}. Give a directory with "
                    "config.json, weights and tokenizer files (or a hub id where there is a network)"
                ) from error
        return cls(model, tokenizer, name=f"hf:{target}", context_length=context)

    def count_tokens(self, text: str) -> int:
        return len(self._text.encode(text))

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids (``codeglm.inference.fim.prompt_token_ids``): the
        tokenizer's start tokens, then prefix-suffix-middle with FIM tokens when there
        is a suffix."""
        return prompt_token_ids(self._text.encode, request.prompt, request.suffix, self.fim, self._text.start_ids)

    def _check(self, ids: list[int]) -> None:
        if not ids:
            raise BackendError("empty prompt: give at least one token of text to continue")
        if len(ids) >= self.context_length:
            raise BackendError(
                f"prompt of {len(ids)} tokens does not fit the model's context of {self.context_length} tokens: shorten it"
            )

    def _sampling_arguments(self, params: SamplingParams) -> dict[str, Any]:
        if params.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}

    def _new_samples(self, request: GenerationRequest, rows: int) -> list[Sample]:
        return [Sample(request.stop, request.finished, self._text.decode) for _ in range(rows)]

    def _run(
        self,
        ids: list[int],
        request: GenerationRequest,
        samples: list[Sample],
        cancel: CancelToken,
        on_step: Callable[[], None],
    ) -> None:
        """Decode one row per sample until every sample is done; ``on_step`` after each token."""
        budget = min(request.params.max_new_tokens, self.context_length - len(ids))
        if budget <= 0 or cancel.cancelled:
            for sample in samples:
                sample.finish("", "cancelled" if cancel.cancelled else "length")
            return
        input_ids = torch.tensor([ids] * len(samples), dtype=torch.long, device=self.model.device)
        with self._lock, torch.random.fork_rng(devices=[]), torch.inference_mode():
            if request.params.seed is not None:
                torch.manual_seed(request.params.seed % 2**64)
            self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=budget,
                stopping_criteria=StoppingCriteriaList([_TextRules(samples, self.eos_ids, cancel, on_step)]),
                pad_token_id=self.pad_id,
                **self._sampling_arguments(request.params),
            )
        for sample in samples:
            sample.finish(sample.text, "length")

    def generate(self, request: GenerationRequest, cancel: CancelToken | None = None) -> list[Completion]:
        ids = self.prompt_ids(request)
        self._check(ids)
        greedy = request.params.greedy
        samples = self._new_samples(request, 1 if greedy else request.n)  # greedy samples are all alike
        self._run(ids, request, samples, AnyCancelToken(cancel), lambda: None)
        completions = [sample.completion() for sample in samples]
        return completions * request.n if greedy else completions

    def stream(self, request: GenerationRequest, cancel: CancelToken | None = None) -> Generator[str, None, Completion]:
        if request.n != 1:
            raise ValueError(f"stream() gives one sample: request.n must be 1, got {request.n}")
        ids = self.prompt_ids(request)
        self._check(ids)
        stop_worker = CancelToken()
        token = AnyCancelToken(stop_worker, cancel)
        sample = self._new_samples(request, 1)[0]

        def work(emit: Callable[[str], None]) -> Completion:
            def on_step() -> None:
                delta = sample.take_delta()
                if delta:
                    emit(delta)

            self._run(ids, request, [sample], token, on_step)
            on_step()  # the rest, now that the sample is final
            return sample.completion()

        return stream_from_worker(work, stop_worker, name="codeglm-hf-stream")

    def close(self) -> None:
        self.model = None


__all__ = ["HFBackend"]
