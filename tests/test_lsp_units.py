"""The language server's pure parts: settings, UTF-16 positions, request bookkeeping, commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from codeglm.languages import get_language
from lsp import commands
from lsp.completion_service import resolve_language_id, window_lines
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
    with pytest.raises(SettingsError, match="true or false"):
        apply_settings(Settings(), {"enabled": "yes"})


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
    from codeglm.translate import UnitEvent

    assert commands.progress_message(UnitEvent(0, 4, "function add", "start")) == ("1/4 translating function add", 0)
    assert commands.progress_message(UnitEvent(0, 4, "function add", "done")) == ("1/4 translated function add", 25)
    message, percentage = commands.progress_message(UnitEvent(3, 4, "class Main", "failed", 2, "does not parse"))
    assert message == "4/4 could not translate class Main: does not parse" and percentage == 100


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
