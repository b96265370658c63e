"""The language server's pure parts: settings, UTF-16 positions, request bookkeeping, commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from codeglm.languages import TRANSLATION_LANGUAGES, get_language
from lsp import commands, wire
from lsp.completion_service import resolve_language_id, window_lines
from lsp.documents import DocumentError, check_readable, read_error
from lsp.positions import index_to_utf16, line_at, utf16_to_index
from lsp.requests import AnswerCache, LatestRequests
from lsp.settings import Settings, SettingsError, apply_settings

# --- settings -----------------------------------------------------------------------


def test_settings_from_the_codeglm_section_and_flat() -> None:
    base = Settings()
    nested = apply_settings(base, {"codeglm": {"maxTokens": 32, "temperature": 0.2, "enabledLanguages": ["Python", "go"]}})
    assert (nested.max_tokens, nested.temperature, nested.enabled_languages) == (32, 0.2, ("python", "go"))
    flat = apply_settings(base, {"backend": "native:/m", "debounceMs": 10, "contextLines": 40})
    assert (flat.backend, flat.debounce_ms, flat.context_lines) == ("native:/m", 10, 40)
    assert apply_settings(base, None) is base
    assert apply_settings(base, {"codeglm": {"unrelatedKey": 1}}) == base
    assert nested.language_enabled("python") and not nested.language_enabled("java")
    assert not apply_settings(base, {"enabled": False}).language_enabled("python")


def test_broken_settings_name_every_bad_field_and_change_nothing() -> None:
    with pytest.raises(SettingsError) as info:
        apply_settings(Settings(), {"codeglm": {"maxTokens": -3, "temperature": "hot", "debounceMs": 20}})
    message = str(info.value)
    assert "codeglm.maxTokens" in message and "codeglm.temperature" in message
    assert "debounceMs" not in message
    with pytest.raises(SettingsError, match="enabledLanguages"):
        apply_settings(Settings(), {"enabledLanguages": "python"})
    with pytest.raises(SettingsError, match="JSON object"):
        apply_settings(Settings(), ["maxTokens", 3])
    with pytest.raises(SettingsError, match=r"codeglm\.enabled: Input should be a valid boolean \(got 'yes'\)"):
        apply_settings(Settings(), {"enabled": "yes"})
    # Strict types: no numbers from strings or booleans; snake_case keys name the camelCase field.
    with pytest.raises(SettingsError, match=r"codeglm\.maxTokens: .*integer.*codeglm\.debounceMs: .*integer"):
        apply_settings(Settings(), {"max_tokens": "32", "debounceMs": True})


def test_settings_spell_fields_as_clients_do() -> None:
    settings = apply_settings(Settings(), {"codeglm": {"max_tokens": 16, "topP": 0.5, "backend": " native:/m ",
                                                       "enabledLanguages": "*", "contextLines": None}})
    assert (settings.max_tokens, settings.top_p, settings.backend, settings.enabled_languages) == (16, 0.5, "native:/m", None)
    assert settings.temperature == 0.0 and apply_settings(settings, {"temperature": 1}).temperature == 1.0
    client = settings.to_client_json()
    assert client["maxTokens"] == 16 and client["topP"] == 0.5 and client["enabledLanguages"] is None
    assert set(client) == {"backend", "enabled", "maxTokens", "temperature", "topP", "debounceMs", "enabledLanguages",
                           "contextLines", "loadWaitMs", "cacheSize", "translateMaxUnits", "indexWorkspace", "candidates",
                           "maxIndexedFiles"}
    assert apply_settings(Settings(), {"backend": ""}).backend is None


# --- positions ----------------------------------------------------------------------


def test_utf16_positions_round_trip_across_astral_characters() -> None:
    line = 'x = "😀é" + y'
    # "😀" is one str character but two UTF-16 code units.
    assert index_to_utf16(line, 6) == 7
    assert utf16_to_index(line, 7) == 6
    for index in range(len(line) + 1):
        assert utf16_to_index(line, index_to_utf16(line, index)) == index
    assert utf16_to_index(line, 1000) == len(line)
    assert utf16_to_index(line, 6) == 6  # inside the surrogate pair: rounds up past the emoji
    assert line_at("a\r\nb\nc", 1) == "b" and line_at("a", 5) == ""


def test_window_lines_keeps_lines_around_the_cursor() -> None:
    text = "\n".join(f"line{i}" for i in range(10))
    window, first = window_lines(text, 5, 2)
    assert first == 3 and window.split("\n") == ["line3", "line4", "line5", "line6", "line7"]
    assert window_lines(text, 5, None) == (text, 0)


def test_language_ids_resolve_from_lsp_ids_or_paths() -> None:
    assert resolve_language_id("python", None) == "python"
    assert resolve_language_id("plaintext", "/x/Main.java") == "java"
    assert resolve_language_id("markdown", "/x/README.md") is None


# --- request bookkeeping ------------------------------------------------------------


def test_a_newer_request_cancels_the_older_one_for_the_same_document() -> None:
    latest = LatestRequests()
    first = latest.start("file:///a.py")
    other = latest.start("file:///b.py")
    second = latest.start("file:///a.py")
    assert first.cancelled and not second.cancelled and not other.cancelled
    assert latest.superseded == 1
    latest.finish("file:///a.py", first)  # a stale finish does not forget the newer one
    latest.cancel("file:///a.py")
    assert second.cancelled


def test_answer_cache_is_a_small_lru() -> None:
    cache: AnswerCache[str] = AnswerCache(2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"
    cache.put("c", "C")  # "b" is the least recently used
    assert cache.get("b") is None and cache.get("c") == "C"
    assert (cache.hits, cache.misses) == (2, 1)
    cache.resize(0)
    cache.put("d", "D")
    assert cache.get("d") is None


# --- commands -----------------------------------------------------------------------


def test_parse_translate_command_checks_its_argument() -> None:
    spec = {"uri": "file:///x/Main.java", "targetLanguage": "Python", "createFile": True}
    command = commands.parse_command(spec, selection=False)
    assert command.target.id == "python" and command.create_file and not command.overwrite
    with pytest.raises(commands.CommandError, match="unsupported language 'cobol'"):
        commands.parse_command({**spec, "targetLanguage": "cobol"}, selection=False)
    with pytest.raises(commands.CommandError, match="range"):
        commands.parse_command(spec, selection=True)
    with pytest.raises(commands.CommandError, match="overwrite"):
        commands.parse_command({**spec, "overwrite": "yes"}, selection=False)
    with pytest.raises(commands.CommandError, match="one object argument"):
        commands.parse_command(["file:///x"], selection=False)
    selection = {**spec, "range": {"start": {"line": 1, "character": 0}, "end": {"line": 0, "character": 0}}}
    with pytest.raises(commands.CommandError, match="ends before it starts"):
        commands.parse_command(selection, selection=True)


def test_translation_languages_are_the_tables_with_their_editor_names() -> None:
    advertised = commands.translation_languages()
    assert [lang["id"] for lang in advertised] == list(TRANSLATION_LANGUAGES)
    cpp = next(lang for lang in advertised if lang["id"] == "cpp")
    assert cpp == {
        "id": "cpp",
        "displayName": "C++",
        "vscodeIds": ["cpp", "cuda-cpp"],
        "extensions": list(get_language("cpp").extensions),
    }
    # Every advertised id is one the commands take as "targetLanguage".
    for lang in advertised:
        spec = {"uri": "file:///x/a.c", "targetLanguage": lang["id"]}
        assert commands.parse_command(spec, selection=False).target.id == lang["id"]
    # C has a grammar but CodeGeeX was not trained to translate it: not offered.
    assert "c" not in {lang["id"] for lang in advertised}
    assert commands.experimental_capabilities() == {"codeglm": {"translationLanguages": advertised}}


def test_selected_text_uses_utf16_columns() -> None:
    text = "a = '😀'\nb = 2\nc = 3\n"
    selection = types.Range(start=types.Position(0, 4), end=types.Position(1, 5))
    assert commands.selected_text(text, selection) == "'😀'\nb = 2"
    everything = types.Range(start=types.Position(0, 0), end=types.Position(99, 0))
    assert commands.selected_text(text, everything) == text


def test_creation_edit_creates_then_fills_the_file() -> None:
    edit = commands.creation_edit("file:///x/main.py", "print(1)\n", overwrite=False)
    assert edit.document_changes is not None
    create, fill = edit.document_changes
    assert isinstance(create, types.CreateFile) and create.options is not None
    assert create.options.overwrite is False
    assert isinstance(fill, types.TextDocumentEdit) and fill.edits[0].new_text == "print(1)\n"


def test_output_path_sits_beside_the_source_named_by_the_target_convention() -> None:
    assert commands.output_path(Path("/src/pkg/FooBar.java"), get_language("python")) == Path("/src/pkg/foo_bar.py")
    assert commands.output_path(Path("/src/foo_bar.py"), get_language("java")) == Path("/src/FooBar.java")


def test_progress_messages_follow_the_units() -> None:
    from codeglm.translation.types import UnitEvent

    assert commands.progress_message(UnitEvent(0, 4, "function add", "start", max_retries=2)) == (
        "unit 1 of 4: translating function add",
        0,
    )
    assert commands.progress_message(UnitEvent(0, 4, "function add", "done", 0, "", 2)) == (
        "unit 1 of 4: translated function add",
        25,
    )
    message, percentage = commands.progress_message(UnitEvent(3, 4, "class Main", "failed", 2, "does not parse", 2))
    assert message == "unit 4 of 4: could not translate class Main after 3 attempts (does not parse); kept as a marked comment"
    assert percentage == 100


def test_retries_are_attempts_at_the_same_unit_not_new_units() -> None:
    from codeglm.translation.types import UnitEvent

    # A one-unit file retried three times: always "unit 1 of 1", the retry counted apart.
    events = [
        UnitEvent(0, 1, "file", "start", 0, "", 3),
        *(UnitEvent(0, 1, "file", "retry", k, "does not parse as Go near line 4", 3) for k in (1, 2, 3)),
        UnitEvent(0, 1, "file", "done", 3, "", 3),
    ]
    shown = [commands.progress_message(e) for e in events]
    assert [m for m, _ in shown] == [
        "unit 1 of 1: translating the whole file",
        "unit 1 of 1: retry 1 of 3 for the whole file (does not parse as Go near line 4)",
        "unit 1 of 1: retry 2 of 3 for the whole file (does not parse as Go near line 4)",
        "unit 1 of 1: retry 3 of 3 for the whole file (does not parse as Go near line 4)",
        "unit 1 of 1: translated the whole file after 3 retries",
    ]
    assert [p for _, p in shown] == [0, 25, 50, 75, 100]
    # An event that does not say how many retries are allowed still reads right, and a
    # stray index or total never pushes the percentage out of 0-100.
    assert commands.progress_message(UnitEvent(0, 2, "function f", "retry", 1, "")) == ("unit 1 of 2: retry 1 for function f", 25)
    assert commands.progress_message(UnitEvent(5, 2, "function f", "done"))[1] == 100
    assert commands.progress_message(UnitEvent(0, 0, "function f", "done"))[1] == 100
    with pytest.raises(ValueError, match="unknown translation event status 'paused'"):
        commands.progress_message(UnitEvent(0, 1, "file", "paused"))


def test_progress_of_a_real_translation_only_moves_forward() -> None:
    from test_translate_pipeline import ScriptedBackend

    from codeglm.translation.pipeline import translate
    from codeglm.translation.types import TranslationRequest, UnitEvent

    bad_area = "func Area(r float64) float64 {\n\treturn math.Pi * r *\n"
    good_area = "func Area(r float64) float64 {\n\treturn math.Pi * r * r\n}\n"
    backend = ScriptedBackend(['import "math"\n', bad_area, bad_area, good_area] + ["func Double(x int) int {\n"] * 3)
    source = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef double(x):\n    return 2 * x\n"
    events: list[UnitEvent] = []
    request = TranslationRequest(source, "python", "go", split="units", max_retries=2)
    result = translate(request, backend, on_unit=events.append)
    shown = [commands.progress_message(e) for e in events]
    assert [m for m, _ in shown] == [
        "unit 1 of 3: translating imports 1 line(s)",
        "unit 1 of 3: translated imports 1 line(s)",
        "unit 2 of 3: translating function area",
        "unit 2 of 3: retry 1 of 2 for function area (does not parse as Go near line 1)",
        "unit 2 of 3: retry 2 of 2 for function area (does not parse as Go near line 1)",
        "unit 2 of 3: translated function area after 2 retries",
        "unit 3 of 3: translating function double",
        "unit 3 of 3: retry 1 of 2 for function double (does not parse as Go near line 1)",
        "unit 3 of 3: retry 2 of 2 for function double (does not parse as Go near line 1)",
        "unit 3 of 3: could not translate function double after 3 attempts (does not parse as Go near line 1); "
        "kept as a marked comment",
    ]
    percentages = [p for _, p in shown]
    assert percentages == sorted(percentages) and percentages[-1] == 100 and max(percentages) <= 100
    # The end of the progress and the one warning: counts, then each failed unit once.
    failed = [commands.failed_unit_json(u) for u in result.failed_units]
    assert commands.progress_end_message(len(result.units), len(failed), result.retries, 1.25) == (
        "translated 2 of 3 units, 1 kept as a marked comment, 4 retries, 1.2s"
    )
    notice = commands.TranslationOutcome(
        result.text, None, failed, None, commands.failed_units_notice(failed, len(result.units), "Go")
    ).notice()
    assert notice == (
        "1 of 3 units did not translate into valid Go and is kept as a marked comment in the translation: "
        "function double (source lines 8-9: does not parse as Go near line 1)"
    )


def test_one_warning_names_failed_units_and_why_the_file_was_not_written() -> None:
    failed = [
        {"index": 0, "name": "file", "kind": "file", "startLine": 0, "endLine": 4, "attempts": 3, "problem": "no code"},
    ]
    notice = commands.failed_units_notice(failed, 1, "Rust")
    assert notice == (
        "1 of 1 unit did not translate into valid Rust and is kept as a marked comment in the translation: "
        "the whole file (source lines 1-5: no code)"
    )
    outcome = commands.TranslationOutcome("x", None, failed, "not written: /src/a.rs already exists", notice)
    assert outcome.notice() == notice + "; not written: /src/a.rs already exists"
    # The JSON result keeps the data (failedUnits, message); the sentence is for the user only.
    assert outcome.to_json() == {"text": "x", "uri": None, "failedUnits": failed, "message": "not written: /src/a.rs already exists"}
    assert commands.TranslationOutcome("x", "file:///src/a.rs", []).notice() is None
    assert commands.failed_units_notice([], 3, "Go") is None
    assert commands.progress_end_message(1, 0, 0, 0.04) == "translated 1 of 1 unit, 0.0s"


# --- model holder -------------------------------------------------------------------


def test_model_holder_reports_a_model_that_cannot_load(tmp_path: Path) -> None:
    from lsp.model_holder import ERROR, LOADING, LoadState, ModelHolder, load_backend

    states: list[LoadState] = []
    holder = ModelHolder(load_backend, states.append)
    missing = tmp_path / "missing-model"
    holder.load(f"native:{missing}")
    assert holder.wait(120.0) is None  # returns as soon as loading failed
    assert [s.state for s in states] == [LOADING, ERROR]
    assert str(missing) in states[-1].message and "--backend" in states[-1].message
    holder.close()


# --- messages pygls cannot read, document URIs, errors without tracebacks -------------


def _protocol_with_writer() -> tuple[Any, list[dict[str, Any]]]:
    """The real server's protocol with a writer that keeps what it would send."""
    import json

    from lsp.server import create_server

    server = create_server(Settings())
    sent: list[dict[str, Any]] = []

    class Writer:
        def write(self, data: bytes) -> None:
            sent.append(json.loads(data))

        def close(self) -> None:
            pass

    server.protocol.set_writer(Writer(), include_headers=False)
    return server, sent


