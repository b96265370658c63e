"""The generation engine: prefill, then decode into a preallocated KV cache.

One call runs its requests (``PromptRequest``: a prompt, ``n``, sampling parameters,
stop strings, a ``finished`` callback and a cancel token, each its own) in as few
batches as ``max_batch_size`` allows. In a batch each prompt is prefilled on its own
(so a shared token prefix with a recent prompt is taken from the prefix cache rather
than recomputed) into the first row of its samples, left-padded to the batch's
longest prompt, and copied to the rows of its other samples; then all rows decode
together, one token per step, each step writing into the same preallocated cache
(see ``codeglm.inference.kv_cache``). Each row samples with its own request's parameters
(``codeglm.inference.sampling.choose_tokens``). Rows whose samples have ended are taken out of
the batch (their cache rows compacted away) once they are a quarter of it, so they
stop costing compute while the others go on.

Text rules, checked as tokens arrive: a sample ends at end-of-text, at the first
occurrence of a stop string (which is not returned), when the ``finished`` callback
returns a length to keep, at its ``max_new_tokens`` or at the context's end, or when
its request's ``CancelToken`` is tripped (checked before every model step; the other
requests go on). ``stream_requests`` reports, after every step, the new text of each
sample that can no longer change: never a partial UTF-8 character, never the start
of a stop string that might still complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import torch

from codeglm.inference import model_thread
from codeglm.inference.decode import EngineModel
from codeglm.inference.jobs import (
    Job,
    PromptRequest,
    SampleUpdate,
    Tokenizer,
    job_seed,
    plan_batches,
    sample_updates,
    should_drop_finished_rows,
    split_into_jobs,
)
from codeglm.inference.kv_cache import CacheShape, StaticKVCache
from codeglm.inference.layout import use_decode_layout
from codeglm.inference.prefix_cache import PrefixCache
from codeglm.inference.sampling import RowGroup, choose_tokens, make_generator
from codeglm.inference.speculative import DEFAULT_DRAFT_TOKENS, check_draft, speculative_step
from codeglm.inference.text_rules import Sample
from codeglm.inference.types import CancelToken, Completion, FinishedCallback, SamplingParams

DEFAULT_PREFIX_CACHE_TOKENS = 8192
# Cache capacity grows in steps of this many positions, so that similar requests
# reuse one allocation instead of each faulting in fresh pages.
CAPACITY_STEP = 256


@dataclass
class GenerationStats:
    """What the last ``generate`` / ``stream`` call did, for benchmarks and logs."""

    prompt_tokens: int = 0
    reused_prefix_tokens: int = 0  # taken from the prefix cache instead of computed
    prefill_seconds: float = 0.0  # until the first tokens were chosen
    decode_steps: int = 0  # tokens each row decoded after its first (one a step without a draft)
    decode_seconds: float = 0.0
    speculative_steps: int = 0  # model passes that checked drafted tokens (``draft``)
    drafted_tokens: int = 0
    accepted_draft_tokens: int = 0
    rows: int = 0
    dropped_rows: int = 0  # finished rows taken out of their batch before it ended


class Engine:
    """Generates completions from a model (CodeGeeX, or another family's ``Decoder``):
    batched, streamed, cancellable."""

    def __init__(
        self,
        model: EngineModel,
        tokenizer: Tokenizer,
        *,
        max_batch_size: int = 8,
        prefix_cache_size: int = DEFAULT_PREFIX_CACHE_TOKENS,
        decode_layout: bool = False,
        draft: EngineModel | None = None,
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
    ) -> None:
        """``prefix_cache_size`` bounds the prefix cache in tokens over all its entries
        (each token costs ``cache_shape.bytes_per_token`` bytes); 0 disables it.
        ``decode_layout``: lay the model's weights out as decoding reads them fastest
        (``use_decode_layout``; in place; ``load_model`` already does it).
        ``draft``: a cheaper copy of the model (``codeglm.inference.speculative.int8_draft``)
        that proposes ``draft_tokens`` tokens a step for greedy one-sample requests, which
        the model checks in one pass (``speculative_step``): the same tokens, sooner."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if draft_tokens < 1:
            raise ValueError(f"draft_tokens must be >= 1, got {draft_tokens}")
        if draft is not None:
            check_draft(model, draft)
            if activation_dtype(draft) != activation_dtype(model):
                raise ValueError(
                    f"the draft computes in {activation_dtype(draft)}, the model in {activation_dtype(model)}: "
                    "they must share one KV cache"
                )
        if decode_layout:
            model_thread.run(lambda: use_decode_layout(model))
        self.model = model.eval()
        self.draft = None if draft is None else draft.eval()
        self.draft_tokens = draft_tokens
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.context_length: int = model.context_length
        self.vocab_size: int = model.vocab_size
        layers, heads, head_dim = model.cache_layout
        weight = next(iter(model.parameters()))
        self.cache_shape = CacheShape(
            layers=layers, heads=heads, head_dim=head_dim, dtype=activation_dtype(model), device=weight.device
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
        return self.generate_requests(
            [PromptRequest(tuple(tokens), params, n, tuple(stop), finished, cancel) for tokens in prompts]
        )

    def generate_requests(self, requests: Sequence[PromptRequest]) -> list[list[Completion]]:
        """The completions of each request, in request order, decoded together."""
        results: list[list[Completion | None]] = [[None] * request.n for request in requests]
        for updates in self.stream_requests(requests):
            for update in updates:
                if update.completion is not None:
                    results[update.prompt_index][update.sample_index] = update.completion
        return [[c for c in per_prompt if c is not None] for per_prompt in results]

    def stream_requests(self, requests: Sequence[PromptRequest]) -> Generator[list[SampleUpdate], None, None]:
        """Decode several requests in as few batches as fit; after every step, the
        updates of the samples that have new stable text or have just ended (each
        sample's last update carries its completion).

        Prompts are checked now (``ValueError``); generation runs as the result is
        iterated, holding the engine for that long. A request whose cancel token is
        tripped ends ("cancelled") within one step; the others go on.
        """
        for request in requests:
            self._check_prompt(request.tokens)
        # On the one thread that runs this process's model math (see model_thread: a
        # second thread's OpenMP team slows every decode step by a third on 2 cores).
        return model_thread.relay(self._stream_requests(tuple(requests)))

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        stop: Sequence[str] = (),
        finished: FinishedCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]:
        """Text deltas of one sample as they become final (see the module docstring)."""
        request = PromptRequest(tuple(self.tokenizer.encode(prompt)), params, 1, tuple(stop), finished, cancel)
        steps = self.stream_requests([request])
        return (update.delta for updates in steps for update in updates if update.delta)

    # --- the generation loop ----------------------------------------------------

    def _check_prompt(self, tokens: Sequence[int]) -> None:
        if not tokens:
            raise ValueError("empty prompt: give at least one token of text to continue")
        if len(tokens) >= self.context_length:
            raise ValueError(
                f"prompt of {len(tokens)} tokens does not fit the model's context of "
                f"{self.context_length} tokens: shorten it"
            )

    def _stream_requests(self, requests: tuple[PromptRequest, ...]) -> Generator[list[SampleUpdate], None, None]:
        samples = [[Sample(r.stop, r.finished, self.tokenizer.decode) for _ in range(r.n)] for r in requests]
        ended: set[tuple[int, int]] = set()
        with self._lock:
            self.last_stats = GenerationStats()
            jobs = split_into_jobs(requests, self.max_batch_size, self.context_length)
            to_run: list[Job] = []
            for job in jobs:
                reason = "cancelled" if requests[job.prompt_index].cancelled else "length" if job.budget <= 0 else None
                if reason is None:
                    to_run.append(job)
                    continue
                for k in range(job.first_sample, job.first_sample + job.count):
                    samples[job.prompt_index][k].finish("", reason)
            updates = sample_updates(jobs, samples, ended)
            if updates:
                yield updates
            for batch in plan_batches(to_run, self.max_batch_size, self.context_length):
                for _ in self._run(batch, requests, samples):
                    updates = sample_updates(batch, samples, ended)
                    if updates:
                        yield updates

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

    def _forward(self, input_ids: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """Logits of the last position, (B, V), of unpadded ``input_ids`` after the cache's."""
        return self.model.prefill(input_ids, cache)

    def _decode_step(
        self, tokens: torch.Tensor, cache: StaticKVCache, positions: torch.Tensor | None, padding: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits (B, V) of one new token per row, (B, 1), at ``positions`` (B, 1) or, if
        None, at the cache's length; ``padding`` (B, S) is False at left-padding positions."""
        if positions is None:
            positions = torch.full((1, 1), cache.length, dtype=torch.long, device=tokens.device)
        mask = None if padding is None else padding[:, None, None, :]  # (B, 1, 1, S): one query sees all real keys
        return self.model.decode(tokens, positions, mask, cache)

    def _prefill(self, tokens: tuple[int, ...], cache: StaticKVCache) -> torch.Tensor:
        """Fill a one-row cache with a prompt's KV, reusing a cached prefix; (1, V) logits.

        The prompt's KV is then remembered at once, so a later prompt of the same batch
        can reuse it too."""
        match = self.prefix_cache.lookup(tokens) if self.prefix_cache.max_tokens else None
        # At least the last token is computed: its logits choose the first new token.
        reused = min(match.length, len(tokens) - 1) if match is not None and match.entry is not None else 0
        if reused and match is not None and match.entry is not None:
            cache.load_prefix(
                [k[:, :, :reused] for k in match.entry.keys], [v[:, :, :reused] for v in match.entry.values]
            )
        self.last_stats.reused_prefix_tokens += reused
        ids = torch.tensor([tokens[reused:]], dtype=torch.long, device=self.cache_shape.device)
        logits = self._forward(ids, cache)
        if self.prefix_cache.max_tokens:
            keys, values = cache.prefix(0, len(tokens))
            self.prefix_cache.store(tokens, keys, values)
        return logits

    @torch.inference_mode()
    def _run(
        self, batch: list[Job], requests: Sequence[PromptRequest], samples: Sequence[Sequence[Sample]]
    ) -> Iterator[None]:
        """Generate one batch; yields after every step and once at the end."""
        device = self.cache_shape.device
        stats = self.last_stats
        started = time.perf_counter()
        # Row r of the batch is sample row_keys[r][1] of batch[row_keys[r][0]].
        row_keys = [(j, k) for j, job in enumerate(batch) for k in range(job.count)]
        rows = len(row_keys)
        longest = max(len(job.tokens) for job in batch)
        stats.rows += rows
        stats.prompt_tokens += sum(len(job.tokens) for job in batch)
        cache = self._workspace_for(rows, longest + max(job.budget for job in batch))
        speculative = self.draft is not None and rows == 1 and requests[batch[0].prompt_index].params.greedy
        padded = any(len(job.tokens) < longest for job in batch)

        # Prefill: each prompt into the first row of its samples, right-aligned. A
        # prompt cancelled meanwhile is not computed: its rows hold zeros (never NaN,
        # which attention would spread as 0 * NaN) until they leave the batch.
        logits_rows: list[torch.Tensor] = []
        first_row = 0
        for job in batch:
            offset = longest - len(job.tokens)
            if requests[job.prompt_index].cancelled:
                for k in range(job.count):
                    cache.zero_positions(first_row + k, longest)
                    samples[job.prompt_index][job.first_sample + k].finish("", "cancelled")
                logits_rows.append(torch.zeros(job.count, self.vocab_size, dtype=self.cache_shape.dtype, device=device))
            else:
                if offset:
                    for row in range(first_row, first_row + job.count):
                        cache.zero_positions(row, offset)
                logits = self._prefill(job.tokens, cache.rows(first_row, first_row + 1, offset))
                if job.count > 1:
                    cache.copy_row_to_rows(first_row, first_row + 1, first_row + job.count, longest)
                logits_rows.append(logits.expand(job.count, -1))
            first_row += job.count
        cache.length = longest
        logits = torch.cat(logits_rows)  # (rows, V)
        if self.logits_tap is not None:
            self.logits_tap(logits)

        generators = [make_generator(job_seed(requests[job.prompt_index].params, job), device) for job in batch]

        def row_groups() -> list[RowGroup]:
            groups = []
            for j, job in enumerate(batch):
                live = tuple(k for jj, k in row_keys if jj == j)
                if live:
                    groups.append(RowGroup(requests[job.prompt_index].params, generators[j], job.count, live))
            return groups

        def row_samples() -> list[Sample]:
            return [samples[batch[j].prompt_index][batch[j].first_sample + k] for j, k in row_keys]

        groups, live_samples = row_groups(), row_samples()
        # Left padding: which cached positions are real, and each row's own positions.
        mask: torch.Tensor | None = None
        positions: torch.Tensor | None = None
        if padded:
            mask = torch.ones(rows, cache.capacity, dtype=torch.bool, device=device)
            for row, (j, _) in enumerate(row_keys):
                mask[row, : longest - len(batch[j].tokens)] = False
            lengths = [len(batch[j].tokens) for j, _ in row_keys]
            positions = torch.tensor(lengths, dtype=torch.long, device=device).unsqueeze(1)  # (rows, 1)

        eos_ids = getattr(self.tokenizer, "eos_token_ids", None) or frozenset([self.tokenizer.eos_token_id])
        if speculative:
            yield from self._decode_speculative(batch[0], requests[batch[0].prompt_index], live_samples[0], logits, cache,
                                                eos_ids, started)
            return
        decode_started = time.perf_counter()
        step = 0
        while True:
            next_tokens = choose_tokens(logits, groups)  # (rows,)
            if step == 0:
                stats.prefill_seconds += time.perf_counter() - started
                decode_started = time.perf_counter()
            for (j, _), sample, token in zip(row_keys, live_samples, next_tokens.tolist(), strict=True):
                sample.add_token(token, token if token in eos_ids else -1)
                if len(sample.token_ids) >= batch[j].budget:
                    sample.finish(sample.text, "length")  # no-op when it has just ended otherwise
            yield
            for job in batch:  # a cancel that came while the step's text was read
                if requests[job.prompt_index].cancelled:
                    for k in range(job.count):
                        sample = samples[job.prompt_index][job.first_sample + k]
                        sample.finish(sample.text, "cancelled")
            finished = [s.done for s in live_samples]
            if all(finished):
                break
            if should_drop_finished_rows(sum(finished), len(live_samples)):
                keep = [row for row, done in enumerate(finished) if not done]
                stats.dropped_rows += len(finished) - len(keep)
                cache = cache.keep_rows(keep)
                index = torch.tensor(keep, dtype=torch.long, device=device)
                next_tokens = next_tokens[index]
                mask = None if mask is None else mask[index]
                positions = None if positions is None else positions[index]
                row_keys = [row_keys[row] for row in keep]
                groups, live_samples = row_groups(), row_samples()
            step_mask = None if mask is None else mask[:, : cache.length + 1]
            step_positions = None if positions is None else positions + step
            logits = self._decode_step(next_tokens.unsqueeze(1), cache, step_positions, step_mask)
            stats.decode_steps += 1
            step += 1
            if self.logits_tap is not None:
                self.logits_tap(logits)
        stats.decode_seconds += time.perf_counter() - decode_started
        yield

    def _decode_speculative(
        self,
        job: Job,
        request: PromptRequest,
        sample: Sample,
        logits: torch.Tensor,
        cache: StaticKVCache,
        eos_ids: frozenset[int],
        started: float,
    ) -> Iterator[None]:
        """The decode loop of one greedy sample with the draft (``speculative_step``): the
        text rules, the budget and cancellation as in ``_run``, checked after every token."""
        assert self.draft is not None
        stats = self.last_stats
        tokens = [int(logits[0].argmax())]
        stats.prefill_seconds += time.perf_counter() - started
        decode_started = time.perf_counter()
        while True:
            for token in tokens:
                sample.add_token(token, token if token in eos_ids else -1)
                if len(sample.token_ids) >= job.budget:
                    sample.finish(sample.text, "length")  # no-op when it has just ended otherwise
                if sample.done:
                    break
            yield
            if request.cancelled:
                sample.finish(sample.text, "cancelled")
            if sample.done:
                break
            # The step yields at most room + 1 tokens and writes as many cache positions.
            room = min(self.draft_tokens, job.budget - len(sample.token_ids) - 1)
            step = speculative_step(self.model, self.draft, cache, tokens[-1], room)
            tokens = step.tokens
            stats.decode_steps += len(tokens)
            stats.speculative_steps += 1
            stats.drafted_tokens += step.drafted
            stats.accepted_draft_tokens += step.accepted
            if self.logits_tap is not None:
                for row in step.logits:
                    self.logits_tap(row.unsqueeze(0))
        stats.decode_seconds += time.perf_counter() - decode_started
        yield


def activation_dtype(model: EngineModel) -> torch.dtype:
    """The floating type the model computes in (its first floating parameter's; an int8
    model's embeddings)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    raise ValueError("the model has no floating-point parameters")


__all__ = ["DEFAULT_PREFIX_CACHE_TOKENS", "Engine", "GenerationStats"]
