"""The codeglm language server: LSP handlers wired to the completion and translation logic.

Handlers here only translate between LSP types and the plain data of
``lsp.completion_service`` and ``lsp.commands``; the logic lives in those modules.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from codeglm.backends import last_generation
from codeglm.backends.base import CancelToken
from codeglm.completion.pipeline import OpenDocument
from lsp import commands, repository, wire
from lsp.commands import CommandError, TranslateCommand
from lsp.completion_service import CompletionAnswer, CompletionService, DocumentSnapshot, resolve_language_id
from lsp.documents import DocumentError, check_readable, read_error
from lsp.model_holder import ERROR, LoadState, ModelHolder, load_backend
from lsp.positions import line_at, utf16_to_index
from lsp.protocol import CodeglmProtocol
from lsp.settings import SECTION, Settings, SettingsError, apply_settings

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "codeglm/status"
# A request (no params): what the engine's last generation did, or null for a backend
# that does not measure it; as serve-api's GET /stats, for diagnostics and benchmarks.
STATS_REQUEST = "codeglm/stats"
MAX_OTHER_DOCUMENTS = 8  # other open documents offered to the context builder
_MESSAGE_TYPES = {
    "error": types.MessageType.Error,
    "warning": types.MessageType.Warning,
    "info": types.MessageType.Info,
    "log": types.MessageType.Log,
}


class CodeglmServer(LanguageServer):
    """The server object; handlers reach the services through it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            "codeglm",
            _version(),
            protocol_cls=CodeglmProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.holder = ModelHolder(load_backend, self._on_load_state)
        self.completions = CompletionService(settings, self.holder, self.send_status, self.show_message)
        self.repository = repository.RepositoryService()
        self.completions.workspace = self.repository.context

    # --- messages to the client (safe to call from any thread) ---------------------

    def _call_on_loop(self, function: Any, *args: Any) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(function, *args)

    def send_status(self, state: str, message: str) -> None:
        self._call_on_loop(self.protocol.notify, STATUS_NOTIFICATION, {"state": state, "message": message})

    def show_message(self, level: str, message: str) -> None:
        params = types.ShowMessageParams(type=_MESSAGE_TYPES[level], message=f"codeglm: {message}")
        self._call_on_loop(self.window_show_message, params)

    def log_to_client(self, level: str, message: str) -> None:
        self._call_on_loop(
            self.window_log_message, types.LogMessageParams(type=_MESSAGE_TYPES[level], message=message)
        )

    def _on_load_state(self, state: LoadState) -> None:
        if state.state == ERROR:
            self.show_message("error", state.message)
        self._call_on_loop(self.completions.report_status)

    # --- settings -------------------------------------------------------------------

    def change_settings(self, raw: object) -> None:
        """Apply settings from the client; a broken one is reported and nothing changes."""
        try:
            new = apply_settings(self.settings, raw)
        except SettingsError as exc:
            log.warning("%s", exc)
            self.show_message("error", str(exc))
            return
        old, self.settings = self.settings, new
        self.completions.update_settings(new)
        if new.backend != old.backend:
            self.holder.load(new.backend)

    # --- documents --------------------------------------------------------------------

    def document(self, uri: str) -> tuple[TextDocument, str]:
        """The open document, or the file on disk, and its text (read once: pygls reads a
        closed file from disk on each access); ``DocumentError`` if neither can be read."""
        check_readable(uri, unquote(uri) in self.workspace.text_documents)
        document = self.workspace.get_text_document(uri)
        try:
            return document, document.source
        except (OSError, UnicodeDecodeError) as exc:
            raise read_error(uri, exc) from None

    def snapshot(self, uri: str) -> DocumentSnapshot:
        """The document now; an unreadable one is an invalid-params answer naming it."""
        try:
            document, source = self.document(uri)
        except DocumentError as exc:
            log.warning("%s", exc)
            raise JsonRpcInvalidParams(message=f"codeglm: {exc}") from None
        return _snapshot(document, source)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors outside any request: a message that is not JSON is logged as a parse
        error (no id can be read, so there is nobody to answer); the rest as pygls does."""
        if isinstance(error, ValueError):  # json.JSONDecodeError, UnicodeDecodeError
            log.warning("%s", wire.parse_error_message(error))
            return
        super().report_server_error(error, source)

    def other_documents(self, uri: str) -> tuple[OpenDocument, ...]:
        others = []
        for other_uri, document in list(self.workspace.text_documents.items()):
            if other_uri == uri:
                continue
            language_id = resolve_language_id(document.language_id or "", document.path)
            if language_id is not None:
                others.append(
                    OpenDocument(document.path or other_uri, language_id, document.source, document.version)
                )
        return tuple(others[-MAX_OTHER_DOCUMENTS:])


def _version() -> str:
    try:
        return version("codeglm")
    except Exception:
        return "0"


def _snapshot(document: TextDocument, source: str) -> DocumentSnapshot:
    return DocumentSnapshot(
        uri=document.uri,
        text=source,
        version=document.version,
        language_id=document.language_id or "",
        path=document.path,
    )


def _range(answer: CompletionAnswer) -> types.Range:
    return types.Range(
        start=types.Position(line=answer.line, character=answer.start_character),
        end=types.Position(line=answer.line, character=answer.end_character),
    )


def create_server(settings: Settings) -> CodeglmServer:
    """A server with every handler registered (not started)."""
    server = CodeglmServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeglmServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        if params.initialization_options is not None:
            ls.change_settings(params.initialization_options)
        # Answer at once; the model loads on a thread and codeglm/status says when it is ready.
        ls.holder.load(ls.settings.backend)

    @server.feature(types.INITIALIZED)
    def initialized(ls: CodeglmServer, params: types.InitializedParams) -> None:
        ls.completions.report_status()
        ls.repository.task = asyncio.ensure_future(repository.start_index(ls))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CodeglmServer, params: types.DidChangeConfigurationParams) -> None:
        raw = params.settings
        if _section_missing(raw):
            # Clients that send no settings expect the server to ask (pull model).
            raw = await _pull_configuration(ls)
        if raw is not None:
            ls.change_settings(raw)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeglmServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.completions.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: CodeglmServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        uri = params.text_document.uri
        # Several candidates when the editor asks explicitly; one while typing.
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        answer = await ls.completions.complete(
            ls.snapshot(uri), params.position.line, params.position.character, ls.other_documents(uri),
            candidates=ls.settings.candidates if invoked else 1,
        )
        if answer is None or not answer.text:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=a.text, range=_range(a)) for a in (answer, *answer.alternatives)]
        )

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "])
    )
    async def completion(ls: CodeglmServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        answer = await ls.completions.complete(
            ls.snapshot(uri), params.position.line, params.position.character, ls.other_documents(uri)
        )
        if answer is None or not answer.text:
            return types.CompletionList(is_incomplete=True, items=[])
        first_line = answer.text.split("\n", 1)[0].strip() or answer.text.strip()
        item = types.CompletionItem(
            label=first_line[:80],
            kind=types.CompletionItemKind.Snippet if answer.multiline else types.CompletionItemKind.Text,
            detail="codeglm",
            documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=answer.text),
            text_edit=types.TextEdit(range=_range(answer), new_text=answer.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            # The text starts at the cursor, so the typed word must not filter it away.
            filter_text=_typed_word(ls.snapshot(uri).text, answer) + first_line,
            sort_text="0",
        )
        # Incomplete: typing on must ask again, the completion depends on every character.
        return types.CompletionList(is_incomplete=True, items=[item])

    repository.register(server)

    @server.feature(STATS_REQUEST)
    def stats(ls: CodeglmServer, params: Any) -> dict[str, Any]:
        backend = ls.holder.backend
        return {"lastGeneration": last_generation(backend) if backend is not None else None}

    @server.command(commands.TRANSLATE_FILE)
    async def translate_file(ls: CodeglmServer, *arguments: object) -> dict[str, Any]:
        return await _translate(ls, arguments, selection=False)

    @server.command(commands.TRANSLATE_SELECTION)
    async def translate_selection(ls: CodeglmServer, *arguments: object) -> dict[str, Any]:
        return await _translate(ls, arguments, selection=True)

    return server


def _typed_word(text: str, answer: CompletionAnswer) -> str:
    """The identifier characters just before the cursor (clients filter items by it)."""
    line = line_at(text, answer.line)
    end = utf16_to_index(line, answer.start_character)
    start = end
    while start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_"):
        start -= 1
    return line[start:end]


def _section_missing(raw: object) -> bool:
    return raw is None or (isinstance(raw, dict) and not raw)


async def _pull_configuration(ls: CodeglmServer) -> object:
    capabilities = ls.client_capabilities.workspace
    if capabilities is None or not capabilities.configuration:
        return None
    try:
        values = await ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
        )
    except Exception as exc:  # the client refused: keep the settings we have
        log.warning("workspace/configuration failed: %s", exc)
        return None
    return values[0] if values else None


class _ServerTranslationClient:
    """``commands.TranslationClient`` over this server's connection."""

    def __init__(self, ls: CodeglmServer, cancel: CancelToken) -> None:
        self._ls = ls
        self._cancel = cancel

    async def begin_progress(self, title: str) -> str | None:
        window = self._ls.client_capabilities.window
        if window is None or not window.work_done_progress:
            return None
        token = commands.new_progress_token()
        try:
            await self._ls.work_done_progress.create_async(token)
        except Exception as exc:
            log.warning("the client refused a progress token: %s", exc)
            return None
        self._ls.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0)
        )
        # window/workDoneProgress/cancel cancels this future (pygls); stop the translation then.
        future = self._ls.work_done_progress.tokens.get(token)
        if future is not None:
            future.add_done_callback(lambda f: self._cancel.cancel() if f.cancelled() else None)
        return token

    def report_progress(self, token: str | None, message: str, percentage: int | None) -> None:
        log.info("%s", message)
        if token is not None:
            self._ls.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )

    def end_progress(self, token: str | None, message: str) -> None:
        if token is not None:
            self._ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
            self._ls.work_done_progress.tokens.pop(token, None)

    async def apply_edit(self, edit: types.WorkspaceEdit) -> tuple[bool, str | None]:
        result = await self._ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label="codeglm: translation")
        )
        return result.applied, result.failure_reason

    def can_create_files(self) -> bool:
        workspace = self._ls.client_capabilities.workspace
        if workspace is None or not workspace.apply_edit or workspace.workspace_edit is None:
            return False
        operations = workspace.workspace_edit.resource_operations or []
        return (
            bool(workspace.workspace_edit.document_changes)
            and types.ResourceOperationKind.Create in operations
        )


