"""How the engine plans its work: requests (``PromptRequest``) split into jobs of at most a
batch's rows, jobs grouped into batches that fit the context, the per-job seed, and the
stable text each step reports (``SampleUpdate``). Plain data and pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from codeglm.inference.text_rules import Sample
from codeglm.inference.types import CancelToken, Completion, FinishedCallback, SamplingParams


class Tokenizer(Protocol):
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class PromptRequest:
    """``n`` samples of one prompt (token ids) with their own sampling parameters, stop
    strings, ``finished`` callback and cancel token. Requests that differ in any of
    these still share a batch."""

    tokens: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    stop: tuple[str, ...] = ()
    finished: FinishedCallback | None = None
    cancel: CancelToken | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled


@dataclass(frozen=True)
class SampleUpdate:
    """What one sample did since the last update: new stable text (``delta``, possibly
    empty) and, in its last update, its ``completion``."""

    prompt_index: int
    sample_index: int
    delta: str
    completion: Completion | None = None


@dataclass(frozen=True)
class Job:
    """``count`` samples of prompt ``prompt_index``, numbered from ``first_sample``, each
    generating at most ``budget`` tokens."""

    prompt_index: int
    tokens: tuple[int, ...]
    first_sample: int
    count: int
    budget: int


def split_into_jobs(requests: Sequence[PromptRequest], max_rows: int, context: int) -> list[Job]:
    """One job per request, or more when it has more than ``max_rows`` samples; a job's
    budget is its ``max_new_tokens`` clipped to the room its prompt leaves."""
    return [
        Job(i, request.tokens, first, min(max_rows, request.n - first),
            min(request.params.max_new_tokens, context - len(request.tokens)))
        for i, request in enumerate(requests)
        for first in range(0, request.n, max_rows)
    ]


def plan_batches(jobs: Sequence[Job], max_rows: int, context: int) -> list[list[Job]]:
    """Group jobs into batches of at most ``max_rows`` rows, first come first placed.

    A job joins a batch only if the batch's longest prompt plus its largest budget
    still fits the context (rows are left-padded to the longest prompt), so batching
    never shortens a completion.
    """
    batches: list[list[Job]] = []
    for job in jobs:
        for batch in batches:
            rows = sum(j.count for j in batch) + job.count
            longest = max(len(j.tokens) for j in (*batch, job))
            steps = max(j.budget for j in (*batch, job))
            if rows <= max_rows and longest + steps <= context:
                batch.append(job)
                break
        else:
            batches.append([job])
    return batches


def should_drop_finished_rows(finished: int, rows: int) -> bool:
    """Whether to take ``finished`` rows out of a batch of ``rows`` before the next step.

    Dropping moves every remaining row's cache (about what one step's attention reads),
    while a finished row left in costs a share of every later step. So rows are dropped
    once they are a quarter of the batch: at once in batches of up to four rows, by
    twos in a batch of eight.
    """
    return finished > 0 and 4 * finished >= rows


def sample_updates(
    jobs: Sequence[Job], samples: Sequence[Sequence[Sample]], ended: set[tuple[int, int]]
) -> list[SampleUpdate]:
    """The updates of the jobs' samples since the last call; ``ended`` remembers which
    samples already had their last one."""
    updates = []
    for job in jobs:
        for k in range(job.first_sample, job.first_sample + job.count):
            if (job.prompt_index, k) in ended:
                continue
            sample = samples[job.prompt_index][k]
            delta = sample.take_delta()
            if sample.done:
                ended.add((job.prompt_index, k))
                updates.append(SampleUpdate(job.prompt_index, k, delta, sample.completion()))
            elif delta:
                updates.append(SampleUpdate(job.prompt_index, k, delta))
    return updates


def job_seed(params: SamplingParams, job: Job) -> int | None:
    """The seed of a job's generator: samples numbered from k of a prompt split over
    several jobs draw differently from those numbered from 0."""
    return None if params.seed is None else params.seed + 1_000_003 * job.first_sample


__all__ = ["Job", "PromptRequest", "SampleUpdate", "Tokenizer", "job_seed", "plan_batches", "sample_updates", "should_drop_finished_rows", "split_into_jobs"]
