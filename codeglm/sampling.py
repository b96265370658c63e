"""Choosing the next token from logits: greedy, temperature, top-k and top-p.

Each prompt's rows sample with the prompt's own parameters and draw from its own
``torch.Generator``, seeded from ``SamplingParams.seed``: the same seed gives the
same samples, whatever other prompts share the batch and whichever samples have
already ended.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from codeglm.backends.base import SamplingParams


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator seeded with ``seed``, or from the OS when there is none."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def candidates(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a sample may choose and their probabilities, (B, K) each.

    Temperature first, then top-k (the k most likely), then top-p (the fewest most
    likely tokens holding ``top_p`` of the probability; the most likely always stays).
    Removed tokens keep probability 0. Only top-p needs the full vocabulary sorted.
    """
    scores = logits.float() / params.temperature
    vocab = scores.shape[-1]
    if 0 < params.top_k < vocab:
        scores, tokens = torch.topk(scores, params.top_k, dim=-1)  # sorted, most likely first
    elif params.top_p < 1.0:
        scores, tokens = torch.sort(scores, dim=-1, descending=True)
    else:
        tokens = torch.arange(vocab, device=scores.device).expand_as(scores)
    probs = torch.softmax(scores, dim=-1)
    if params.top_p < 1.0:
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= params.top_p, 0.0)
    return tokens, probs


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One index per row drawn with the rows' (unnormalised) probabilities, (B,):
    the one the row's uniform number ``u`` (B, 1) in [0, 1) picks.

    Inverse-CDF sampling: one uniform number per row and a binary search, much cheaper
    than ``torch.multinomial`` over a 50k vocabulary. A zero-probability index is never
    drawn (its CDF step is empty).
    """
    cdf = probs.cumsum(dim=-1)  # (B, K)
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return index.clamp(max=probs.shape[-1] - 1).squeeze(-1)


@dataclass(frozen=True)
class RowGroup:
    """Consecutive rows of a batch that sample alike: the samples of one prompt still decoded.

    Every step draws ``drawn`` numbers from ``generator`` (one per sample the prompt
    started with) and the rows take the ones at ``rows``: a sample's draws then do not
    depend on which of its siblings have ended and left the batch.
    """

    params: SamplingParams
    generator: torch.Generator
    drawn: int
    rows: tuple[int, ...]


def choose_tokens(logits: torch.Tensor, groups: Sequence[RowGroup]) -> torch.Tensor:
    """The next token of each row, (B,) int64, from its (B, V) logits.

    ``groups`` cover the rows in order, each with its own sampling parameters, so
    requests with different temperatures, top-p, top-k or seeds share one batch.
    """
    if all(group.params.temperature == 0 for group in groups):
        return torch.argmax(logits, dim=-1)
    chosen = []
    start = 0
    for group in groups:
        part = logits[start : start + len(group.rows)]
        start += len(group.rows)
        if group.params.temperature == 0:
            chosen.append(torch.argmax(part, dim=-1))
            continue
        tokens, probs = candidates(part, group.params)
        u = torch.rand((group.drawn, 1), generator=group.generator, device=probs.device, dtype=probs.dtype)
        if group.rows != tuple(range(group.drawn)):
            u = u[list(group.rows)]
        index = draw(probs, u).unsqueeze(-1)  # (b, 1)
        chosen.append(tokens.gather(-1, index).squeeze(-1))
    return torch.cat(chosen)


__all__ = ["RowGroup", "candidates", "choose_tokens", "draw", "make_generator"]