def test_a_request_whose_params_do_not_fit_is_answered_with_the_bad_fields() -> None:
    server, sent = _protocol_with_writer()
    raw = (
        '{"jsonrpc": "2.0", "id": 7, "method": "textDocument/inlineCompletion", "params": {"textDocument": '
        '{"uri": "file:///a.py"}, "position": {"line": 0, "character": -1}, "context": {"triggerKind": 1}}}'
    )
    import json

    server.protocol.handle_message(json.loads(raw, object_hook=server.protocol.structure_message))
    assert len(sent) == 1 and sent[0]["id"] == 7
    error = sent[0]["error"]
    assert error["code"] == wire.INVALID_PARAMS
    assert error["message"] == (
        "invalid params for textDocument/inlineCompletion: params.position.character: "
        "should be in range [0:2147483647], but was -1."
    )
    assert "data" not in error or error["data"] is None


def test_structure_problems_name_each_field_as_the_client_spells_it() -> None:
    from pygls.protocol import default_converter

    converter = default_converter()
    with pytest.raises(Exception) as caught:
        converter.structure(
            {"textDocument": "x", "position": {"line": "ten"}, "context": {"triggerKind": 9}},
            types.InlineCompletionParams,
        )
    problems = dict(wire.structure_problems(caught.value))
    assert problems["textDocument"] == "must be an object"
    assert problems["position.line"] == "invalid literal for int() with base 10: 'ten'"
    assert problems["position.character"] == "missing"
    assert problems["context.triggerKind"] == "9 is not a valid InlineCompletionTriggerKind"


