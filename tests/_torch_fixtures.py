"""Shared by the model-level tests: small random CodeGeeX models, and one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.config import CodeGeeXConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and a shared machine makes
    OpenMP threads wait for each other. (Autouse in each module that imports it.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_model(
    vocab_size: int, hidden_size: int, layers: int, heads: int, context: int, seed: int = 0, **config: object
) -> CodeGeeXForCausalLM:
    """A CodeGeeX model of this shape with random weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    shape = CodeGeeXConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
        max_position_embeddings=context, **config,
    )
    return CodeGeeXForCausalLM(shape).eval()
