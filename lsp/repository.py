"""Repository context for the language server: the workspace index and recent edits.

The workspace comes from ``initialize`` (the first workspace folder, else the root URI).
Once the client is initialized the index is built on a thread, with ``$/progress`` (work
done) when the client supports it; it is kept fresh by ``workspace/didChangeWatchedFiles``
(registered dynamically for source files and ``.gitignore``) and by document changes (an
open document's unsaved text counts, applied lazily before the next completion). Every
change also records the edited region for the "recent" context.

``codeglm.showLastPrompt`` returns the last completion's exact prompt, its context
snippets (source and path) and, when nothing was shown, why.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import to_fs_path

from codeglm.completion.pipeline import CompletionResult, WorkspaceContext
from codeglm.completion.recent_edits import RecentEdits
from codeglm.completion.workspace_files import FileLimits
from codeglm.completion.workspace_index import WorkspaceIndex
from codeglm.languages import LANGUAGES

# The handlers take ``lsp.server.CodeglmServer`` (typed Any here: the server imports this module).
CodeglmServer = Any

log = logging.getLogger(__name__)

SHOW_LAST_PROMPT = "codeglm.showLastPrompt"
WATCHER_ID = "codeglm-workspace-files"


def workspace_root(root_path: str | None, folder_uris: list[str]) -> Path | None:
    """The directory to index: the first workspace folder, else the root path; None if neither."""
    for uri in folder_uris:
        path = to_fs_path(uri)
        if path and Path(path).is_dir():
            return Path(path)
    if root_path and Path(root_path).is_dir():
        return Path(root_path)
    return None


def watched_globs() -> list[str]:
    """File-watcher globs: every extension of the language table, and ``.gitignore``."""
    extensions = sorted({ext.lstrip(".") for lang in LANGUAGES for ext in lang.extensions})
    return ["**/*.{" + ",".join(extensions) + "}", "**/.gitignore"]


def last_prompt_json(result: CompletionResult | None, path: str | None) -> dict[str, Any]:
    """``codeglm.showLastPrompt``'s answer."""
    if result is None:
        return {"path": None, "prompt": None, "promptSuffix": None, "snippets": [], "text": "", "dropped": None}
    return {
        "path": path,
        "prompt": result.prompt,
        "promptSuffix": result.prompt_suffix,
        "promptTokens": result.prompt_tokens,
        "snippets": [
            {"source": s.source, "kind": s.kind, "name": s.name, "path": s.path, "text": s.text} for s in result.snippets
        ],
        "text": result.text,
        "dropped": result.dropped,
    }


def edited_lines(change: object, text_after: str) -> tuple[int, int] | None:
    """(first, last) line an incremental change touched in the new text; None for a whole-document change."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        return None
    first = change.range.start.line
    return first, first + change.text.count("\n")


class RepositoryService:
    """The index and recent edits of one server."""

    def __init__(self) -> None:
        self.index: WorkspaceIndex | None = None
        self.recent = RecentEdits()
        self._pending: dict[str, str] = {}
        self._pending_lock = threading.Lock()
        self.task: asyncio.Task[None] | None = None

    def context(self) -> WorkspaceContext | None:
        """The context for a completion (called on the completion's thread): unsaved texts
        of other documents are indexed first."""
        index = self.index
        if index is None:
            return None
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for path, text in pending.items():
            index.set_text(path, text)
        return WorkspaceContext(index, self.recent.regions())

    def document_changed(self, path: str | None, text: str, changes: list[Any]) -> None:
        if path is None:
            return
        label = path
        if self.index is not None:
            label = self.index.relative(path) or path
            with self._pending_lock:
                self._pending[path] = text
        for change in changes:
            lines = edited_lines(change, text)
            if lines is not None:
                self.recent.record(label, text, *lines)

    def files_changed(self, paths: list[str]) -> None:
        """Watched-file events (on a worker thread): re-read each path, or drop it."""
        index = self.index
        if index is None:
            return
        for path in paths:
            with self._pending_lock:
                self._pending.pop(path, None)
            index.update(path)


async def start_index(ls: CodeglmServer) -> None:
    """Build the index of the server's workspace in the background, reporting progress."""
    service: RepositoryService = ls.repository
    settings = ls.settings
    root = workspace_root(ls.workspace.root_path, list(ls.workspace.folders))
    if root is None or not settings.index_workspace:
        log.info("no workspace index (%s)", "no workspace folder" if root is None else "indexWorkspace is off")
        return
    index = WorkspaceIndex(root, FileLimits(max_files=settings.max_indexed_files))
    service.index = index
    await _register_watchers(ls)
    token = await _begin_progress(ls, f"codeglm: indexing {root.name}")
    loop = asyncio.get_running_loop()

    def progress(done: int, total: int) -> None:
        if token is not None:
            report = types.WorkDoneProgressReport(message=f"{done} of {total} files", percentage=done * 100 // max(total, 1))
            loop.call_soon_threadsafe(ls.work_done_progress.report, token, report)

    try:
        stats = await asyncio.to_thread(index.build, progress)
        message = f"{stats.files} files, {stats.symbols} definitions in {stats.build_seconds:.1f} s"
        if stats.full:
            message += " (limit reached: some files left out)"
        log.info("workspace index of %s: %s", root, message)
    except Exception as exc:  # an unreadable tree must not take the server down
        log.exception("indexing %s failed", root)
        message = f"indexing failed: {exc}"
    if token is not None:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))


async def _begin_progress(ls: CodeglmServer, title: str) -> str | None:
    window = ls.client_capabilities.window
    if window is None or not window.work_done_progress:
        return None
    token = f"codeglm-index-{uuid.uuid4()}"
    try:
        await ls.work_done_progress.create_async(token)
    except Exception as exc:
        log.warning("the client refused a progress token: %s", exc)
        return None
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False))
    return token


async def _register_watchers(ls: CodeglmServer) -> None:
    workspace = ls.client_capabilities.workspace
    watched = workspace.did_change_watched_files if workspace is not None else None
    if watched is None or not watched.dynamic_registration:
        return  # the client may still send events it watches on its own
    options = types.DidChangeWatchedFilesRegistrationOptions(
        watchers=[types.FileSystemWatcher(glob_pattern=glob) for glob in watched_globs()]
    )
    registration = types.Registration(id=WATCHER_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                      register_options=options)
    try:
        await ls.client_register_capability_async(types.RegistrationParams(registrations=[registration]))
    except Exception as exc:
        log.warning("the client refused file watchers: %s", exc)


def register(server: CodeglmServer) -> None:
    """The repository handlers: watched files, document changes, ``codeglm.showLastPrompt``."""

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def did_change_watched_files(ls: CodeglmServer, params: types.DidChangeWatchedFilesParams) -> None:
        paths = [p for p in (to_fs_path(change.uri) for change in params.changes) if p]
        await asyncio.to_thread(ls.repository.files_changed, paths)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CodeglmServer, params: types.DidChangeTextDocumentParams) -> None:
        document = ls.workspace.get_text_document(params.text_document.uri)
        ls.repository.document_changed(document.path, document.source, list(params.content_changes))

    @server.command(SHOW_LAST_PROMPT)
    def show_last_prompt(ls: CodeglmServer, *arguments: object) -> dict[str, Any]:
        return last_prompt_json(ls.completions.last_result, ls.completions.last_path)


__all__ = ["RepositoryService", "SHOW_LAST_PROMPT", "last_prompt_json", "register", "start_index", "workspace_root"]