def test_request_ids_and_default_params() -> None:
    assert wire.request_id({"id": 3}) == 3 and wire.request_id({"id": "a"}) == "a"
    assert wire.request_id({"id": True}) is None and wire.request_id({"id": 1.5}) is None
    assert wire.request_id({"id": None}) is None and wire.request_id({}) is None

    def typed(method: str) -> object | None:
        return object() if method == "textDocument/inlineCompletion" else None

    assert wire.with_default_params({"id": 1, "method": "codeglm/stats"}, typed)["params"] is None
    untouched = {"id": 1, "method": "textDocument/inlineCompletion"}
    assert wire.with_default_params(untouched, typed) is untouched
    assert "params" not in wire.with_default_params({"id": 1, "result": 3}, typed)


def test_messages_that_are_not_json_rpc_2() -> None:
    assert wire.invalid_message([1, 2]) == (None, "a JSON-RPC message must be an object, got list")
    msg_id, problem = wire.invalid_message({"id": 4, "method": "x"})
    assert msg_id == 4 and "expected \"2.0\"" in problem
    msg_id, problem = wire.invalid_message({"jsonrpc": "2.0", "id": 5, "method": 3})
    assert msg_id == 5 and "method" in problem
    assert "-32700" in wire.parse_error_message(ValueError("Expecting value"))


