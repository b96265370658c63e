"""The language server end to end: a real LSP client (pytest-lsp) over stdio.

The server runs ``python -m lsp --backend native:DIR`` on a small random-weight CodeGeeX
model. Greedy decoding makes its answers deterministic, so every completion the server
returns is checked against ``codeglm.completion.pipeline.complete`` run here on the same text.
Random weights write random words: as code that is junk, which the pipeline never shows,
so the cursors that must get an answer stand in a comment, where words are valid.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

from codeglm.completion.pipeline import CompletionRequest, complete
from lsp import commands

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Generation threads fight the other test processes for 2 cores; one thread is faster.
SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
READY_TIMEOUT_S = 180.0

SAMPLES = {
    "python": ("add.py", "def add(a, b):\n    # \n", 1, 6),
    "java": (
        "Main.java",
        "public class Main {\n    public static int add(int a, int b) {\n        // \n    }\n}\n",
        2,
        11,
    ),
    "go": ("add.go", "package main\n\nfunc add(a int, b int) int {\n\t// \n}\n", 3, 4),
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from codeglm.model.codegeex import CodeGeeXForCausalLM
    from codeglm.model.config import CodeGeeXConfig
    from codeglm.model.tokenizer import load_tokenizer
    from codeglm.paths import tokenizer_dir

    directory = tmp_path_factory.mktemp("tiny-codegeex")
    torch.manual_seed(0)
    # Big enough that a long generation takes seconds (so cancelling it is observable),
    # small enough to save and load in a few.
    config = CodeGeeXConfig(
        vocab_size=50432, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=2048, tie_word_embeddings=True,
    )
    CodeGeeXForCausalLM(config).save_pretrained(directory)
    load_tokenizer(tokenizer_dir()).save(directory)
    return directory


@pytest.fixture(scope="module")
def direct_backend(tiny_model: Path) -> Any:
    """The same backend the server uses, in this process, for expected answers."""
    from codeglm.backends import load_backend  # type: ignore[attr-defined]

    backend = load_backend(f"native:{tiny_model}")
    yield backend
    backend.close()


class Recorder:
    """What the server told the client besides answers: statuses and applied edits."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, str]] = []
        self.initialize_result: types.InitializeResult | None = None
        self.initialize_seconds = 0.0
        self.ready_seconds = 0.0


def _status_fields(params: Any) -> tuple[str, str]:
    if isinstance(params, dict):
        return params.get("state", ""), params.get("message", "")
    return getattr(params, "state", ""), getattr(params, "message", "")


def apply_workspace_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
    """What an editor does with the server's WorkspaceEdit: create the file, insert the text."""
    from pygls.uris import to_fs_path

    for change in params.edit.document_changes or []:
        if isinstance(change, types.CreateFile):
            path = Path(to_fs_path(change.uri) or "")
            overwrite = bool(change.options and change.options.overwrite)
            if path.exists() and not overwrite:
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason=f"{path} exists")
            path.write_text("", encoding="utf-8")
        elif isinstance(change, types.TextDocumentEdit):
            path = Path(to_fs_path(change.text_document.uri) or "")
            text = path.read_text(encoding="utf-8")
            for edit in change.edits:
                assert edit.range.start == edit.range.end == types.Position(0, 0)
                text = edit.new_text + text
            path.write_text(text, encoding="utf-8")
    return types.ApplyWorkspaceEditResult(applied=True)


async def start_client(
    backend: str, caps: str = "visual-studio-code", options: dict[str, Any] | None = None
) -> tuple[LanguageClient, Recorder]:
    client = make_test_lsp_client()
    recorder = Recorder()

    @client.feature("codeglm/status")
    def on_status(params: Any) -> None:
        recorder.statuses.append(_status_fields(params))

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        return apply_workspace_edit(params)

    await client.start_io(sys.executable, "-m", "lsp", "--backend", backend, env=SERVER_ENV)
    started = time.perf_counter()
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(caps),
            initialization_options=options,
            root_uri=None,
        )
    )
    recorder.initialize_result = result
    recorder.initialize_seconds = time.perf_counter() - started
    return client, recorder


