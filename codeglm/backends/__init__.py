"""Backends: the only door to a model. See ``base.py`` for the interface.

``load_backend("native:PATH")``, ``load_backend("hf:PATH_OR_HUB_ID")`` and
``load_backend("openai:URL#MODEL")`` give a ``Backend``; ``spec.py`` has the grammar
of backend strings and their options. Implementations are imported only when used,
so naming a remote backend never imports torch.
"""

from __future__ import annotations

import os

from codeglm.backends.base import (
    Backend,
    BackendError,
    CancelledError,
    CancelToken,
    Completion,
    FinishedCallback,
    GenerationRequest,
    ModelFilesError,
    SamplingParams,
)
from codeglm.backends.spec import BackendSpec, BackendSpecError, parse_backend_spec

# Consulted when no backend string is given, before the project's default model.
BACKEND_ENV = "CODEGLM_BACKEND"
NO_DEFAULT_MESSAGE = (
    "no backend given and no default model is installed: give one with --backend, e.g. "
    "--backend native:PATH (a model directory written by `codeglm convert`), "
    "--backend hf:PATH_OR_HUB_ID or --backend openai:http://HOST:PORT/v1#MODEL "
    f"(or set {BACKEND_ENV})"
)


def default_backend_spec() -> str:
    """The backend string used when none is given: ``$CODEGLM_BACKEND``, else the default model."""
    from_env = os.environ.get(BACKEND_ENV, "").strip()
    if from_env:
        return from_env
    try:
        from codeglm.defaults import default_backend_spec as project_default  # type: ignore[import-not-found]
    except ImportError:
        raise BackendError(NO_DEFAULT_MESSAGE) from None
    try:
        spec = project_default()
    except (OSError, ValueError, BackendError) as error:
        raise BackendError(f"{NO_DEFAULT_MESSAGE} ({error})") from error
    if not spec:
        raise BackendError(NO_DEFAULT_MESSAGE)
    return spec


def load_backend(spec: str | BackendSpec | None = None, *, progress: bool = False, **options: object) -> Backend:
    """The backend a string names (None: the default). ``options`` (None values ignored)
    override the string's own ``?key=value`` options; ``progress`` shows a loading bar."""
    parsed = spec if isinstance(spec, BackendSpec) else parse_backend_spec(spec or default_backend_spec())
    parsed = parsed.with_options(**options)
    opts = dict(parsed.options)
    if parsed.kind == "native":
        # Deferred: each backend's own dependencies (torch, transformers, httpx) load only when it is chosen.
        from codeglm.backends.native import NativeBackend

        return NativeBackend.load(parsed.target, progress=progress, **opts)  # type: ignore[arg-type]
    if parsed.kind == "hf":
        from codeglm.backends.hf import HFBackend

        return HFBackend.load(parsed.target, progress=progress, **opts)  # type: ignore[arg-type]
    from codeglm.backends.openai import OpenAIBackend

    return OpenAIBackend(parsed.target, parsed.model, **opts)  # type: ignore[arg-type]


def last_generation(backend: Backend) -> dict[str, float | int] | None:
    """What ``backend``'s last generation did (prompt tokens, prefix reuse, prefill and
    decode seconds) where the backend measures it (native), else None. For the servers'
    stats: how fast decoding really ran behind a door."""
    report = getattr(backend, "last_generation", None)
    return report() if callable(report) else None


__all__ = [
    "BACKEND_ENV",
    "Backend",
    "BackendError",
    "BackendSpec",
    "BackendSpecError",
    "CancelToken",
    "CancelledError",
    "Completion",
    "FinishedCallback",
    "GenerationRequest",
    "ModelFilesError",
    "SamplingParams",
    "default_backend_spec",
    "last_generation",
    "load_backend",
    "parse_backend_spec",
]
