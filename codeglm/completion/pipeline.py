"""The completion pipeline: document + cursor -> context -> prompt -> backend -> text to show.

``complete`` is what the language server and ``codeglm complete`` call. It is the only
place with side effects (the backend call); the steps it chains are pure and tested on
their own: ``context.extract_context``, ``prompts.build_prompt``,
``postprocess.completion_site`` / ``make_finished_callback`` / ``postprocess``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from codeglm.backends.base import (
    Backend,
    CancelledError,
    CancelToken,
    GenerationRequest,
    SamplingParams,
)
from codeglm.completion.context import Snippet, SourceDocument, extract_context
from codeglm.completion.parse_cache import ContextCache
from codeglm.completion.postprocess import Dropped, make_finished_callback, postprocess_explained
from codeglm.completion.prompts import Prompt, build_prompt
from codeglm.completion.repo_context import WorkspaceContext
from codeglm.completion.site import CompletionSite, completion_site
from codeglm.languages import Language, UnsupportedLanguageError, get_language, language_for_path

# Candidates after the first are sampled at least this hot, each with its own seed.
CANDIDATE_TEMPERATURE = 0.8

__all__ = [
    "CompletionRequest",
    "CompletionResult",
    "ContextCache",
    "OpenDocument",
    "WorkspaceContext",
    "complete",
]


@dataclass(frozen=True)
class OpenDocument:
    """Another document open in the editor (its definitions may be used at the cursor)."""

    path: str
    language_id: str
    text: str
    version: int | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """A completion at (``line``, ``character``): 0-based, character in Python str indices.

    ``multiline``: None lets the cursor position decide; True/False forces the mode.
    ``version`` and ``document_key`` (e.g. the document URI) let a ``ContextCache`` reuse
    and incrementally update the document's parse tree and definitions between
    requests; without a ``document_key`` the text is not cached (it may be a window).
    """

    text: str
    line: int
    character: int
    language_id: str
    path: str | None = None
    open_documents: tuple[OpenDocument, ...] = ()
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    multiline: bool | None = None
    version: int | None = None
    document_key: str | None = None
    # Up to this many distinct completions: the first as asked, the others sampled.
    candidates: int = 1


@dataclass(frozen=True)
class CompletionResult:
    """Text to insert at the cursor.

    The insertion replaces the cursor's line from ``character`` to
    ``replace_end_character`` (equal to ``character`` when it only inserts; larger when
    the completion re-supplies characters the editor auto-closed, e.g. ``}``).
    Line endings follow the document's. ``text`` is empty when post-processing dropped
    everything the model wrote; ``dropped`` says why. ``prompt`` (and ``prompt_suffix``
    with fill-in-the-middle) is exactly what the model was sent, ``snippets`` the context
    in it, most relevant first.
    """

    text: str
    multiline: bool
    prompt_tokens: int
    generated_tokens: int
    line: int
    character: int
    replace_end_character: int
    finish_reason: str
    raw_text: str
    latency_ms: float
    prompt: str = ""
    prompt_suffix: str | None = None
    snippets: tuple[Snippet, ...] = ()
    dropped: str | None = None
    # Other distinct completions (``CompletionRequest.candidates`` > 1), each with text.
    alternatives: tuple[CompletionResult, ...] = ()


def _language_of(language_id: str, path: str | None) -> Language:
    try:
        return get_language(language_id)
    except UnsupportedLanguageError:
        by_path = language_for_path(path) if path else None
        if by_path is None:
            raise
        return by_path


def _open_documents(request: CompletionRequest) -> list[SourceDocument]:
    documents = []
    for other in request.open_documents:
        try:
            language = _language_of(other.language_id, other.path)
        except UnsupportedLanguageError:
            continue  # a Markdown or JSON file open beside the code: nothing to parse
        documents.append(SourceDocument(other.path, language, other.text.replace("\r\n", "\n"), other.version))
    return documents


def complete(
    request: CompletionRequest,
    backend: Backend,
    cancel: CancelToken | None = None,
    cache: ContextCache | None = None,
    workspace: WorkspaceContext | None = None,
) -> CompletionResult | None:
    """The completion at the request's cursor (its ``text`` empty and ``dropped`` saying why
    when nothing useful is left), or None when the request was cancelled. ``workspace``:
    the index of the workspace's files and the recent edits to draw context from. With
    ``request.candidates`` > 1 the context and prompt are built once and the backend asked
    that many times (the first as the request says, the others sampled with their own
    seeds); distinct texts after post-processing become ``alternatives``.

    Raises ``UnsupportedLanguageError`` for a language outside the table and
    ``BackendError`` when the backend fails; a cancelled request returns None.
    """
    started = time.perf_counter()
    language = _language_of(request.language_id, request.path)
    line_ending = "\r\n" if "\r\n" in request.text else "\n"
    document = SourceDocument(
        request.path,
        language,
        request.text.replace("\r\n", "\n"),
        request.version,
        request.document_key,
        # Without a key the text may be a window of the document: keep it out of the cache.
        cacheable=request.document_key is not None,
    )
    context = extract_context(
        document, request.line, request.character, _open_documents(request), cache, workspace
    )
    site = completion_site(language, context.prefix, context.suffix, request.multiline)
    prompt = build_prompt(
        context,
        backend.count_tokens,
        backend.context_length,
        request.max_new_tokens,
        fim=backend.supports_fim,
    )
    results: list[CompletionResult] = []
    for i in range(max(1, request.candidates)):
        params = SamplingParams(
            max_new_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p
        )
        if i > 0:
            params = SamplingParams(max_new_tokens=request.max_new_tokens, top_p=request.top_p,
                                    temperature=max(request.temperature, CANDIDATE_TEMPERATURE), seed=i)
        result = _generate(request, backend, cancel, site, prompt, params, line_ending, started)
        if result is None:
            return None  # cancelled
        if all(result.text != r.text for r in results):
            results.append(result)
    shown = [r for r in results if r.text]
    if not shown:
        return results[0]  # nothing to show: the first says why
    first, *others = shown
    return replace(first, alternatives=tuple(others))


def _generate(
    request: CompletionRequest,
    backend: Backend,
    cancel: CancelToken | None,
    site: CompletionSite,
    prompt: Prompt,
    params: SamplingParams,
    line_ending: str,
    started: float,
) -> CompletionResult | None:
    """One generation, post-processed; None when cancelled."""
    watch = make_finished_callback(site)
    generation = GenerationRequest(prompt=prompt.text, params=params, suffix=prompt.suffix, finished=watch)
    if cancel is not None and cancel.cancelled:
        return None
    try:
        completion = backend.generate(generation, cancel)[0]
    except CancelledError:
        return None
    if completion.finish_reason == "cancelled":
        return None
    processed = postprocess_explained(
        site, completion.text, truncated=completion.finish_reason == "length", stopped_by=watch.stopped_by
    )
    dropped = processed.reason if isinstance(processed, Dropped) else None
    text = "" if isinstance(processed, Dropped) else processed.text.replace("\n", line_ending)
    replace = 0 if isinstance(processed, Dropped) else processed.replace_suffix_chars
    return CompletionResult(
        text=text,
        multiline=site.multiline,
        prompt_tokens=prompt.tokens,
        generated_tokens=completion.generated_tokens,
        line=request.line,
        character=len(site.line_prefix),
        replace_end_character=len(site.line_prefix) + replace,
        finish_reason=completion.finish_reason,
        raw_text=completion.text,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        prompt=prompt.text,
        prompt_suffix=prompt.suffix,
        snippets=prompt.snippets,
        dropped=dropped,
    )

