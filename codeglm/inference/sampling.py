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

from codeglm.inference.types import SamplingParams


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator seeded with ``seed``, or from the OS when there is none."""
    generator = torch.Generator(device=device)
    # Modulo 2**64: seeds derived from a request's (seed + an offset per sample) may pass
    # the 64 bits torch takes; wrapping keeps them distinct and reproducible.
    generator.manual_seed(seed % 2**64 if seed is not None else secrets.randbits(63))
    return generator


# Top-p finds its nucleus among this many score buckets per row (see ``nucleus``);
# scores more than NUCLEUS_SPAN below a row's largest (a probability under 1e-27 of the
# top token's) all share the last bucket.
NUCLEUS_BUCKETS = 1024
NUCLEUS_SPAN = 64.0


def candidates(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a sample may choose and their probabilities, (B, K) each.

    Temperature first, then top-k (the k most likely), then top-p (the fewest most
    likely tokens holding ``top_p`` of the probability; the most likely always stays).
    Removed tokens keep probability 0. Nothing sorts the full vocabulary.
    """
    scores = logits.float() / params.temperature
    vocab = scores.shape[-1]
    if 0 < params.top_k < vocab:
        scores, tokens = torch.topk(scores, params.top_k, dim=-1)  # sorted, most likely first
        probs = torch.softmax(scores, dim=-1)
        if params.top_p < 1.0:
            mass_before = probs.cumsum(dim=-1) - probs
            probs = probs.masked_fill(mass_before >= params.top_p, 0.0)
        return tokens, probs
    tokens = torch.arange(vocab, device=scores.device).expand_as(scores)
    probs = torch.softmax(scores, dim=-1)
    if params.top_p < 1.0:
        probs = probs * nucleus(scores, probs, params.top_p)
    return tokens, probs


def nucleus(scores: torch.Tensor, probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which tokens are in each row's top-p nucleus, (B, V) bool: a token is in when the
    tokens more likely than it hold less than ``top_p`` of the probability.

    Sorting a 50k vocabulary costs ~4 ms a row, more than a decode step's matmuls, so
    no row is sorted: the tokens go into ``NUCLEUS_BUCKETS`` equal-width score buckets
    (bucket 0 holds the largest score; a higher score never lands in a later bucket),
    per-bucket sums locate the bucket in which the mass reaches ``top_p``, and only that
    bucket's tokens are ordered. (Tokens of equal probability on the boundary may be cut
    in either order, as a sort would.)
    """
    buckets = NUCLEUS_BUCKETS
    low, top = torch.aminmax(scores, dim=-1, keepdim=True)
    span = (top - low).clamp(min=1e-6, max=NUCLEUS_SPAN)
    bucket = ((top - scores) * (buckets / span)).clamp_(0, buckets - 1).long()  # (B, V); a -inf score: the last
    # Sums in float64: tens of thousands of small probabilities (a flat distribution)
    # add up in float32 with errors the size of one token's probability.
    mass = torch.zeros(scores.shape[0], buckets, dtype=torch.float64, device=probs.device)
    mass.scatter_add_(-1, bucket, probs.double())
    mass_through = mass.cumsum(dim=-1)  # (B, buckets): mass of the buckets up to each
    boundary = (mass_through < top_p).sum(dim=-1, keepdim=True).clamp(max=buckets - 1)  # (B, 1)
    mass_before_boundary = (mass_through - mass).gather(-1, boundary)  # (B, 1)
    inside = bucket < boundary
    elsewhere = bucket != boundary
    count = scores.shape[-1] - int(elsewhere.sum(dim=-1).min())  # the most tokens a row has on its boundary
    # The boundary bucket's tokens, most likely first; other rows' fillers are -1.
    values, index = probs.masked_fill(elsewhere, -1.0).topk(count, dim=-1)  # (B, count)
    values = values.double()
    mass_before = mass_before_boundary + values.cumsum(dim=-1) - values
    stays = (values >= 0) & (mass_before < top_p)
    return inside.scatter(-1, index, stays | inside.gather(-1, index))


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
    if all(group.params.greedy for group in groups):
        return torch.argmax(logits, dim=-1)
    chosen = []
    start = 0
    for group in groups:
        part = logits[start : start + len(group.rows)]
        start += len(group.rows)
        if group.params.greedy:
            chosen.append(torch.argmax(part, dim=-1))
            continue
        tokens, probs = candidates(part, group.params)
        u = torch.rand((group.drawn, 1), generator=group.generator, device=probs.device, dtype=probs.dtype)
        if group.rows != tuple(range(group.drawn)):
            u = u[list(group.rows)]
        index = draw(probs, u).unsqueeze(-1)  # (b, 1)
        chosen.append(tokens.gather(-1, index).squeeze(-1))
    return torch.cat(chosen)


__all__ = ["NUCLEUS_BUCKETS", "RowGroup", "candidates", "choose_tokens", "draw", "make_generator", "nucleus"]
