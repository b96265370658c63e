"""The translate commands: ``codeglm.translateFile`` and ``codeglm.translateSelection``.

One argument object per call::

    {"uri": DOCUMENT_URI, "targetLanguage": "python", "range": LSP_RANGE (selection only),
     "createFile": false, "overwrite": false}

and the result ``{"text": TRANSLATION, "uri": NEW_FILE_URI_OR_NULL, "failedUnits": [...]}``.
The languages they take are advertised in the ``initialize`` result (``experimental_capabilities``).
The pure parts (argument checking, the selected text, the new file's name, the
``WorkspaceEdit`` that creates it) are functions here; ``run_translation`` chains them
with the translation pipeline, progress reports and the client's ``workspace/applyEdit``
through the small ``TranslationClient`` interface the server implements.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lsprotocol import types
from pygls.uris import from_fs_path, to_fs_path

from codeglm.backends.base import Backend, BackendError, CancelledError, CancelToken
from codeglm.languages import TRANSLATION_LANGUAGES, Language, UnsupportedLanguageError, get_language
from codeglm.translation.budget import Estimate, TooManyUnitsError, too_many_units_message
from codeglm.translation.naming import output_name
from codeglm.translation.pipeline import translate
from codeglm.translation.progress import progress_line, progress_percentage, unit_name
from codeglm.translation.types import TranslationError, TranslationRequest
from lsp.positions import utf16_to_index

if TYPE_CHECKING:
    from codeglm.translation.types import UnitEvent

log = logging.getLogger(__name__)

TRANSLATE_FILE = "codeglm.translateFile"
TRANSLATE_SELECTION = "codeglm.translateSelection"
COMMANDS = (TRANSLATE_FILE, TRANSLATE_SELECTION)
# The setting that limits the units one translation may take (``lsp.settings``).
MAX_UNITS_SETTING = "codeglm.translateMaxUnits"
# The server's entry in ``capabilities.experimental`` of its ``initialize`` result.
EXPERIMENTAL_SECTION = "codeglm"


class CommandError(ValueError):
    """A command cannot run as asked; the message says why and what to change."""


@dataclass(frozen=True)
class TranslateCommand:
    """A checked translate command; ``range`` is the selection (LSP range) or None."""

    uri: str
    target: Language
    range: types.Range | None
    create_file: bool
    overwrite: bool


@dataclass(frozen=True)
class TranslationOutcome:
    """The command's result. ``message``: why the file was not written (in the JSON result);
    ``failure_notice``: the failed units in words, for the user (not in the JSON result,
    whose ``failedUnits`` has them as data)."""

    text: str
    uri: str | None
    failed_units: list[dict[str, Any]]
    message: str | None = None
    failure_notice: str | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"text": self.text, "uri": self.uri, "failedUnits": self.failed_units}
        if self.message:
            result["message"] = self.message
        return result

    def notice(self) -> str | None:
        """One warning for the user (``window/showMessage``), or None when all went well."""
        parts = [part for part in (self.failure_notice, self.message) if part]
        return "; ".join(parts) or None


def translation_languages() -> list[dict[str, Any]]:
    """The languages translation takes, for clients: codeglm's id (the ``targetLanguage``
    the commands take), the display name, and the VS Code language ids and file extensions
    that map to each. Derived from ``codeglm.languages`` so that no editor keeps a copy."""
    return [
        {
            "id": lang.id,
            "displayName": lang.display_name,
            "vscodeIds": list(lang.vscode_ids),
            "extensions": list(lang.extensions),
        }
        for lang in map(get_language, TRANSLATION_LANGUAGES)
    ]


def experimental_capabilities() -> dict[str, Any]:
    """``capabilities.experimental`` of the ``initialize`` result: the client has the
    translation languages with the handshake, from the server it actually talks to."""
    return {EXPERIMENTAL_SECTION: {"translationLanguages": translation_languages()}}


def _position(value: object, where: str) -> types.Position:
    if (
        not isinstance(value, Mapping)
        or not all(
            isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
            for k in ("line", "character")
        )
        or value["line"] < 0
        or value["character"] < 0
    ):
        raise CommandError(f'{where} must be an LSP position {{"line": N, "character": N}}, got {value!r}')
    return types.Position(line=value["line"], character=value["character"])


def parse_command(spec: object, *, selection: bool) -> TranslateCommand:
    """Check a command's argument object; raises ``CommandError`` with a clear message."""
    name = TRANSLATE_SELECTION if selection else TRANSLATE_FILE
    if not isinstance(spec, Mapping):
        raise CommandError(f'{name} takes one object argument {{"uri", "targetLanguage", ...}}, got {spec!r}')
    uri = spec.get("uri")
    if not isinstance(uri, str) or not uri:
        raise CommandError(f'{name}: "uri" must be the URI of an open document')
    target_name = spec.get("targetLanguage")
    if not isinstance(target_name, str) or not target_name:
        raise CommandError(f'{name}: "targetLanguage" must be a language id such as "python"')
    try:
        target = get_language(target_name)
    except UnsupportedLanguageError as exc:
        raise CommandError(f"{name}: {exc}") from exc
    selected: types.Range | None = None
    if selection:
        raw = spec.get("range")
        if not isinstance(raw, Mapping):
            raise CommandError(f'{name}: "range" must be the LSP range of the selection')
        selected = types.Range(
            start=_position(raw.get("start"), "range.start"), end=_position(raw.get("end"), "range.end")
        )
        if (selected.end.line, selected.end.character) < (selected.start.line, selected.start.character):
            raise CommandError(f'{name}: "range" ends before it starts')
    flags = {}
    for key in ("createFile", "overwrite"):
        value = spec.get(key, False)
        if not isinstance(value, bool):
            raise CommandError(f'{name}: "{key}" must be true or false, got {value!r}')
        flags[key] = value
    return TranslateCommand(uri, target, selected, flags["createFile"], flags["overwrite"])


