"""The generation engine: prefill, then decode into a preallocated KV cache.

One ``generate`` call runs its prompts as few batches as ``max_batch_size`` allows. In
a batch each prompt is prefilled on its own (so a shared token prefix with a recent
prompt is taken from the prefix cache rather than recomputed) into the first row of
its samples, left-padded to the batch's longest prompt, and copied to the rows of its
other samples; then all rows decode together, one token per step, each step writing
into the same preallocated cache (see ``codeglm.kv_cache``).

Text rules, checked as tokens arrive: a sample ends at end-of-text, at the first
occurrence of a stop string (which is not returned), when the ``finished`` callback
returns a length to keep, at ``max_new_tokens`` or at the context's end, or when its
``CancelToken`` is tripped (checked before every model step). Streaming yields only
text that can no longer change: never a partial UTF-8 character, never the start of a
stop string that might still complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from codeglm.backends.base import CancelToken, Completion, FinishedCallback, SamplingParams
from codeglm.backends.text_rules import first_stop, held_back_length
from codeglm.kv_cache import CacheShape, StaticKVCache
from codeglm.model import CodeGeeXForCausalLM
from codeglm.prefix_cache import PrefixCache
from codeglm.sampling import choose_tokens, make_generator

# What ``--dtype`` may say, and the floating type the weights are loaded in.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.float32,  # linears then quantized; activations stay floating point
}
REPLACEMENT_CHAR = "\ufffd"  # what decoding an incomplete UTF-8 sequence ends with
DEFAULT_PREFIX_CACHE_TOKENS = 8192
# Cache capacity grows in steps of this many positions, so that similar requests
# reuse one allocation instead of each faulting in fresh pages.
CAPACITY_STEP = 256


class Tokenizer(Protocol):
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class SampleText:
    """One sample's tokens and text, with the stop rules applied as tokens arrive."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], finished: FinishedCallback | None) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._finished = finished
        self.token_ids: list[int] = []
        self.text = ""  # decoded so far, already cut at a stop string or a finished cut
        self.finish_reason: str | None = None
        self.emitted = 0  # characters handed out by ``take_delta``

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def add(self, token_id: int, eos_token_id: int) -> None:
        if self.done:
            return
        self.token_ids.append(token_id)
        if token_id == eos_token_id:
            self.finish(self.text, "stop")
            return
        text = self._tokenizer.decode(self.token_ids)
        cut = first_stop(text, self._stop)
        if cut is not None:
            self.finish(text[:cut], "stop")
            return
        self.text = text
        complete = text.rstrip(REPLACEMENT_CHAR)
        if self._finished is not None and complete:
            keep = self._finished(complete)
            if keep is not None:
                self.finish(complete[: max(0, keep)], "stop")

    def finish(self, text: str, reason: str) -> None:
        """End the sample with ``text`` (an incomplete trailing character dropped)."""
        if self.done:
            return
        self.text = text.rstrip(REPLACEMENT_CHAR)
        self.finish_reason = reason

    def stable_text(self) -> str:
        """The part of the text that later tokens cannot change."""
        if self.done:
            return self.text
        text = self.text.rstrip(REPLACEMENT_CHAR)
        return text[: len(text) - held_back_length(text, self._stop)]

    def take_delta(self) -> str:
        """Stable text not handed out before (text once handed out is never taken back)."""
        stable = self.stable_text()
        if len(stable) <= self.emitted:
            return ""
        delta = stable[self.emitted :]
        self.emitted = len(stable)
        return delta

    def completion(self) -> Completion:
        return Completion(text=self.text, finish_reason=self.finish_reason or "length", generated_tokens=len(self.token_ids))


@dataclass(frozen=True)
class Job:
    """``count`` samples of prompt ``prompt_index``, numbered from ``first_sample``."""

    prompt_index: int
    tokens: tuple[int, ...]
    first_sample: int
    count: int


def plan_batches(
    prompts: Sequence[Sequence[int]], n: int, max_new_tokens: int, max_rows: int, context: int
) -> list[list[Job]]:
    """Group the samples of all prompts into batches of at most ``max_rows`` rows.

    A prompt's samples stay together unless there are more than ``max_rows`` of them.
    A prompt joins a batch only if the batch's longest prompt plus ``max_new_tokens``
    still fits the context (rows are left-padded to the longest prompt), so batching
    never shortens a completion.
    """
    jobs = [
        Job(i, tuple(tokens), first, min(max_rows, n - first))
        for i, tokens in enumerate(prompts)
        for first in range(0, n, max_rows)
    ]
    batches: list[list[Job]] = []
    for job in jobs:
        for batch in batches:
            rows = sum(j.count for j in batch) + job.count
            longest = max(len(j.tokens) for j in (*batch, job))
            if rows <= max_rows and longest + max_new_tokens <= context:
                batch.append(job)
                break
        else:
            batches.append([job])
    return batches


