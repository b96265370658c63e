"""Plain request and result types of generation: what the engine takes and gives, and
what every backend speaks (``codeglm.backends.base`` re-exports them for the layers above).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

# Given the text generated so far, return the length to keep if the generation is
# complete (e.g. the block at the cursor just closed), or None to go on.
FinishedCallback = Callable[[str], "int | None"]


class CancelToken:
    """A flag another thread can trip; generation checks it once per decode step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


# Temperatures below this pick the most likely token (as vLLM does): dividing float32
# logits by a smaller number overflows to inf and the probabilities become NaN.
GREEDY_BELOW = 1e-5
# Seeds are 64-bit signed integers, what torch's generators and OpenAI-style servers take.
SEED_RANGE = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. A ``temperature`` under ``GREEDY_BELOW`` (0 included) means greedy."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be a 64-bit signed integer (from -2**63 to 2**63-1), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class Completion:
    """One generated sample.

    ``finish_reason`` is ``"stop"`` (stop string, finished callback or end of text),
    ``"length"`` (max_new_tokens reached) or ``"cancelled"``.
    """

    text: str
    finish_reason: str
    generated_tokens: int


__all__ = ["GREEDY_BELOW", "SEED_RANGE", "CancelToken", "Completion", "FinishedCallback", "SamplingParams"]