def _offset(text: str, position: types.Position) -> int:
    """The str offset of an LSP position (UTF-16 character) in ``text``, clamped."""
    lines = text.split("\n")
    if position.line >= len(lines):
        return len(text)
    start = sum(len(line) + 1 for line in lines[: position.line])
    return start + utf16_to_index(lines[position.line].removesuffix("\r"), position.character)


def selected_text(text: str, selection: types.Range) -> str:
    return text[_offset(text, selection.start) : _offset(text, selection.end)]


def output_path(source: Path, target: Language) -> Path:
    """Where the translation of ``source`` goes: beside it, named by the target's
    convention (``FooBar.java`` -> ``foo_bar.py``, ``foo_bar.py`` -> ``FooBar.java``)."""

    return source.parent / output_name(source.name, target.id)


def creation_edit(uri: str, text: str, overwrite: bool) -> types.WorkspaceEdit:
    """A ``WorkspaceEdit`` that creates ``uri`` (failing if it exists unless ``overwrite``)
    and fills it with ``text``."""
    return types.WorkspaceEdit(
        document_changes=[
            types.CreateFile(
                uri=uri, options=types.CreateFileOptions(overwrite=overwrite, ignore_if_exists=False)
            ),
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=[
                    types.TextEdit(
                        range=types.Range(start=types.Position(0, 0), end=types.Position(0, 0)), new_text=text
                    )
                ],
            ),
        ]
    )


def failed_unit_json(result: Any) -> dict[str, Any]:
    """A failed unit (``codeglm.translation.types.UnitResult``) as the client sees it.

    ``startLine``/``endLine`` are 0-based lines of the translated source (the document,
    or the selection), ``problem`` says what was wrong with the last attempt.
    """
    unit = result.unit
    return {
        "index": result.index,
        "name": unit.label,
        "kind": unit.kind,
        "startLine": unit.start_line,
        "endLine": unit.end_line,
        "attempts": result.attempts,
        "problem": result.problem,
    }


class TranslationClient(Protocol):
    """What ``run_translation`` needs from the editor side (the server implements it)."""

    async def begin_progress(self, title: str) -> str | None: ...

    def report_progress(self, token: str | None, message: str, percentage: int | None) -> None: ...

    def end_progress(self, token: str | None, message: str) -> None: ...

    async def apply_edit(self, edit: types.WorkspaceEdit) -> tuple[bool, str | None]: ...

    def can_create_files(self) -> bool: ...


def progress_message(event: UnitEvent) -> tuple[str, int]:
    """The ``$/progress`` message and percentage for a translation event.

    The same words as the terminal: "unit 2 of 5: retry 1 of 2 for function add (...)";
    the percentage stays within 0-100 and never goes back over one translation's events.
    """
    return progress_line(event), progress_percentage(event)


def failed_units_notice(failed: list[dict[str, Any]], total: int, target_name: str) -> str | None:
    """The failed units (as ``failed_unit_json`` gives them) in one sentence, or None."""
    if not failed:
        return None
    units = "; ".join(
        f"{unit_name(u['name'])} (source lines {u['startLine'] + 1}-{u['endLine'] + 1}: {u['problem']})"
        for u in failed
    )
    kept = "is kept as a marked comment" if len(failed) == 1 else "are kept as marked comments"
    return (
        f"{len(failed)} of {total} unit{'' if total == 1 else 's'} did not translate into valid {target_name} "
        f"and {kept} in the translation: {units}"
    )


