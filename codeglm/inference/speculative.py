"""Speculative decoding with an int8 draft of the model itself.

A decode step at batch 1 reads every weight once to make one token, so a floating-point
model decodes no faster than memory gives it its weights (a fp32 engine already reads at
0.85-0.93 of that bound on the benchmark host, ``docs/benchmarks.md``). An int8 copy
reads a quarter of the bytes and agrees with the model on most next tokens. Each
speculative step lets the draft propose ``room`` tokens one by one, then the model
scores them all in one pass (its weights read once for ``room + 1`` rows) and keeps the
drafted tokens up to the first one it would not have chosen itself, plus its own
choice after them. What comes out is the model's own greedy output, whatever the draft
proposes: a draft only changes how many tokens a step yields.

The draft shares the model's KV cache: it writes its keys and values after the verified
ones, and the model's scoring pass writes over them, so the draft needs no prefill and
no prefix cache of its own. Greedy requests of one sample use it (``Engine``); sampled
ones decode as before.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from codeglm.inference.decode import EngineModel
from codeglm.inference.kv_cache import StaticKVCache
from codeglm.inference.layout import use_decode_layout
from codeglm.inference.quantize import Int8Linear, quantize_int8

# Tokens the draft proposes per step: on Qwen2.5-Coder-0.5B's and StarCoderBase-1B's
# shapes (random weights, 2 cores) 4-6 drafted tokens gave 1.6-1.9x the fp32 decode speed.
DEFAULT_DRAFT_TOKENS = 5
DRAFT_KINDS = ("none", "int8")


def shared_tensor_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s tree of modules holding the same parameter and buffer
    tensors: layers swapped in the copy (``quantize_int8``) leave the original alone,
    and what both keep (embeddings, norms) takes no memory twice."""
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {name: None if child is None else shared_tensor_copy(child) for name, child in module._modules.items()}
    return clone


def int8_draft(model: EngineModel) -> EngineModel:
    """An int8 draft of ``model``: its linear layers quantized (``quantize_int8``), the
    rest shared with it, laid out for decode steps."""
    if any(isinstance(module, Int8Linear) for module in model.modules()):  # type: ignore[attr-defined]
        raise ValueError("the model is already int8: an int8 draft speeds up a floating-point (fp32, fp16, bf16) model")
    draft = shared_tensor_copy(model)  # type: ignore[arg-type]
    quantize_int8(draft)
    use_decode_layout(draft)
    return draft.eval()  # type: ignore[return-value]


def check_draft(model: EngineModel, draft: EngineModel) -> None:
    """Refuse a draft that cannot share ``model``'s cache and vocabulary."""
    for what, ours, theirs in (
        ("vocabulary", model.vocab_size, draft.vocab_size),
        ("context", model.context_length, draft.context_length),
        ("KV cache layout (layers, heads, head size)", model.cache_layout, draft.cache_layout),
    ):
        if ours != theirs:
            raise ValueError(f"the draft model's {what} is {theirs}, the model's {ours}: a draft must be of the same model")


@dataclass(frozen=True)
class SpeculativeStep:
    """What one step made: ``tokens``, the accepted drafted tokens and then the model's
    own next choice; ``logits`` (len(tokens), V), the model's logits that chose each."""

    tokens: list[int]
    logits: torch.Tensor
    drafted: int

    @property
    def accepted(self) -> int:
        return len(self.tokens) - 1


def speculative_step(
    model: EngineModel, draft: EngineModel, cache: StaticKVCache, token: int, room: int
) -> SpeculativeStep:
    """After ``token`` (chosen, not yet in ``cache``, which holds one row), up to ``room + 1``
    tokens of the model's greedy continuation, and the cache advanced over all of them but
    the last (the next step's ``token``). ``cache`` needs ``room + 1`` free positions."""
    device = cache.keys[0].device
    start = cache.length
    drafted: list[int] = []
    previous = token
    for i in range(room):
        logits = draft.decode(torch.tensor([[previous]], device=device), torch.tensor([[start + i]], device=device), None, cache)
        previous = int(logits[0].argmax())
        drafted.append(previous)
    cache.length = start  # the model's pass writes its own keys and values over the draft's
    scored = model.score(torch.tensor([[token, *drafted]], device=device), cache)[0]  # (room + 1, V)
    best = scored.argmax(-1).tolist()
    accepted = 0
    while accepted < room and drafted[accepted] == best[accepted]:
        accepted += 1
    cache.length = start + accepted + 1
    return SpeculativeStep(drafted[:accepted] + [best[accepted]], scored[: accepted + 1], room)


__all__ = ["DEFAULT_DRAFT_TOKENS", "DRAFT_KINDS", "SpeculativeStep", "check_draft", "int8_draft", "speculative_step"]
