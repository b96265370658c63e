"""Completion for the server: LSP document + position in, text and LSP range out.

Everything between the protocol handlers and ``codeglm.completion.pipeline.complete`` lives here:
language checks, the answer cache, cancelling superseded requests, waiting for a model
that is still loading, running generation on a worker thread so the event loop keeps
serving, and turning failures into messages for the user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from codeglm.backends.base import Backend, BackendError, CancelToken
from codeglm.completion.pipeline import (
    CompletionRequest,
    CompletionResult,
    ContextCache,
    OpenDocument,
    WorkspaceContext,
    complete,
)
from codeglm.languages import UnsupportedLanguageError, get_language, language_for_path
from lsp.model_holder import DISABLED, ERROR, GENERATING, READY, ModelHolder
from lsp.positions import index_to_utf16, line_at, utf16_to_index
from lsp.requests import AnswerCache, LatestRequests
from lsp.settings import Settings

log = logging.getLogger(__name__)

# (level, message): level is "error", "warning" or "info"
MessageSink = Callable[[str, str], None]
StatusSink = Callable[[str, str], None]
# The repository context for a completion, asked on the completion's thread (None: none).
WorkspaceSource = Callable[[], WorkspaceContext | None]


@dataclass(frozen=True)
class DocumentSnapshot:
    """An open document as the server's workspace holds it."""

    uri: str
    text: str
    version: int | None
    language_id: str
    path: str | None


@dataclass(frozen=True)
class CompletionAnswer:
    """Text to insert, and the LSP range (one line, UTF-16 columns) it replaces."""

    text: str
    line: int
    start_character: int
    end_character: int
    multiline: bool
    # Other distinct completions at the same cursor (when more than one was asked for).
    alternatives: tuple[CompletionAnswer, ...] = ()


def resolve_language_id(language_id: str, path: str | None) -> str | None:
    """The project's language id for an LSP ``languageId`` (or the file's extension)."""
    try:
        return get_language(language_id).id
    except UnsupportedLanguageError:
        by_path = language_for_path(path) if path else None
        return by_path.id if by_path else None


def window_lines(text: str, line: int, context_lines: int | None) -> tuple[str, int]:
    """The lines within ``context_lines`` of ``line`` and the index of the first one kept."""
    if context_lines is None:
        return text, 0
    lines = text.split("\n")
    first = max(0, line - context_lines)
    last = min(len(lines), line + context_lines + 1)
    return "\n".join(lines[first:last]), first