def progress_end_message(units: int, failed: int, retries: int, seconds: float) -> str:
    """The last ``$/progress`` line: counts only (the failed units are in the warning)."""
    line = f"translated {units - failed} of {units} unit{'' if units == 1 else 's'}"
    if failed:
        line += f", {failed} kept as {'a marked comment' if failed == 1 else 'marked comments'}"
    if retries:
        line += f", {retries} retr{'y' if retries == 1 else 'ies'}"
    return f"{line}, {seconds:.1f}s"


async def run_translation(
    command: TranslateCommand,
    source_text: str,
    source_language_id: str,
    backend: Backend,
    client: TranslationClient,
    cancel: CancelToken,
    loop: asyncio.AbstractEventLoop,
    max_units: int | None = None,
) -> TranslationOutcome:
    """Translate the document (or selection), report progress, create the file if asked.

    The first progress report says how many units and roughly how long; past
    ``max_units`` (the ``translateMaxUnits`` setting) the command fails before any
    generation with a message naming the count and the setting.
    """

    try:
        source_language = get_language(source_language_id)
    except UnsupportedLanguageError as exc:
        raise CommandError(f"cannot translate this document: {exc}") from exc
    text = selected_text(source_text, command.range) if command.range is not None else source_text
    if not text.strip():
        raise CommandError("nothing to translate: the document or selection is empty")
    source_path = to_fs_path(command.uri)
    target_path = output_path(Path(source_path or "translated"), command.target)

    def on_unit(event: Any) -> None:  # called on the translation's thread
        message, percentage = progress_message(event)
        loop.call_soon_threadsafe(client.report_progress, token, message, percentage)

    def on_plan(estimate: Estimate) -> None:  # called on the translation's thread
        loop.call_soon_threadsafe(client.report_progress, token, estimate.line(), 0)

    token = await client.begin_progress(
        f"Translating {source_language.display_name} to {command.target.display_name}"
    )
    request = TranslationRequest(
        source=text,
        source_language=source_language.id,
        target_language=command.target.id,
        # Java wraps free functions in a class named like its file.
        class_name=target_path.stem if command.target.id == "java" else None,
        max_units=max_units,
    )
    try:
        result = await asyncio.to_thread(translate, request, backend, cancel, on_unit, on_plan)
    except asyncio.CancelledError:
        cancel.cancel()
        client.end_progress(token, "cancelled")
        raise
    except CancelledError as exc:
        client.end_progress(token, "cancelled")
        raise CommandError("translation cancelled") from exc
    except TooManyUnitsError as exc:
        client.end_progress(token, f"refused: {exc.estimate.units:,} units, more than {exc.limit:,}")
        hint = f'raise the "{MAX_UNITS_SETTING}" setting to {exc.estimate.units} or more (0: no limit)'
        raise CommandError(too_many_units_message(exc.estimate, exc.limit, hint)) from exc
    except (BackendError, TranslationError) as exc:
        client.end_progress(token, "failed")
        raise CommandError(f"translation failed: {exc}") from exc
    failed = [failed_unit_json(unit) for unit in result.failed_units]
    client.end_progress(
        token, progress_end_message(len(result.units), len(failed), result.retries, result.seconds)
    )
    outcome = (
        await _create_file(command, target_path, result.text, failed, client)
        if command.create_file
        else TranslationOutcome(result.text, None, failed)
    )
    return replace(
        outcome, failure_notice=failed_units_notice(failed, len(result.units), command.target.display_name)
    )


async def _create_file(
    command: TranslateCommand, path: Path, text: str, failed: list[dict[str, Any]], client: TranslationClient
) -> TranslationOutcome:
    if not command.uri.startswith("file:") or to_fs_path(command.uri) is None:
        return TranslationOutcome(
            text, None, failed, f"not written: {command.uri} is not a file on disk; save it first"
        )
    uri = from_fs_path(str(path)) or path.as_uri()
    if path.exists() and not command.overwrite:
        return TranslationOutcome(
            text, None, failed, f'not written: {path} already exists; pass "overwrite": true to replace it'
        )
    if client.can_create_files():
        applied, reason = await client.apply_edit(creation_edit(uri, text, command.overwrite))
        if not applied:
            return TranslationOutcome(
                text, None, failed, f"the editor did not create {path}: {reason or 'no reason given'}"
            )
        return TranslationOutcome(text, uri, failed)
    # A client that cannot create files through an edit: write it ourselves, still
    # refusing to replace an existing file ("x" mode) unless asked.
    try:
        with path.open("w" if command.overwrite else "x", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except FileExistsError:
        return TranslationOutcome(text, None, failed, f"not written: {path} already exists")
    except OSError as exc:
        return TranslationOutcome(text, None, failed, f"could not write {path}: {exc.strerror or exc}")
    return TranslationOutcome(text, uri, failed)


def new_progress_token() -> str:
    return f"codeglm-translate-{uuid.uuid4()}"
