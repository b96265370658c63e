"""What an OpenAI-compatible server is and how to speak to it, learned once by probing.

Servers that all answer ``/v1/completions`` differ where it matters to an editor, so
the ``openai`` backend asks once, remembers the answer (a ``ServerDialect``) and
adapts, instead of each caller working around a server:

- **llama-cpp-python** (``python -m llama_cpp.server``, 0.3.x), recognised by its
  ``POST /extras/tokenize/count``:
  - counts tokens there (``{"input"}`` -> ``{"count"}``), and tokenizes at
    ``/extras/tokenize`` (``{"tokens"}``); ``/tokenize`` does not exist;
  - ignores ``n`` (always one choice): the backend asks once per sample, sample k
    with ``seed + k`` when seeded, as serve-api does for backends that cannot batch;
  - samples with its own defaults where OpenAI's API means "off": ``top_k`` 40,
    ``min_p`` 0.05 and ``repeat_penalty`` 1.1 (which changes even greedy text). The
    backend sends the neutral values (0, 0.0, 1.0) so a request means the same as
    on serve-api or vLLM;
  - takes ``suffix`` but builds its FIM prompt with token id 0 for all three markers
    (its source says ``# TODO: Fix``), and has no ``/infill``: the backend lays out
    the prefix-suffix-middle prompt itself with the model's FIM markers, which the
    server parses as special tokens in a prompt. The markers are found by asking the
    server to tokenize each known triple (``codeglm.inference.fim``): a triple
    whose three markers are one token each is the model's;
  - does not list the context length: give ``context=`` for exact clipping; the
    server clips ``max_tokens`` to its context on its own.
- **anything else** (serve-api, vLLM, TGI): ``POST /tokenize`` with ``{"prompt"}``
  -> ``{"count"}`` where it exists, ``n`` as asked, FIM through ``suffix`` only when
  ``fim=true`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from codeglm.inference.fim import FIM_TOKEN_TRIPLES

LLAMA_CPP_PYTHON = "llama-cpp-python"
GENERIC = "openai-compatible"


@dataclass(frozen=True)
class ServerDialect:
    """How to speak to one server. ``fim_markers``: (prefix, suffix, middle) texts to lay
    out a FIM prompt client-side, None when the server does not get one that way."""

    kind: str
    one_choice_per_request: bool = False
    neutral_sampling: dict[str, float | int] = field(default_factory=dict)
    count_path: str = "/tokenize"
    count_field: str = "prompt"
    fim_markers: tuple[str, str, str] | None = None


Post = Callable[[str, dict[str, Any]], httpx.Response]


def _llama_cpp_python_count(post: Post, model: str) -> bool:
    """True when the server counts tokens at llama-cpp-python's ``/extras/tokenize/count``."""
    response = post("/extras/tokenize/count", {"input": "probe", "model": model})
    try:
        return response.status_code == 200 and isinstance(response.json().get("count"), int)
    except (ValueError, AttributeError):  # not JSON, or not an object
        return False


def _single_token_fim_markers(post: Post, model: str) -> tuple[str, str, str] | None:
    """The first known FIM triple whose markers the server's tokenizer keeps whole."""
    for triple in FIM_TOKEN_TRIPLES:
        whole = True
        for marker in triple:
            response = post("/extras/tokenize", {"input": marker, "model": model})
            if response.status_code != 200 or len(response.json().get("tokens") or []) != 1:
                whole = False
                break
        if whole:
            return triple
    return None


def probe_dialect(post: Post, model: str) -> ServerDialect:
    """Ask the server (``post(path, body)`` relative to its root, without ``/v1``) what it is.
    Transport errors propagate: a server that cannot be reached has not been identified."""
    if _llama_cpp_python_count(post, model):
        return ServerDialect(
            kind=LLAMA_CPP_PYTHON,
            one_choice_per_request=True,
            neutral_sampling={"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0},
            count_path="/extras/tokenize/count",
            count_field="input",
            fim_markers=_single_token_fim_markers(post, model),
        )
    return ServerDialect(kind=GENERIC)


__all__ = ["GENERIC", "LLAMA_CPP_PYTHON", "ServerDialect", "probe_dialect"]