class CompletionService:
    """Serves completion requests; one instance per server."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        on_status: StatusSink,
        on_message: MessageSink,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self._on_status = on_status
        self._on_message = on_message
        self.latest = LatestRequests()
        self.cache: AnswerCache[CompletionAnswer | None] = AnswerCache(settings.cache_size)
        self.contexts = ContextCache()
        self._active = 0
        self._last_status: tuple[str, str] | None = None
        self._warned_languages: set[str] = set()
        self._last_error: str | None = None
        self._error_load_state: object = None
        self.workspace: WorkspaceSource = lambda: None
        # The last completion's result (prompt, snippets, why nothing was shown), for
        # ``codeglm.showLastPrompt``, and the path it was for.
        self.last_result: CompletionResult | None = None
        self.last_path: str | None = None

    # --- status -------------------------------------------------------------------

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.cache.resize(settings.cache_size)
        self.cache.clear()  # answers depend on the settings
        self.report_status()

    def report_status(self) -> None:
        """Tell the client the state if it changed: disabled, generating, or the model's."""
        if not self.settings.enabled:
            status = (DISABLED, "completion is turned off (codeglm.enabled is false)")
        elif self._active > 0:
            status = (GENERATING, "generating a completion")
        elif self._last_error is not None and self._error_load_state is self.holder.state:
            # (an error from a backend that has since been replaced no longer counts)
            status = (ERROR, self._last_error)
        else:
            status = (self.holder.state.state, self.holder.state.message)
            dropped = self.last_result.dropped if self.last_result is not None else None
            if dropped and status[0] == READY:
                # The silent no-show explained: the status item says why nothing appeared.
                status = (READY, f"{status[1]}; last completion not shown: {dropped}")
        if status != self._last_status:
            self._last_status = status
            self._on_status(*status)

    # --- completion -----------------------------------------------------------------

    async def complete(
        self,
        document: DocumentSnapshot,
        line: int,
        utf16_character: int,
        others: tuple[OpenDocument, ...] = (),
        candidates: int = 1,
    ) -> CompletionAnswer | None:
        """The completion at an LSP position, or None (nothing useful, or not now); with
        ``candidates`` > 1, up to that many distinct ones (the others in ``alternatives``).

        A newer request for the same document cancels this one; cancelling the task
        awaiting this coroutine (``$/cancelRequest``) stops the running generation.
        """
        settings = self.settings
        language_id = resolve_language_id(document.language_id, document.path)
        if language_id is None:
            self._warn_language_once(document.language_id)
            return None
        if not settings.language_enabled(language_id):
            return None
        key = (
            document.uri, document.version, document.text if document.version is None else None,
            line, utf16_character, settings.backend, settings.max_tokens, settings.temperature,
            settings.top_p, settings.context_lines, candidates,
        )
        # Sampling with a temperature should give a fresh answer on each request.
        cacheable = settings.temperature == 0.0
        if cacheable:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        token = self.latest.start(document.uri)
        try:
            backend = self.holder.backend
            if backend is None:
                backend = await asyncio.to_thread(self.holder.wait, settings.load_wait_ms / 1000.0)
            if backend is None or token.cancelled:
                return None
            request = replace(
                self._request(document, language_id, line, utf16_character, others, settings), candidates=candidates
            )
            result = await self._run(request, backend, token)
        except asyncio.CancelledError:
            token.cancel()  # $/cancelRequest: stop the generation on its thread too
            raise
        finally:
            self.latest.finish(document.uri, token)
        if result is None or token.cancelled:
            return None
        answer = self._answer(result, document.text, line)
        if cacheable:
            self.cache.put(key, answer)
        return answer

    def _request(
        self,
        document: DocumentSnapshot,
        language_id: str,
        line: int,
        utf16_character: int,
        others: tuple[OpenDocument, ...],
        settings: Settings,
    ) -> CompletionRequest:
        character = utf16_to_index(line_at(document.text, line), utf16_character)
        text, first_line = window_lines(document.text, line, settings.context_lines)
        return CompletionRequest(
            text=text,
            line=line - first_line,
            character=character,
            language_id=language_id,
            path=document.path,
            open_documents=others,
            max_new_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            version=document.version,
            # A windowed text is not the document: keep it out of the parse-tree cache.
            document_key=document.uri if settings.context_lines is None else None,
        )

    async def _run(self, request: CompletionRequest, backend: Backend, token: CancelToken) -> CompletionResult | None:
        self._active += 1
        self.report_status()
        try:
            result = await asyncio.to_thread(self._complete, request, backend, token)
        except BackendError as exc:
            self._note_error(f"completion failed: {exc}")
            return None
        except UnsupportedLanguageError as exc:
            self._warn_language_once(request.language_id, str(exc))
            return None
        except ValueError as exc:  # a position past the end, a prompt that cannot fit
            log.warning("no completion at %s:%d:%d: %s", request.path, request.line, request.character, exc)
            return None
        else:
            self._last_error = None
            if result is not None:
                self.last_result, self.last_path = result, request.path
        finally:
            self._active -= 1
            self.report_status()
        return result

    def _complete(self, request: CompletionRequest, backend: Backend, token: CancelToken) -> CompletionResult | None:
        return complete(request, backend, token, self.contexts, self.workspace())

    def _answer(self, result: CompletionResult, text: str, line: int) -> CompletionAnswer:
        # The result's line is the (possibly windowed) request's; the cursor's line is the same.
        line_text = line_at(text, line)
        return CompletionAnswer(
            text=result.text,
            line=line,
            start_character=index_to_utf16(line_text, result.character),
            end_character=index_to_utf16(line_text, result.replace_end_character),
            multiline=result.multiline,
            alternatives=tuple(self._answer(other, text, line) for other in result.alternatives),
        )

    def _note_error(self, message: str) -> None:
        """Show a failure once (a dead backend would otherwise pop a message per keystroke);
        the status stays "error" until a completion succeeds."""
        log.error("%s", message)
        if message != self._last_error:
            self._on_message("error", message)
        self._last_error = message
        self._error_load_state = self.holder.state

    def _warn_language_once(self, language_id: str, detail: str | None = None) -> None:
        if language_id in self._warned_languages:
            return
        self._warned_languages.add(language_id)
        message = detail or f"codeglm does not complete {language_id!r} documents"
        log.warning("%s", message)
        self._on_message("info", message)

    def forget(self, uri: str) -> None:
        """A document was closed."""
        self.latest.cancel(uri)
        self.contexts.forget(uri)


__all__ = [
    "CompletionAnswer",
    "CompletionService",
    "DocumentSnapshot",
    "resolve_language_id",
    "window_lines",
]
