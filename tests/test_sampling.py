"""Top-p without sorting the vocabulary: the same nucleus as a full sort, and draws that
follow the kept probabilities."""

from __future__ import annotations

import pytest
import torch

from codeglm.backends.base import SamplingParams
from codeglm.inference.sampling import RowGroup, candidates, choose_tokens, make_generator, nucleus

VOCAB = 52224


def nucleus_by_sorting(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The definition, by a full sort: a token stays when the more likely ones hold less than top_p."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    stays = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    return torch.zeros_like(stays).scatter(-1, order, stays)


def logits_of(kind: str, rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(rows, VOCAB, generator=generator)
    if kind == "flat":  # a random model: the nucleus is most of the vocabulary
        return noise * 0.05
    if kind == "peaked":  # a trained model: a handful of likely tokens
        return noise * 3.0
    # a few rows with a handful of dominant tokens over a flat rest
    logits = noise * 0.5
    logits[:, :5] += torch.tensor([12.0, 11.5, 11.0, 9.0, 8.0])
    return logits


@pytest.mark.parametrize("kind", ["flat", "peaked", "dominant"])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.95, 0.999])
def test_nucleus_equals_the_full_sort_definition(kind: str, top_p: float) -> None:
    scores = logits_of(kind, 8, seed=int(top_p * 1000)) / 0.8
    probs = torch.softmax(scores, dim=-1)
    got = nucleus(scores, probs, top_p)
    expected = nucleus_by_sorting(probs.double(), top_p)  # float64: no rounding at the boundary
    # Equal probabilities on the boundary may be cut in either order: compare per row
    # the kept probabilities as multisets.
    for row in range(8):
        kept, wanted = probs[row][got[row]], probs[row][expected[row]]
        assert torch.equal(kept.sort().values, wanted.sort().values), f"row {row}: {kept.numel()} vs {wanted.numel()}"
    assert bool(got[torch.arange(8), probs.argmax(-1)].all())  # the most likely always stays


def test_nucleus_of_equal_scores_and_impossible_tokens() -> None:
    scores = torch.zeros(2, 100)
    scores[1, 50:] = float("-inf")  # row 1: 50 possible tokens of equal probability
    probs = torch.softmax(scores, dim=-1)
    kept = nucleus(scores, probs, 0.505)
    # Tokens stay while the ones before hold less than 0.505: 51 of 0.01, 26 of 0.02.
    assert kept.sum(-1).tolist() == [51, 26]
    assert not bool(kept[1, 50:].any())


def test_candidates_zero_the_tokens_outside_the_nucleus() -> None:
    logits = logits_of("dominant", 3, seed=1)
    tokens, probs = candidates(logits, SamplingParams(temperature=0.8, top_p=0.9))
    reference = torch.softmax(logits / 0.8, dim=-1)
    assert torch.equal(tokens[0], torch.arange(VOCAB))
    kept = nucleus_by_sorting(reference, 0.9)
    assert torch.equal(probs > 0, kept)
    assert torch.allclose(probs[kept], reference[kept])


def test_top_p_draws_follow_the_kept_probabilities() -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]]))
    params = SamplingParams(temperature=1.0, top_p=0.85, seed=0)
    draws = 20000
    group = RowGroup(params, make_generator(0, torch.device("cpu")), draws, tuple(range(draws)))
    chosen = choose_tokens(logits.expand(draws, -1), [group])
    counts = torch.bincount(chosen, minlength=5).float() / draws
    assert counts[3:].sum() == 0  # 0.4 + 0.3 + 0.2 >= 0.85: the last two are cut
    expected = torch.tensor([0.4, 0.3, 0.2]) / 0.9
    assert torch.allclose(counts[:3], expected, atol=0.015)  # ~4 standard errors