async def wait_for_state(recorder: Recorder, state: str, timeout: float = READY_TIMEOUT_S, since: int = 0) -> str:
    """Wait for a ``codeglm/status`` with ``state`` among the statuses from index ``since`` on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for seen, message in recorder.statuses[since:]:
            if seen == state:
                return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {state!r} status within {timeout} s; got {recorder.statuses}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tiny_model: Path) -> AsyncIterator[tuple[LanguageClient, Recorder]]:
    started = time.perf_counter()
    client, recorder = await start_client(f"native:{tiny_model}", options={"codeglm": {"maxTokens": 24}})
    await wait_for_state(recorder, "ready")
    recorder.ready_seconds = time.perf_counter() - started
    yield client, recorder
    await client.shutdown_session()


def open_document(client: LanguageClient, path: Path, language_id: str, text: str, version: int = 1) -> str:
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=version, text=text)
        )
    )
    return uri


def close_document(client: LanguageClient, uri: str) -> None:
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))


def configure(client: LanguageClient, settings: dict[str, Any]) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codeglm": settings}))


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


def expected(backend: Any, text: str, line: int, character: int, language: str, path: Path, max_tokens: int) -> Any:
    return complete(
        CompletionRequest(
            text=text, line=line, character=character, language_id=language, path=str(path), max_new_tokens=max_tokens
        ),
        backend,
    )


async def test_initialize_answers_at_once_and_advertises_features(
    server: tuple[LanguageClient, Recorder],
) -> None:
    client, recorder = server
    # The model loads in the background: initialize was answered while it loaded.
    states = [state for state, _ in recorder.statuses]
    assert states[0] == "loading" and "ready" in states
    assert recorder.initialize_seconds < recorder.ready_seconds
    assert recorder.initialize_result is not None
    info = recorder.initialize_result.capabilities
    assert info.inline_completion_provider is not None
    assert info.completion_provider is not None
    assert info.execute_command_provider is not None
    assert set(info.execute_command_provider.commands) >= {"codeglm.translateFile", "codeglm.translateSelection"}
    # The translation languages come with the handshake (editors keep no list of their own).
    assert info.experimental == {"codeglm": {"translationLanguages": commands.translation_languages()}}
    sync = info.text_document_sync
    assert isinstance(sync, types.TextDocumentSyncOptions) and sync.change == types.TextDocumentSyncKind.Incremental


@pytest.mark.parametrize("language", ["python", "java", "go"])
async def test_inline_completion_is_the_pipeline_answer(
    server: tuple[LanguageClient, Recorder], direct_backend: Any, tmp_path: Path, language: str
) -> None:
    client, _ = server
    name, text, line, character = SAMPLES[language]
    uri = open_document(client, tmp_path / name, language, text)
    try:
        result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        want = expected(direct_backend, text, line, character, language, tmp_path / name, 24)
        assert want is not None and want.text  # random weights still produce text
        assert isinstance(result, types.InlineCompletionList) and len(result.items) == 1
        item = result.items[0]
        assert item.insert_text == want.text
        assert item.range == types.Range(
            start=types.Position(line, want.character), end=types.Position(line, want.replace_end_character)
        )
    finally:
        close_document(client, uri)


async def test_full_and_incremental_changes_are_applied(
    server: tuple[LanguageClient, Recorder], direct_backend: Any, tmp_path: Path
) -> None:
    client, _ = server
    path = tmp_path / "sync.py"
    uri = open_document(client, path, "python", "x = 1\n")
    try:
        identifier = types.VersionedTextDocumentIdentifier(uri=uri, version=2)
        full = types.TextDocumentContentChangeWholeDocument(text="import os\n\ndef size(p):\n    # \n")
        client.text_document_did_change(types.DidChangeTextDocumentParams(text_document=identifier, content_changes=[full]))
        # Typing "size of " on line 3 (after "    # "), as an editor sends it.
        typed = types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(3, 6), end=types.Position(3, 6)), text="size of "
        )
        identifier = types.VersionedTextDocumentIdentifier(uri=uri, version=3)
        client.text_document_did_change(types.DidChangeTextDocumentParams(text_document=identifier, content_changes=[typed]))
        text = "import os\n\ndef size(p):\n    # size of \n"
        result = await client.text_document_inline_completion_async(inline_params(uri, 3, 14))
        want = expected(direct_backend, text, 3, 14, "python", path, 24)
        assert want is not None
        assert [item.insert_text for item in result.items] == [want.text]
    finally:
        close_document(client, uri)


async def test_plain_completion_for_clients_without_inline_completion(
    server: tuple[LanguageClient, Recorder], direct_backend: Any, tmp_path: Path
) -> None:
    client, _ = server
    name, text, line, character = SAMPLES["go"]
    uri = open_document(client, tmp_path / name, "go", text)
    try:
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character)
            )
        )
        want = expected(direct_backend, text, line, character, "go", tmp_path / name, 24)
        assert isinstance(result, types.CompletionList) and result.is_incomplete
        assert len(result.items) == 1
        edit = result.items[0].text_edit
        assert isinstance(edit, types.TextEdit) and edit.new_text == want.text
    finally:
        close_document(client, uri)


async def test_identical_requests_are_answered_from_the_cache(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    name, text, line, character = SAMPLES["python"]
    uri = open_document(client, tmp_path / name, "python", text)
    try:
        configure(client, {"maxTokens": 64})
        started = time.perf_counter()
        first = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        generated = time.perf_counter() - started
        started = time.perf_counter()
        second = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        cached = time.perf_counter() - started
        assert first == second and first.items
        assert cached < generated / 4, (cached, generated)
    finally:
        configure(client, {"maxTokens": 24})
        close_document(client, uri)


async def test_a_newer_request_supersedes_the_older(server: tuple[LanguageClient, Recorder], tmp_path: Path) -> None:
    client, _ = server
    text = "def add(a, b):\n    \n\ndef sub(a, b):\n    # \n"
    uri = open_document(client, tmp_path / "two.py", "python", text)
    try:
        configure(client, {"maxTokens": 600})
        older = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 1, 4)))
        await asyncio.sleep(0.2)
        configure(client, {"maxTokens": 8})
        newer = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 4, 6)))
        started = time.perf_counter()
        older_result, newer_result = await asyncio.gather(older, newer)
        # The older request stopped early and returned nothing; the newer one answered.
        assert list(older_result.items) == []
        assert len(newer_result.items) == 1
        assert time.perf_counter() - started < 15.0
    finally:
        configure(client, {"maxTokens": 24})
        close_document(client, uri)


async def test_cancel_request_stops_a_running_generation(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    name, text, line, character = SAMPLES["java"]
    uri = open_document(client, tmp_path / name, "java", text)
    try:
        configure(client, {"maxTokens": 900})
        request_id = "cancel-me"
        # pytest-lsp's request methods are coroutines: a task sends the request now.
        pending = asyncio.ensure_future(
            client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, character), msg_id=request_id
            )
        )
        await asyncio.sleep(0.5)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
        with pytest.raises(JsonRpcException) as info:
            await pending
        assert info.value.code == -32800  # RequestCancelled
        # The generation itself stopped: a short request right after is not stuck
        # behind 900 tokens of the cancelled one (which takes tens of seconds here).
        configure(client, {"maxTokens": 4})
        started = time.perf_counter()
        after = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        assert len(after.items) == 1
        assert time.perf_counter() - started < 8.0
    finally:
        configure(client, {"maxTokens": 24})
        close_document(client, uri)


async def test_broken_settings_are_reported_and_the_previous_ones_kept(
    server: tuple[LanguageClient, Recorder], direct_backend: Any, tmp_path: Path
) -> None:
    client, _ = server
    before = len(client.messages)
    configure(client, {"maxTokens": "lots", "temperature": -1})
    deadline = time.monotonic() + 10
    while len(client.messages) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    message = client.messages[-1]
    assert message.type == types.MessageType.Error
    assert "codeglm.maxTokens" in message.message and "codeglm.temperature" in message.message
    # Still serving, with the previous maxTokens (24).
    name, text, line, character = SAMPLES["python"]
    uri = open_document(client, tmp_path / name, "python", text)
    try:
        result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        want = expected(direct_backend, text, line, character, "python", tmp_path / name, 24)
        assert [item.insert_text for item in result.items] == [want.text]
    finally:
        close_document(client, uri)


async def test_unsupported_language_gets_a_message_not_an_error(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    uri = open_document(client, tmp_path / "notes.md", "markdown", "# Notes\n\nSome text\n")
    try:
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 9))
        assert list(result.items) == []
        deadline = time.monotonic() + 10
        while not any("markdown" in m.message for m in client.messages) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert any("markdown" in m.message for m in client.messages)
    finally:
        close_document(client, uri)


async def test_disabled_languages_get_no_completion(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, recorder = server
    name, text, line, character = SAMPLES["go"]
    uri = open_document(client, tmp_path / name, "go", text)
    try:
        configure(client, {"enabledLanguages": ["python"]})
        assert (await client.text_document_inline_completion_async(inline_params(uri, line, character))).items == ()
        configure(client, {"enabled": False})
        await wait_for_state(recorder, "disabled", timeout=10)
    finally:
        configure(client, {"enabledLanguages": None, "enabled": True})
        close_document(client, uri)


async def test_translate_file_command_rejects_bad_arguments_clearly(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    name, text, _, _ = SAMPLES["java"]
    uri = open_document(client, tmp_path / name, "java", text)
    try:
        with pytest.raises(JsonRpcException, match="unsupported language 'cobol'"):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "cobol"}])
            )
        with pytest.raises(JsonRpcException, match="range"):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="codeglm.translateSelection", arguments=[{"uri": uri, "targetLanguage": "python"}])
            )
    finally:
        close_document(client, uri)


async def _warnings(client: LanguageClient, since: int, count: int) -> list[str]:
    """The warnings (window/showMessage) after the first ``since`` messages, once ``count``
    arrived (or 10 s passed)."""

    def found() -> list[str]:
        return [m.message for m in client.messages[since:] if m.type == types.MessageType.Warning]

    deadline = time.monotonic() + 10
    while len(found()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind
    return found()


async def test_translate_file_creates_the_file_only_as_asked(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    source = "public class Main {\n    public static int add(int a, int b) {\n        return a + b;\n    }\n}\n"
    uri = open_document(client, tmp_path / "Main.java", "java", source)
    try:
        configure(client, {"maxTokens": 48})
        seen = len(client.messages)
        plain = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "python"}])
        )
        assert plain["uri"] is None and isinstance(plain["text"], str) and isinstance(plain["failedUnits"], list)
        assert not list(tmp_path.glob("*.py"))  # nothing written unless createFile
        # $/progress: begin, a report per unit, end.
        reports = [r for rs in client.progress_reports.values() for r in rs]
        assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].cancellable
        assert any(isinstance(r, types.WorkDoneProgressReport) and "translat" in (r.message or "") for r in reports)
        assert isinstance(reports[-1], types.WorkDoneProgressEnd)
        # First how many units and roughly how long; then units are counted as units (a
        # retry is not a new one) and the bar only moves forward.
        for token_reports in client.progress_reports.values():
            steps = [r for r in token_reports if isinstance(r, types.WorkDoneProgressReport)]
            assert (steps[0].message or "").startswith("1 unit to translate, roughly "), steps[0]
            assert "tok/s" in (steps[0].message or "") and steps[0].percentage == 0
            steps = steps[1:]
            assert all((r.message or "").startswith("unit ") for r in steps), steps
            percentages = [r.percentage for r in steps]
            assert percentages == sorted(percentages) and all(0 <= p <= 100 for p in percentages), percentages

        created = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "python", "createFile": True}]
            )
        )
        assert created["uri"] is not None
        from pygls.uris import to_fs_path

        new_file = Path(to_fs_path(created["uri"]) or "")
        assert new_file.parent == tmp_path and new_file.suffix == ".py"
        assert new_file.read_text(encoding="utf-8") == created["text"]
        # Random weights do not translate: the failures are reported unit by unit, and the
        # user gets one warning naming them.
        assert created["failedUnits"], created
        warnings = await _warnings(client, seen, 2)
        # One per translation (the plain one and this one), each naming the failed units.
        assert len(warnings) == 2 and all("did not translate into valid Python" in w for w in warnings), warnings
        assert not any("failedUnits" in w for w in warnings)

        new_file.write_text("# mine\n", encoding="utf-8")
        again = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "python", "createFile": True}]
            )
        )
        assert again["uri"] is None and "overwrite" in again["message"]
        # Still one warning for the whole outcome: the failed units and why nothing was written.
        warnings = await _warnings(client, seen, 3)
        assert len(warnings) == 3 and "did not translate" in warnings[2] and "overwrite" in warnings[2], warnings
        assert new_file.read_text(encoding="utf-8") == "# mine\n"  # never overwritten unless asked
    finally:
        configure(client, {"maxTokens": 24})
        close_document(client, uri)


async def test_translate_past_the_unit_limit_is_refused_before_any_generation(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    methods = "".join(f"    static int m{i}(int x) {{\n        return x + {i};\n    }}\n\n" for i in range(80))
    uri = open_document(client, tmp_path / "Big.java", "java", f"public class Big {{\n{methods}}}\n")
    try:
        configure(client, {"translateMaxUnits": 5})
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        with pytest.raises(JsonRpcException) as caught:
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(
                    command=commands.TRANSLATE_FILE,
                    arguments=[{"uri": uri, "targetLanguage": "python", "createFile": True}],
                )
            )
        assert time.perf_counter() - started < 10  # no generation: the tiny model takes longer per unit
        error = caught.value
        assert error.code == -32602 and error.data is None, (error.code, error.data)
        assert re.search(r"\b8\d units to translate, more than the limit of 5 \(roughly ", error.message), error.message
        assert '"codeglm.translateMaxUnits" setting' in error.message and "nothing was translated or written" in error.message
        assert sorted(p.name for p in tmp_path.iterdir()) == ["Big.java"]
    finally:
        configure(client, {"translateMaxUnits": 500})
        close_document(client, uri)


async def test_cancel_request_stops_a_running_translation(
    server: tuple[LanguageClient, Recorder], tmp_path: Path
) -> None:
    client, _ = server
    source = "public class Main {\n    public static int add(int a, int b) {\n        return a + b;\n    }\n}\n"
    uri = open_document(client, tmp_path / "Main.java", "java", source)
    try:
        request_id = "translate-then-cancel"
        pending = asyncio.ensure_future(
            client.protocol.send_request_async(
                types.WORKSPACE_EXECUTE_COMMAND,
                types.ExecuteCommandParams(
                    command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "python", "createFile": True}]
                ),
                msg_id=request_id,
            )
        )
        await asyncio.sleep(1.0)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
        with pytest.raises(JsonRpcException) as info:
            await pending
        assert info.value.code == -32800

        def ended_cancelled() -> bool:
            return any(
                isinstance(r, types.WorkDoneProgressEnd) and r.message == "cancelled"
                for rs in client.progress_reports.values() for r in rs
            )

        # The translation itself stopped: its progress ends "cancelled" (a finished one
        # ends with its summary), and the model is free for the next request at once.
        deadline = time.monotonic() + 10
        while not ended_cancelled() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ended_cancelled()
        configure(client, {"maxTokens": 4})
        started = time.perf_counter()
        name, text, line, character = SAMPLES["python"]
        other = open_document(client, tmp_path / name, "python", text)
        after = await client.text_document_inline_completion_async(inline_params(other, line, character))
        assert len(after.items) == 1 and time.perf_counter() - started < 8.0
        close_document(client, other)
        assert [p.name for p in tmp_path.glob("*.py")] == [name]  # no translation written
    finally:
        configure(client, {"maxTokens": 24})
        close_document(client, uri)


async def test_a_failing_backend_gives_a_message_and_the_server_keeps_serving(tiny_model: Path, tmp_path: Path) -> None:
    client, recorder = await start_client("openai:http://127.0.0.1:9#nothing-listens", caps="neovim")
    try:
        name, text, line, character = SAMPLES["python"]
        uri = open_document(client, tmp_path / name, "python", text)
        result = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))
        )
        assert result is None or not (result.items if isinstance(result, types.CompletionList) else result)
        deadline = time.monotonic() + 30
        while not any(m.type == types.MessageType.Error for m in client.messages) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert errors and "127.0.0.1:9" in " ".join(errors), client.messages
        assert any(state == "error" for state, _ in recorder.statuses)
        # A working backend through the settings: completion works on the same server.
        seen = len(recorder.statuses)
        configure(client, {"backend": f"native:{tiny_model}"})
        await wait_for_state(recorder, "ready", since=seen)
        result = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))
        )
        assert isinstance(result, types.CompletionList) and len(result.items) == 1
    finally:
        await client.shutdown_session()


async def test_tcp_transport_and_a_model_that_cannot_load(tmp_path: Path) -> None:
    """``--tcp --port N`` serves one client; a missing model directory is an error status
    with a message naming it, and initialize is still answered."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    missing = tmp_path / "no-model-here"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lsp", "--tcp", "--port", str(port), "--backend", f"native:{missing}",
        env=SERVER_ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    client = make_test_lsp_client()
    recorder = Recorder()

    @client.feature("codeglm/status")
    def on_status(params: Any) -> None:
        recorder.statuses.append(_status_fields(params))

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        result = await client.initialize_session(
            types.InitializeParams(capabilities=client_capabilities("visual-studio-code"))
        )
        assert result.capabilities.inline_completion_provider is not None
        message = await wait_for_state(recorder, "error", timeout=120)
        assert str(missing) in message and "--backend" in message
        await client.shutdown_session()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        stdout = await process.stdout.read() if process.stdout else b""
        assert stdout == b""  # over TCP nothing goes to stdout either