def test_internal_errors_lose_their_traceback_but_keep_one_line() -> None:
    import sys

    from pygls.exceptions import JsonRpcInternalError

    try:
        open("/nonexistent/codeglm-file")  # noqa: SIM115
    except OSError:
        error = JsonRpcInternalError.of(sys.exc_info()).to_response_error()
    assert "traceback" in error.data
    clean, trace = wire.without_traceback(error)
    assert clean.code == wire.INTERNAL_ERROR and clean.data is None
    assert clean.message.startswith("FileNotFoundError: ") and "\n" not in clean.message
    assert trace is not None and "open(" in trace
    plain = types.ResponseError(code=-32602, message="bad")
    assert wire.without_traceback(plain) == (plain, None)


def test_a_handler_that_raises_answers_an_internal_error_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    server, sent = _protocol_with_writer()

    @server.feature("codeglm/boom")
    def boom(ls: Any, params: Any) -> None:
        raise RuntimeError("the handler broke")

    message = server.protocol.structure_message({"jsonrpc": "2.0", "id": 9, "method": "codeglm/boom"})
    with caplog.at_level("ERROR"):
        server.protocol.handle_message(message)
    assert sent == [{"jsonrpc": "2.0", "id": 9, "error": {"code": -32603, "message": "RuntimeError: the handler broke"}}]
    assert "Traceback" in caplog.text or "raise RuntimeError" in caplog.text