@dataclass
class GenerationStats:
    """What the last ``generate`` / ``stream`` call did, for benchmarks and logs."""

    prompt_tokens: int = 0
    reused_prefix_tokens: int = 0  # taken from the prefix cache instead of computed
    prefill_seconds: float = 0.0  # until the first tokens were chosen
    decode_steps: int = 0
    decode_seconds: float = 0.0
    rows: int = 0


def store_linear_weights_transposed(model: torch.nn.Module) -> int:
    """Keep each CPU linear weight (out, in) as the transpose of an (in, out) contiguous
    tensor; returns how many weights were moved.

    Values, shapes, parameter names and weight tying stay as they were; only the memory
    order changes. For ``x @ W^T`` with few rows of ``x`` (a decode step) the BLAS then
    streams ``W`` row by row - the layout GPT-2's ``Conv1D`` uses - which reads memory
    markedly faster on CPUs than the dot-product-per-output order of ``(out, in)``.
    transformers' ``save_pretrained`` (5.23) cannot save such views (its tied-weight
    check calls ``view``): save a model before this, or from a fresh load.
    """
    moved = 0
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if id(weight) in seen or weight.device.type != "cpu" or not weight.is_contiguous():
            continue  # shared (tied) weights are moved once; already moved ones stay
        seen.add(id(weight))
        with torch.no_grad():
            weight.data = weight.data.t().contiguous().t()
        moved += 1
    return moved