@pytest.mark.slow
async def test_translate_with_the_default_model_writes_a_file_that_parses(tmp_path: Path) -> None:
    """No ``--backend``: the server uses the default model; the translated file it creates
    parses with the target language's tree-sitter grammar."""
    from pygls.uris import to_fs_path

    from codeglm.completion.parse_cache import parse_text
    from codeglm.languages import get_language

    client = make_test_lsp_client()
    recorder = Recorder()

    @client.feature("codeglm/status")
    def on_status(params: Any) -> None:
        recorder.statuses.append(_status_fields(params))

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        return apply_workspace_edit(params)

    await client.start_io(sys.executable, "-m", "lsp", env={k: v for k, v in SERVER_ENV.items() if k != "CODEGLM_BACKEND"})
    try:
        await client.initialize_session(types.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
        assert "default model" in await wait_for_state(recorder, "ready")
        source = "public class Main {\n    public static int add(int a, int b) {\n        return a + b;\n    }\n}\n"
        uri = open_document(client, tmp_path / "Main.java", "java", source)
        result = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="codeglm.translateFile", arguments=[{"uri": uri, "targetLanguage": "python", "createFile": True}]
            )
        )
        # (Units the model could not translate are in the file as marked comments and
        # listed in failedUnits; the file parses either way.)
        assert result["uri"] is not None and isinstance(result["failedUnits"], list)
        written = Path(to_fs_path(result["uri"]) or "").read_text(encoding="utf-8")
        assert written == result["text"]
        assert not parse_text(get_language("python"), written).root_node.has_error
    finally:
        await client.shutdown_session()


