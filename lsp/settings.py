"""The server's settings: defaults, the command line, and what clients send.

Clients send settings in ``initializationOptions`` and ``workspace/didChangeConfiguration``,
either flat (``{"backend": ...}``) or under the ``codeglm`` section
(``{"codeglm": {"backend": ...}}``). ``apply_settings`` validates every field it is given
and returns new settings, or raises ``SettingsError`` naming each bad field, so that a
broken setting leaves the previous good settings in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

SECTION = "codeglm"


class SettingsError(ValueError):
    """One or more settings a client sent are invalid; the message names them."""


@dataclass(frozen=True)
class Settings:
    """Everything a client may configure.

    ``backend``: a backend spec (``native:DIR``, ``hf:DIR``, ``openai:URL#MODEL``); None
    means the project's default model.
    ``enabled_languages``: language ids completion runs for; None means every language
    the completion pipeline supports.
    ``context_lines``: lines kept on each side of the cursor before the prompt builder
    (which budgets tokens on its own) sees the document; None keeps the whole document.
    ``load_wait_ms``: how long a completion asked for while the model loads waits for it.
    """

    backend: str | None = None
    enabled: bool = True
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    debounce_ms: int = 75
    enabled_languages: tuple[str, ...] | None = None
    context_lines: int | None = None
    load_wait_ms: int = 1500
    cache_size: int = 64

    def language_enabled(self, language_id: str) -> bool:
        return self.enabled and (self.enabled_languages is None or language_id in self.enabled_languages)

    def to_client_json(self) -> dict[str, Any]:
        """The settings as the client spells them (for logs and ``codeglm/status``)."""
        return {_CLIENT_NAMES[f.name]: _jsonable(getattr(self, f.name)) for f in fields(self)}


# field name -> the camelCase key clients send
_CLIENT_NAMES: dict[str, str] = {
    "backend": "backend",
    "enabled": "enabled",
    "max_tokens": "maxTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "debounce_ms": "debounceMs",
    "enabled_languages": "enabledLanguages",
    "context_lines": "contextLines",
    "load_wait_ms": "loadWaitMs",
    "cache_size": "cacheSize",
}
_FIELD_OF: dict[str, str] = {client: field for field, client in _CLIENT_NAMES.items()}
# snake_case spellings are accepted too (command line style, Neovim users)
_FIELD_OF.update({field: field for field in _CLIENT_NAMES})


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _int_in(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise SettingsError(f"{key} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{key} must be between {low} and {high}, got {value!r}")
    return int(value)


def _float_in(key: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{key} must be a number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bound = f"({low}" if low_open else f"[{low}"
        raise SettingsError(f"{key} must be in {bound}, {high}], got {value!r}")
    return float(value)


def _convert(field: str, key: str, value: object) -> object:
    """The validated value of one setting (``key`` is how the client spelled it)."""
    if field == "backend":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be a backend string such as native:MODEL_DIR, got {value!r}")
        return value.strip()
    if field == "enabled":
        if not isinstance(value, bool):
            raise SettingsError(f"{key} must be true or false, got {value!r}")
        return value
    if field == "max_tokens":
        return _int_in(key, value, 1, 2048)
    if field == "temperature":
        return _float_in(key, value, 0.0, 2.0)
    if field == "top_p":
        return _float_in(key, value, 0.0, 1.0, low_open=True)
    if field == "debounce_ms":
        return _int_in(key, value, 0, 10_000)
    if field == "load_wait_ms":
        return _int_in(key, value, 0, 60_000)
    if field == "cache_size":
        return _int_in(key, value, 0, 10_000)
    if field == "context_lines":
        return None if value is None else _int_in(key, value, 1, 1_000_000)
    if field == "enabled_languages":
        if value is None or value == "*" or value == ["*"]:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise SettingsError(f"{key} must be a list of language ids such as [\"python\", \"java\"], got {value!r}")
        return tuple(v.strip().lower() for v in value)
    raise AssertionError(field)  # every key in _FIELD_OF is handled above


def settings_section(raw: object) -> Mapping[str, Any] | None:
    """The ``codeglm`` settings inside what a client sent, or None if it sent none."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SettingsError(f"settings must be a JSON object, got {type(raw).__name__}")
    if SECTION in raw:
        section = raw[SECTION]
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise SettingsError(f"the {SECTION!r} settings must be a JSON object, got {type(section).__name__}")
        return section
    return raw


def apply_settings(current: Settings, raw: object) -> Settings:
    """``current`` updated with the settings in ``raw``; unknown keys are ignored.

    Raises ``SettingsError`` listing every invalid setting; nothing is applied then.
    """
    section = settings_section(raw)
    if section is None:
        return current
    changes: dict[str, object] = {}
    problems: list[str] = []
    for key, value in section.items():
        field = _FIELD_OF.get(key)
        if field is None:
            continue  # other tools' settings can share the section; not ours to judge
        try:
            changes[field] = _convert(field, f"{SECTION}.{key}", value)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsError("invalid settings, keeping the previous ones: " + "; ".join(problems))
    return replace(current, **changes)  # type: ignore[arg-type]