def test_which_document_uris_can_be_read(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n", encoding="utf-8")
    check_readable((tmp_path / "a.py").as_uri(), is_open=False)
    for uri in ("untitled:Untitled-1", "http://example.com/a.py", "foo:bar"):
        check_readable(uri, is_open=True)  # the editor's copy is read, whatever the scheme
    cases = {
        "untitled:Untitled-1": "not open in the editor",
        "http://example.com/a.py": "reads only file: URIs",
        "foo:bar": "reads only file: URIs",
        "a.py": "is not a URI",
        (tmp_path / "gone.py").as_uri(): f"{tmp_path / 'gone.py'} does not exist",
        tmp_path.as_uri(): f"{tmp_path} is a directory",
    }
    for uri, words in cases.items():
        with pytest.raises(DocumentError, match=re.escape(words)):
            check_readable(uri, is_open=False)
    assert "is not UTF-8" in str(read_error("file:///b.py", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")))


def test_requests_after_shutdown_and_unreadable_responses_are_answered() -> None:
    from concurrent.futures import Future

    from pygls.exceptions import JsonRpcException

    server, sent = _protocol_with_writer()
    # A response from the client that does not fit what the server asked: the waiting
    # request fails with the reason instead of waiting forever.
    waiting: Future[Any] = Future()
    server.protocol._request_futures["r1"] = waiting
    server.protocol._result_types["r1"] = server.protocol.get_result_type(types.WORKSPACE_APPLY_EDIT)
    server.protocol.handle_message(server.protocol.structure_message({"jsonrpc": "2.0", "id": "r1", "result": 5}))
    with pytest.raises(JsonRpcException, match="unreadable response 'r1'"):
        waiting.result(timeout=1)
    # After shutdown (LSP): requests get InvalidRequest, not silence.
    server.protocol._shutdown = True
    server.protocol.handle_message(server.protocol.structure_message({"jsonrpc": "2.0", "id": 3, "method": "codeglm/stats"}))
    assert sent[-1]["id"] == 3 and sent[-1]["error"]["code"] == wire.INVALID_REQUEST
    assert "shutting down" in sent[-1]["error"]["message"]
