"""Build reference CodeGeeX models (codegeex==1.0) and save them as original checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

reference = pytest.importorskip(
    "codegeex.torch.codegeex_model", reason="the reference package: pip install --no-deps codegeex==1.0"
)


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    vocab: int = 1000
    positions: int = 128


# Hidden sizes that are not powers of two; different head counts and depths.
SHAPES = (
    Shape(hidden=160, layers=3, heads=5),
    Shape(hidden=96, layers=2, heads=3, vocab=50432, positions=256),
    Shape(hidden=192, layers=4, heads=12),
)


def reference_model(shape: Shape, seed: int = 0) -> torch.nn.Module:
    """A reference ``CodeGeeXModel`` in fp16 with random, non-trivial weights
    (LayerNorm scales and biases too, so that a mis-mapped tensor shows)."""
    torch.manual_seed(seed)
    model = reference.CodeGeeXModel(shape.hidden, shape.layers, shape.heads, shape.vocab, shape.positions)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.02 * torch.randn_like(param))
            else:
                # Embeddings larger than the rest: peaked logits, so greedy choices are
                # not fp16 near-ties that either implementation could break either way.
                scale = 0.5 if "word_embeddings" in name else 0.05
                param.copy_(scale * torch.randn_like(param))
    return model.half().eval()


def save_original(model: torch.nn.Module, path: Path, nested: bool = True) -> Path:
    """Save as the original release does: ``{"module": nested dicts}`` or flat keys."""
    if nested:
        state = model.state_dict_for_save_checkpoint()
    else:
        state = dict(model.state_dict())
    torch.save({"module": state}, path)
    return path


def causal_mask(positions: int) -> torch.Tensor:
    """The reference's mask: True where attention is not allowed."""
    return torch.triu(torch.ones(1, 1, positions, positions, dtype=torch.bool), diagonal=1)


@torch.no_grad()
def reference_greedy(model: torch.nn.Module, prompt: torch.Tensor, steps: int, positions: int) -> list[int]:
    """Greedy continuation with the reference model's own KV cache (``layer_past``)."""
    mask = causal_mask(positions)
    ids = prompt.clone()
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    logits, past = model(ids, pos, mask, get_key_value=True)
    out: list[int] = []
    for _ in range(steps):
        token = int(logits[0, -1].float().argmax())
        out.append(token)
        position = torch.tensor([[pos.shape[1] + len(out) - 1]])
        logits, past = model(torch.tensor([[token]]), position, mask, layer_past=past, get_key_value=True)
    return out