async def _translate(ls: CodeglmServer, arguments: tuple[object, ...], *, selection: bool) -> dict[str, Any]:
    cancel = CancelToken()
    msg_id = ls.protocol.msg_id
    protocol = ls.protocol
    assert isinstance(protocol, CodeglmProtocol)
    if msg_id is not None:
        protocol.cancel_listeners[msg_id] = cancel
    try:
        command = _parse(arguments, selection)
        document, source = ls.document(command.uri)
        language_id = resolve_language_id(document.language_id or "", document.path)
        if language_id is None:
            raise CommandError(
                f"cannot translate {command.uri}: its language {document.language_id!r} is not supported"
            )
        backend = ls.holder.backend or await asyncio.to_thread(ls.holder.wait, 120.0)
        if backend is None:
            raise CommandError(f"no model to translate with: {ls.holder.state.message}")
        assert ls.loop is not None
        outcome = await commands.run_translation(
            command,
            source,
            language_id,
            backend,
            _ServerTranslationClient(ls, cancel),
            cancel,
            ls.loop,
            max_units=ls.settings.translate_max_units,
        )
    except (CommandError, DocumentError) as exc:
        log.warning("%s", exc)
        # An LSP error the client shows: the message, no traceback.
        raise JsonRpcInvalidParams(message=f"codeglm: {exc}") from None
    finally:
        if msg_id is not None:
            protocol.cancel_listeners.pop(msg_id, None)
    notice = outcome.notice()
    if notice:
        ls.show_message("warning", notice)
    return outcome.to_json()


def _parse(arguments: tuple[object, ...], selection: bool) -> TranslateCommand:
    if len(arguments) != 1:
        name = commands.TRANSLATE_SELECTION if selection else commands.TRANSLATE_FILE
        raise CommandError(f"{name} takes exactly one object argument, got {len(arguments)}")
    return commands.parse_command(arguments[0], selection=selection)
