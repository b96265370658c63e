"""The language server's repository context, end to end over stdio (pytest-lsp).

The workspace comes from ``initialize``; the server indexes it in the background with
``$/progress``, asks the client to watch source files, and keeps the index fresh from
``workspace/didChangeWatchedFiles``. ``codeglm.showLastPrompt`` shows the last prompt: the
definition from a file that is not open is in it, labelled with its path, and after the
file changes on disk the new signature is.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _backends_fixtures import make_tiny_model_dir
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

from lsp.repository import SHOW_LAST_PROMPT, watched_globs

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-codegeex-ws"), context=2048)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    (root / ".gitignore").write_text("generated/\n")
    (root / "orders.py").write_text(
        'def parse_order(raw: str, strict: bool) -> dict:\n    """One order line."""\n    return {}\n'
    )
    (root / "generated").mkdir()
    (root / "generated" / "parse.py").write_text("def parse_order(ignored):\n    pass\n")
    (root / "app.py").write_text("from orders import parse_order\n\nx = parse_order(\n")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tiny_model: Path, project: Path):
    client = make_test_lsp_client()
    registrations: list[types.Registration] = []
    statuses: list[tuple[str, str]] = []

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def on_register(params: types.RegistrationParams) -> None:
        registrations.extend(params.registrations)

    @client.feature("codeglm/status")
    def on_status(params: Any) -> None:
        statuses.append((params.state, params.message) if not isinstance(params, dict) else (params["state"], params["message"]))

    await client.start_io(sys.executable, "-m", "lsp", "--backend", f"native:{tiny_model}", env=SERVER_ENV)
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"codeglm": {"maxTokens": 8}},
            workspace_folders=[types.WorkspaceFolder(uri=project.as_uri(), name="shop")],
            root_uri=project.as_uri(),
        )
    )
    yield client, registrations, statuses
    await client.shutdown_session()


async def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def index_finished(client: LanguageClient) -> bool:
    return any(
        isinstance(report, types.WorkDoneProgressEnd) for reports in client.progress_reports.values() for report in reports
    )


async def last_prompt(client: LanguageClient, project: Path, version: int) -> dict[str, Any]:
    uri = (project / "app.py").as_uri()
    text = (project / "app.py").read_text()
    if version == 1:
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    else:  # an edit, so the answer is not the cached one
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text + "#\n" * version)]))
    await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=2, character=16),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
    ))
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=SHOW_LAST_PROMPT))


async def test_index_progress_watchers_and_last_prompt(session, project: Path) -> None:
    client, registrations, statuses = session
    await wait_until(lambda: index_finished(client))
    await wait_until(lambda: any(state == "ready" for state, _ in statuses))
    reports = next(iter(client.progress_reports.values()))
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].title == "codeglm: indexing " + project.name
    assert "2 files" in reports[-1].message  # orders.py and app.py; generated/ is ignored
    # The server asked the client to watch source files and .gitignore.
    [watch] = [r for r in registrations if r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    globs = [w["globPattern"] if isinstance(w, dict) else w.glob_pattern for w in
             (watch.register_options["watchers"] if isinstance(watch.register_options, dict)
              else watch.register_options.watchers)]
    assert globs == watched_globs()

    shown = await last_prompt(client, project, 1)
    assert "# def parse_order(raw: str, strict: bool) -> dict:" in shown["prompt"]
    assert "# Compare this snippet from orders.py:" in shown["prompt"]
    assert shown["prompt"].endswith("x = parse_order(")
    [snippet] = [s for s in shown["snippets"] if s["name"] == "parse_order"]
    assert (snippet["source"], snippet["path"]) == ("import", "orders.py")
    assert "def parse_order(ignored)" not in shown["prompt"]
    # A random-weight model writes junk: nothing shown, and the reason is given (here and in the status).
    if not shown["text"]:
        assert shown["dropped"]
        await wait_until(lambda: any(shown["dropped"] in message for _, message in statuses), timeout=10)

    # The file changes on disk; the editor's watcher tells the server.
    (project / "orders.py").write_text("def parse_order(raw: bytes, *, encoding: str = 'utf-8') -> dict:\n    return {}\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=(project / "orders.py").as_uri(), type=types.FileChangeType.Changed)]))
    await asyncio.sleep(0.3)
    shown = await last_prompt(client, project, 2)
    assert "# def parse_order(raw: bytes, *, encoding: str = 'utf-8') -> dict:" in shown["prompt"]
    assert "strict: bool" not in shown["prompt"]
    # Deleted: gone from the prompt.
    (project / "orders.py").unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=(project / "orders.py").as_uri(), type=types.FileChangeType.Deleted)]))
    await asyncio.sleep(0.3)
    shown = await last_prompt(client, project, 3)
    assert "def parse_order(raw" not in shown["prompt"]


async def test_several_candidates_when_asked_explicitly(session, tmp_path: Path) -> None:
    client, _, statuses = session
    await wait_until(lambda: any(state == "ready" for state, _ in statuses))
    path = tmp_path / "notes.py"
    text = "def add(a, b):\n    # \n"
    path.write_text(text)
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    async def items(kind: types.InlineCompletionTriggerKind) -> list[str]:
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=6),
            context=types.InlineCompletionContext(trigger_kind=kind)))
        assert isinstance(result, types.InlineCompletionList)
        return [item.insert_text for item in result.items]

    typing = await items(types.InlineCompletionTriggerKind.Automatic)
    asked = await items(types.InlineCompletionTriggerKind.Invoked)
    assert len(typing) == 1  # words in a comment are valid: the random model's greedy text is shown
    assert asked[0] == typing[0] and 2 <= len(asked) <= 3 and len(set(asked)) == len(asked)
