"""Choosing the next token from logits: greedy, temperature, top-k and top-p.

Sampled rows draw from a ``torch.Generator`` per prompt, seeded from
``SamplingParams.seed``: the same seed gives the same samples, whatever other
prompts share the batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

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


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row drawn with the rows' (unnormalised) probabilities, (B,).

    Inverse-CDF sampling: one uniform number per row and a binary search, much cheaper
    than ``torch.multinomial`` over a 50k vocabulary. A zero-probability index is never
    drawn (its CDF step is empty).
    """
    cdf = probs.cumsum(dim=-1)  # (B, K)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype)
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return index.clamp(max=probs.shape[-1] - 1).squeeze(-1)


def choose_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    generators: Sequence[torch.Generator],
    rows_per_generator: Sequence[int],
) -> torch.Tensor:
    """The next token of each row, (B,) int64, from its (B, V) logits.

    Rows are split in consecutive groups, ``rows_per_generator[i]`` rows drawing from
    ``generators[i]`` (the samples of one prompt).
    """
    if params.temperature == 0:
        return torch.argmax(logits, dim=-1)
    tokens, probs = candidates(logits, params)
    chosen = []
    start = 0
    for generator, count in zip(generators, rows_per_generator, strict=True):
        chosen.append(draw(probs[start : start + count], generator))
        start += count
    index = torch.cat(chosen).unsqueeze(-1)  # (B, 1)
    return tokens.gather(-1, index).squeeze(-1)


__all__ = ["candidates", "choose_tokens", "draw", "make_generator"]