class Engine:
    """Generates completions from a CodeGeeX model: batched, streamed, cancellable."""

    def __init__(
        self,
        model: CodeGeeXForCausalLM,
        tokenizer: Tokenizer,
        *,
        max_batch_size: int = 8,
        prefix_cache_size: int = DEFAULT_PREFIX_CACHE_TOKENS,
        transpose_weights: bool = False,
    ) -> None:
        """``prefix_cache_size`` bounds the prefix cache in tokens over all its entries
        (each token costs ``cache_shape.bytes_per_token`` bytes); 0 disables it.
        ``transpose_weights``: store the model's CPU linear weights in the memory order
        decoding reads fastest (``store_linear_weights_transposed``; in place; ``load_model``
        already does it)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if transpose_weights:
            store_linear_weights_transposed(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        config = model.config
        self.context_length: int = config.max_position_embeddings
        embeddings = model.transformer.wte.weight
        self.cache_shape = CacheShape(
            layers=config.num_cache_layers,
            heads=config.num_attention_heads,
            head_dim=config.head_dim,
            dtype=embeddings.dtype,
            device=embeddings.device,
        )
        self.prefix_cache = PrefixCache(prefix_cache_size)
        self.last_stats = GenerationStats()
        self._lock = threading.Lock()
        self._workspace: StaticKVCache | None = None
        # Called with each step's (rows, V) next-token logits, prefill's first: for
        # tests and diagnostics.
        self.logits_tap: Callable[[torch.Tensor], None] | None = None

    # --- public API -------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        n: int = 1,
        stop: Sequence[str] = (),
        finished: FinishedCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[list[Completion]]:
        """``n`` completions of each prompt, in prompt order."""
        return self.generate_tokens([self.tokenizer.encode(p) for p in prompts], params, n, stop, finished, cancel)

    def generate_tokens(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        n: int = 1,
        stop: Sequence[str] = (),
        finished: FinishedCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[list[Completion]]:
        """``generate`` from token ids."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        for tokens in prompts:
            self._check_prompt(tokens)
        results: list[list[Completion | None]] = [[None] * n for _ in prompts]
        with self._lock:
            self.last_stats = GenerationStats()
            plan = plan_batches(prompts, n, params.max_new_tokens, self.max_batch_size, self.context_length)
            for batch in plan:
                samples: list[SampleText] = []
                for step_samples in self._run(batch, params, stop, finished, cancel):
                    samples = step_samples  # the same list each step; the last is final
                row = 0
                for job in batch:
                    for k in range(job.count):
                        results[job.prompt_index][job.first_sample + k] = samples[row].completion()
                        row += 1
        return [[c for c in per_prompt if c is not None] for per_prompt in results]

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        stop: Sequence[str] = (),
        finished: FinishedCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]:
        """Text deltas of one sample as they become final (see the module docstring)."""
        tokens = self.tokenizer.encode(prompt)
        self._check_prompt(tokens)
        return self._stream(tuple(tokens), params, stop, finished, cancel)

    def _stream(
        self,
        tokens: tuple[int, ...],
        params: SamplingParams,
        stop: Sequence[str],
        finished: FinishedCallback | None,
        cancel: CancelToken | None,
    ) -> Iterator[str]:
        with self._lock:
            self.last_stats = GenerationStats()
            for samples in self._run([Job(0, tokens, 0, 1)], params, stop, finished, cancel):
                delta = samples[0].take_delta()
                if delta:
                    yield delta

    # --- the generation loop ----------------------------------------------------

    def _check_prompt(self, tokens: Sequence[int]) -> None:
        if not tokens:
            raise ValueError("empty prompt: give at least one token of text to continue")
        if len(tokens) >= self.context_length:
            raise ValueError(
                f"prompt of {len(tokens)} tokens does not fit the model's context of "
                f"{self.context_length} tokens: shorten it"
            )

    def _workspace_for(self, rows: int, positions: int) -> StaticKVCache:
        """A cache of ``rows`` rows and at least ``positions`` positions, reused if possible."""
        ws = self._workspace
        if ws is None or ws.batch != rows or ws.capacity < positions:
            self._workspace = None  # free the old buffers before allocating new ones
            capacity = min(self.context_length, -(-positions // CAPACITY_STEP) * CAPACITY_STEP)
            ws = StaticKVCache.allocate(self.cache_shape, rows, capacity)
            self._workspace = ws
        ws.length = 0
        return ws

    def _forward(
        self,
        input_ids: torch.Tensor,
        cache: StaticKVCache,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of the last position, (B, V)."""
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _prefill(self, tokens: tuple[int, ...], cache: StaticKVCache) -> torch.Tensor:
        """Fill a one-row cache with a prompt's KV, reusing a cached prefix; (1, V) logits."""
        match = self.prefix_cache.lookup(tokens) if self.prefix_cache.max_tokens else None
        # At least the last token is computed: its logits choose the first new token.
        reused = min(match.length, len(tokens) - 1) if match is not None and match.entry is not None else 0
        if reused and match is not None and match.entry is not None:
            cache.load_prefix(
                [k[:, :, :reused] for k in match.entry.keys], [v[:, :, :reused] for v in match.entry.values]
            )
        self.last_stats.reused_prefix_tokens += reused
        ids = torch.tensor([tokens[reused:]], dtype=torch.long, device=self.cache_shape.device)
        return self._forward(ids, cache)

    @torch.inference_mode()
    def _run(
        self,
        batch: list[Job],
        params: SamplingParams,
        stop: Sequence[str],
        finished: FinishedCallback | None,
        cancel: CancelToken | None,
    ) -> Iterator[list[SampleText]]:
        """Generate one batch; yields the samples after every step."""
        device = self.cache_shape.device
        stats = self.last_stats
        started = time.perf_counter()
        samples = [SampleText(self.tokenizer, stop, finished) for job in batch for _ in range(job.count)]
        rows = len(samples)
        longest = max(len(job.tokens) for job in batch)
        budget = min(params.max_new_tokens, self.context_length - longest)
        stats.rows += rows
        stats.prompt_tokens += sum(len(job.tokens) for job in batch)
        if budget <= 0:
            for sample in samples:
                sample.finish("", "length")
            yield samples
            return
        cache = self._workspace_for(rows, longest + budget)
        padded = any(len(job.tokens) < longest for job in batch)

        # Prefill: each prompt into the first row of its samples, right-aligned.
        logits_rows: list[torch.Tensor] = []
        first_row = 0
        for job in batch:
            if cancel is not None and cancel.cancelled:
                break
            offset = longest - len(job.tokens)
            if offset:
                for row in range(first_row, first_row + job.count):
                    cache.zero_positions(row, offset)
            logits = self._prefill(job.tokens, cache.rows(first_row, first_row + 1, offset))
            if job.count > 1:
                cache.copy_row_to_rows(first_row, first_row + 1, first_row + job.count, longest)
            logits_rows.append(logits.expand(job.count, -1))
            first_row += job.count
        if cancel is not None and cancel.cancelled:
            for sample in samples:
                sample.finish("", "cancelled")
            yield samples
            return
        cache.length = longest
        logits = torch.cat(logits_rows)  # (rows, V)
        if self.logits_tap is not None:
            self.logits_tap(logits)

        generators = [make_generator(params.seed, device) for _ in batch]
        if params.seed is not None:
            for generator, job in zip(generators, batch, strict=True):
                # Samples numbered from k of a prompt split over batches draw differently.
                generator.manual_seed(params.seed + 1_000_003 * job.first_sample)
        counts = [job.count for job in batch]

        # Left padding: a mask over the cached positions, and each row's own positions.
        mask: torch.Tensor | None = None
        positions: torch.Tensor | None = None
        if padded:
            mask = torch.ones(rows, cache.capacity, dtype=torch.long, device=device)
            lengths = []
            row = 0
            for job in batch:
                for _ in range(job.count):
                    mask[row, : longest - len(job.tokens)] = 0
                    lengths.append(len(job.tokens))
                    row += 1
            positions = torch.tensor(lengths, dtype=torch.long, device=device).unsqueeze(1)  # (rows, 1)

        eos = self.tokenizer.eos_token_id
        decode_started = 0.0
        for step in range(budget):
            next_tokens = choose_tokens(logits, params, generators, counts)  # (rows,)
            if step == 0:
                stats.prefill_seconds += time.perf_counter() - started
                decode_started = time.perf_counter()
            for sample, token in zip(samples, next_tokens.tolist(), strict=True):
                sample.add(token, eos)
            if all(s.done for s in samples):
                break
            if step == budget - 1:
                break
            yield samples
            if cancel is not None and cancel.cancelled:
                for sample in samples:
                    sample.finish(sample.text, "cancelled")
                break
            step_mask = None if mask is None else mask[:, : cache.length + 1]
            step_positions = None if positions is None else positions + step
            logits = self._forward(next_tokens.unsqueeze(1), cache, step_mask, step_positions)
            stats.decode_steps += 1
            if self.logits_tap is not None:
                self.logits_tap(logits)
        for sample in samples:
            sample.finish(sample.text, "length")
        stats.decode_seconds += time.perf_counter() - decode_started
        self._remember_prompts(batch, cache, longest)
        yield samples

    def _remember_prompts(self, batch: list[Job], cache: StaticKVCache, longest: int) -> None:
        """Keep each prompt's KV (still intact: decoding wrote after it) for later prompts."""
        if not self.prefix_cache.max_tokens:
            return
        first_row = 0
        for job in batch:
            offset = longest - len(job.tokens)
            keys, values = cache.rows(first_row, first_row + 1, offset).prefix(0, len(job.tokens))
            self.prefix_cache.store(job.tokens, keys, values)
            first_row += job.count


def load_model(path: str | Path, device: str = "cpu", dtype: str = "fp32") -> CodeGeeXForCausalLM:
    """A model directory (config.json + weights) loaded for inference.

    ``dtype`` is one of fp32, fp16, bf16 or int8 (weight-only int8 linears, see
    ``codeglm.quantize``).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} is not a model directory (no config.json): give a directory written by "
            "`codeglm convert` or `save_pretrained`"
        )
    torch_dtype = DTYPES[dtype]
    if dtype == "int8" and device != "cpu":
        torch_dtype = torch.float16  # weight-only int8 on a GPU computes in fp16
    model = CodeGeeXForCausalLM.from_pretrained(str(directory), dtype=torch_dtype)
    model = model.to(device).eval()
    if dtype == "int8":
        from codeglm.quantize import quantize_int8

        quantize_int8(model)
    store_linear_weights_transposed(model)  # for decode speed; only CPU float linears move
    return model


def load_engine(path: str | Path, device: str = "cpu", dtype: str = "fp32", **engine_kwargs: int) -> Engine:
    """The model and the tokenizer saved in the same directory, as an ``Engine``."""
    from codeglm.tokenizer import load_tokenizer

    model = load_model(path, device=device, dtype=dtype)
    return Engine(model, load_tokenizer(path), **engine_kwargs)


__all__ = [
    "DTYPES",
    "Engine",
    "GenerationStats",
    "Job",
    "SampleText",
    "first_stop",
    "held_back_length",
    "load_engine",
    "load_model",
    "plan_batches",
    "store_linear_weights_transposed",
]
