"""The backend the server completes with, loaded once, in the background.

Loading a model takes seconds (importing torch alone takes a few), and an editor
waits for the answer to ``initialize`` before it shows anything, so the server answers
at once and loads here on a thread. Changing the ``backend`` setting loads the new one
the same way; the old one serves until the new one is ready.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from codeglm.backends.base import Backend, BackendError

log = logging.getLogger(__name__)

LOADING = "loading"
READY = "ready"
GENERATING = "generating"
ERROR = "error"
DISABLED = "disabled"

BackendLoader = Callable[[str | None], Backend]


@dataclass(frozen=True)
class LoadState:
    """Where loading stands: ``state`` is loading, ready or error."""

    state: str
    message: str
    spec: str | None


def load_backend(spec: str | None) -> Backend:
    """The backend for ``spec`` (None: the default model) via ``codeglm.backends``."""
    try:
        from codeglm.backends import load_backend as loader  # type: ignore[attr-defined]
    except ImportError as exc:
        raise BackendError(
            "this codeglm installation has no backend loader (codeglm.backends.load_backend); "
            "reinstall codeglm with backends"
        ) from exc
    return loader(spec)


def describe(spec: str | None) -> str:
    return spec if spec else "the default model"


class ModelHolder:
    """Holds the current backend and loads replacements on a background thread."""

    def __init__(self, loader: BackendLoader, on_change: Callable[[LoadState], None]) -> None:
        self._loader = loader
        self._on_change = on_change
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._backend: Backend | None = None
        self._generation = 0  # bumps with every load; a stale load's result is dropped
        self.state = LoadState(LOADING, "starting", None)

    @property
    def backend(self) -> Backend | None:
        return self._backend

    def load(self, spec: str | None) -> None:
        """Start loading ``spec`` in the background (returns at once)."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            if self._backend is None:
                self._ready.clear()
        self._set_state(LoadState(LOADING, f"loading {describe(spec)}", spec))
        thread = threading.Thread(target=self._load, args=(spec, generation), name="codeglm-load", daemon=True)
        thread.start()

    def _load(self, spec: str | None, generation: int) -> None:
        started = time.perf_counter()
        try:
            backend = self._loader(spec)
        except Exception as exc:  # a boundary: any failure becomes a message for the user
            message = _load_error_message(spec, exc)
            with self._lock:
                stale = generation != self._generation
                if self._backend is not None:
                    message += "; completions keep using the previous backend"
            if not stale:
                log.error("%s", message)
                self._set_state(LoadState(ERROR, message, spec))
                self._ready.set()  # waiting requests give up now instead of timing out
            return
        with self._lock:
            stale = generation != self._generation
            if stale:
                old = backend
            else:
                old, self._backend = self._backend, backend
        if old is not None:
            _close_quietly(old)
        if not stale:
            message = f"{describe(spec)} loaded in {time.perf_counter() - started:.1f} s"
            log.info("%s", message)
            self._set_state(LoadState(READY, message, spec))
            self._ready.set()

    def wait(self, timeout: float) -> Backend | None:
        """The backend, waiting up to ``timeout`` seconds for a first load to finish."""
        self._ready.wait(timeout)
        return self._backend

    def close(self) -> None:
        with self._lock:
            self._generation += 1
            backend, self._backend = self._backend, None
        if backend is not None:
            _close_quietly(backend)

    def _set_state(self, state: LoadState) -> None:
        self.state = state
        try:
            self._on_change(state)
        except Exception:  # never let a notification failure kill the loader
            log.exception("reporting the model state failed")


def _load_error_message(spec: str | None, exc: Exception) -> str:
    if isinstance(exc, BackendError | FileNotFoundError | ValueError):
        detail = str(exc)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return (
        f"could not load {describe(spec)}: {detail}. Set codeglm.backend to a working backend "
        "(e.g. native:MODEL_DIR, openai:URL#MODEL) or start the server with --backend"
    )


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing the previous backend failed")