# --- malformed requests: every request is answered, with a code and no traceback -----------

MISSING = object()  # the request has no "params" member at all
BAD_REQUEST_TIMEOUT_S = 1.0


def _inline(uri: object = "file:///tmp/x.py", line: object = 0, character: object = 0) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, "context": {"triggerKind": 1}}


def _translate_file(*arguments: object) -> dict[str, Any]:
    return {"command": commands.TRANSLATE_FILE, "arguments": list(arguments)}


# (case id, method, params given the case's directory, expected code, words the message must hold)
BAD_REQUESTS: list[tuple[str, str, Any, int, tuple[str, ...]]] = [
    ("negative-character", "textDocument/inlineCompletion", lambda d: _inline(character=-1), -32602, ("params.position.character", "-1")),
    ("negative-line", "textDocument/inlineCompletion", lambda d: _inline(line=-5), -32602, ("params.position.line", "-5")),
    ("character-past-2**31", "textDocument/inlineCompletion", lambda d: _inline(character=2**31), -32602, ("character", "2147483648")),
    ("line-past-2**40", "textDocument/inlineCompletion", lambda d: _inline(line=2**40), -32602, ("params.position.line",)),
    ("line-a-string", "textDocument/inlineCompletion", lambda d: _inline(line="ten"), -32602, ("params.position.line",)),
    ("position-a-list", "textDocument/inlineCompletion", lambda d: {**_inline(), "position": [0, 0]}, -32602, ("params.position",)),
    ("text-document-a-string", "textDocument/inlineCompletion", lambda d: {**_inline(), "textDocument": "file:///x.py"}, -32602, ("params.textDocument",)),
    ("position-missing", "textDocument/inlineCompletion", lambda d: {k: v for k, v in _inline().items() if k != "position"}, -32602, ("params.position: missing",)),
    ("character-missing", "textDocument/inlineCompletion", lambda d: {**_inline(), "position": {"line": 0}}, -32602, ("params.position.character: missing",)),
    ("trigger-kind-unknown", "textDocument/inlineCompletion", lambda d: {**_inline(), "context": {"triggerKind": 9}}, -32602, ("params.context.triggerKind",)),
    ("params-missing", "textDocument/inlineCompletion", lambda d: MISSING, -32602, ("textDocument/inlineCompletion", "params")),
    ("params-null", "textDocument/inlineCompletion", lambda d: None, -32602, ("textDocument/inlineCompletion",)),
    ("params-a-list", "textDocument/inlineCompletion", lambda d: [1, 2], -32602, ("textDocument/inlineCompletion",)),
    ("uri-http", "textDocument/inlineCompletion", lambda d: _inline(uri="http://example.com/a.py"), -32602, ("http://example.com/a.py", "file:")),
    ("uri-foo-scheme", "textDocument/inlineCompletion", lambda d: _inline(uri="foo:bar"), -32602, ("foo:bar",)),
    ("uri-untitled-not-open", "textDocument/inlineCompletion", lambda d: _inline(uri="untitled:Untitled-1"), -32602, ("untitled:Untitled-1", "not open")),
    ("uri-a-bare-path", "textDocument/inlineCompletion", lambda d: _inline(uri="src/a.py"), -32602, ("src/a.py", "not a URI")),
    ("uri-a-number", "textDocument/inlineCompletion", lambda d: _inline(uri=5), -32602, ("not a URI",)),
    ("uri-missing-file", "textDocument/inlineCompletion", lambda d: _inline(uri=(d / "gone.py").as_uri()), -32602, ("gone.py", "does not exist")),
    ("uri-a-directory", "textDocument/inlineCompletion", lambda d: _inline(uri=d.as_uri()), -32602, ("is a directory",)),
    ("completion-missing-file", "textDocument/completion", lambda d: {k: v for k, v in _inline(uri=(d / "gone.py").as_uri()).items() if k != "context"}, -32602, ("gone.py", "does not exist")),
    ("translate-missing-file", "workspace/executeCommand", lambda d: _translate_file({"uri": (d / "Gone.java").as_uri(), "targetLanguage": "python"}), -32602, ("Gone.java", "does not exist")),
    ("translate-a-directory", "workspace/executeCommand", lambda d: _translate_file({"uri": d.as_uri(), "targetLanguage": "python"}), -32602, ("is a directory",)),
    ("translate-http-uri", "workspace/executeCommand", lambda d: _translate_file({"uri": "http://example.com/A.java", "targetLanguage": "python"}), -32602, ("http://example.com/A.java",)),
    ("translate-no-arguments", "workspace/executeCommand", lambda d: _translate_file(), -32602, ("exactly one object argument",)),
    ("translate-two-arguments", "workspace/executeCommand", lambda d: _translate_file({}, {}), -32602, ("exactly one object argument",)),
    ("translate-a-number-argument", "workspace/executeCommand", lambda d: _translate_file(5), -32602, ("one object argument",)),
    ("translate-arguments-not-a-list", "workspace/executeCommand", lambda d: {"command": commands.TRANSLATE_FILE, "arguments": {"uri": 1}}, -32602, ("one object argument",)),
    ("translate-no-target", "workspace/executeCommand", lambda d: _translate_file({"uri": (d / "Gone.java").as_uri()}), -32602, ("targetLanguage",)),
    ("translate-selection-bad-range", "workspace/executeCommand", lambda d: {"command": commands.TRANSLATE_SELECTION, "arguments": [{"uri": (d / "A.java").as_uri(), "targetLanguage": "python", "range": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 0}}}]}, -32602, ("range.start",)),
    ("unknown-command", "workspace/executeCommand", lambda d: {"command": "codeglm.noSuchCommand", "arguments": []}, -32602, ("codeglm.noSuchCommand",)),
    ("command-missing", "workspace/executeCommand", lambda d: {"arguments": []}, -32602, ("params.command: missing",)),
    ("unknown-method", "codeglm/noSuchMethod", lambda d: {}, -32601, ("codeglm/noSuchMethod",)),
]


def _raw_request(client: LanguageClient, message: dict[str, Any]) -> asyncio.Future[Any]:
    """Send ``message`` as it is (pygls's typed API would refuse or fix most of the table)
    and return the future of its answer."""
    from concurrent.futures import Future

    future: Future[Any] = Future()
    client.protocol._request_futures[message["id"]] = future
    client.protocol._send_data(message)
    return asyncio.wrap_future(future)


async def _answer(client: LanguageClient, message: dict[str, Any]) -> tuple[Any, JsonRpcException | None, float]:
    """(result, error, seconds) of a raw request; fails the test if no answer comes in time."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(_raw_request(client, message), BAD_REQUEST_TIMEOUT_S * 5)
    except JsonRpcException as error:
        return None, error, time.perf_counter() - started
    except TimeoutError:
        raise AssertionError(f"no answer to {message}") from None
    return result, None, time.perf_counter() - started


def _assert_no_traceback(error: JsonRpcException) -> None:
    assert error.data is None or "traceback" not in str(error.data).lower(), error.data
    assert "Traceback" not in error.message and "\n" not in error.message, error.message


async def _still_serving(client: LanguageClient) -> None:
    stats = await asyncio.wait_for(client.protocol.send_request_async(STATS_METHOD, None), 10)
    assert stats is not None


STATS_METHOD = "codeglm/stats"


@pytest.mark.parametrize(("case", "method", "make_params", "code", "words"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_every_malformed_request_is_answered_with_its_code_and_no_traceback(
    server: tuple[LanguageClient, Recorder], tmp_path: Path,
    case: str, method: str, make_params: Any, code: int, words: tuple[str, ...],
) -> None:
    client, _ = server
    params = make_params(tmp_path)
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": f"bad-{case}", "method": method}
    if params is not MISSING:
        message["params"] = params
    result, error, seconds = await _answer(client, message)
    assert error is not None, f"{case}: answered {result!r} instead of an error"
    assert seconds < BAD_REQUEST_TIMEOUT_S, f"{case}: answered after {seconds:.2f} s"
    assert error.code == code, (case, error.code, error.message)
    _assert_no_traceback(error)
    for word in words:
        assert word in error.message, (case, word, error.message)
    await _still_serving(client)


async def test_requests_that_are_not_json_rpc_are_answered_or_logged(server: tuple[LanguageClient, Recorder]) -> None:
    client, _ = server
    # A request without params for a method that takes none is valid JSON-RPC (pygls dropped it).
    result, error, _ = await _answer(client, {"jsonrpc": "2.0", "id": "stats-no-params", "method": STATS_METHOD})
    assert error is None and "lastGeneration" in str(result)
    # Not JSON-RPC 2.0 but with an id: -32600.
    result, error, seconds = await _answer(client, {"jsonrpc": "1.0", "id": "old-version", "method": STATS_METHOD})
    assert error is not None and error.code == -32600 and "2.0" in error.message and seconds < BAD_REQUEST_TIMEOUT_S
    # A body that is not JSON has no id to answer: logged as a parse error.
    seen = len(client.log_messages)
    body = b"{this is not json"
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    # A notification with bad params cannot be answered: logged, naming the method and field.
    client.protocol._send_data(
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": "file:///x.py"}}}
    )
    await _still_serving(client)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        logged = " | ".join(m.message for m in client.log_messages[seen:])
        if "-32700" in logged and "textDocument/didOpen" in logged:
            break
        await asyncio.sleep(0.05)
    assert "-32700" in logged and "not JSON" in logged, logged
    assert "invalid params for textDocument/didOpen" in logged and "params.textDocument.languageId: missing" in logged


async def test_documents_of_any_scheme_are_served_while_open(server: tuple[LanguageClient, Recorder]) -> None:
    """``untitled:`` (and any other scheme) is an error only when the editor has no copy."""
    client, _ = server
    name, text, line, character = SAMPLES["python"]
    for uri in ("untitled:Untitled-1", "foo:bar/add.py"):
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )
        try:
            result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
            assert isinstance(result, types.InlineCompletionList), result
        finally:
            close_document(client, uri)
        with pytest.raises(JsonRpcException, match="not open in the editor"):
            await client.text_document_inline_completion_async(inline_params(uri, line, character))


async def test_after_a_burst_of_bad_requests_completion_still_works(
    server: tuple[LanguageClient, Recorder], direct_backend: Any, tmp_path: Path
) -> None:
    client, _ = server
    answers = []
    for index, (_, method, make_params, _, _) in enumerate(BAD_REQUESTS):
        params = make_params(tmp_path)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": f"burst-{index}", "method": method}
        if params is not MISSING:
            message["params"] = params
        answers.append(_raw_request(client, message))
    outcomes = await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), 10)
    assert [type(o) for o in outcomes if not isinstance(o, JsonRpcException)] == []
    assert [e.code for e in outcomes] == [case[3] for case in BAD_REQUESTS]
    name, text, line, character = SAMPLES["python"]
    uri = open_document(client, tmp_path / name, "python", text)
    try:
        result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        want = expected(direct_backend, text, line, character, "python", tmp_path / name, 24)
        assert isinstance(result, types.InlineCompletionList) and [i.insert_text for i in result.items] == [want.text]
    finally:
        close_document(client, uri)
