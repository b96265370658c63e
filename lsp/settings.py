"""The server's settings: defaults, the command line, and what clients send.

Clients send settings in ``initializationOptions`` and ``workspace/didChangeConfiguration``,
either flat (``{"backend": ...}``) or under the ``codeglm`` section
(``{"codeglm": {"backend": ...}}``), in camelCase (``maxTokens``; snake_case is accepted
too). ``Settings`` is a typed pydantic model that validates them; ``apply_settings``
returns new settings, or raises ``SettingsError`` naming each bad field, so that a
broken setting leaves the previous good settings in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from codeglm.translation.budget import DEFAULT_MAX_UNITS

SECTION = "codeglm"


class SettingsError(ValueError):
    """One or more settings a client sent are invalid; the message names them."""


class Settings(BaseModel):
    """Everything a client may configure.

    ``backend``: a backend spec (``native:DIR``, ``hf:DIR``, ``openai:URL#MODEL``); None
    means the project's default model.
    ``enabled_languages``: language ids completion runs for; None (or ``"*"``) means every
    language the completion pipeline supports.
    ``context_lines``: lines kept on each side of the cursor before the prompt builder
    (which budgets tokens on its own) sees the document; None keeps the whole document.
    ``load_wait_ms``: how long a completion asked for while the model loads waits for it.
    ``translate_max_units``: the translate commands refuse a document that splits into
    more units than this, before any generation (0: no limit).
    ``index_workspace``: index the workspace's source files at start (definitions from files
    that are not open reach the prompt); ``max_indexed_files`` bounds that index.
    """

    # strict: no "3" for 3 or true for 1 (a float field still takes a whole number);
    # other tools' keys may share the section, so unknown keys are not ours to judge.
    model_config = ConfigDict(
        frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )

    backend: str | None = None
    enabled: bool = True
    max_tokens: Annotated[int, Field(ge=1, le=2048)] = 64
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    debounce_ms: Annotated[int, Field(ge=0, le=10_000)] = 75
    enabled_languages: tuple[str, ...] | None = None
    context_lines: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    load_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = 1500
    cache_size: Annotated[int, Field(ge=0, le=10_000)] = 64
    translate_max_units: Annotated[int, Field(ge=0, le=10_000_000)] = DEFAULT_MAX_UNITS
    index_workspace: bool = True
    candidates: Annotated[int, Field(ge=1, le=8)] = 3
    max_indexed_files: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: object) -> object:
        if value == "":
            return None
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a backend string such as native:MODEL_DIR")
        return value.strip() if isinstance(value, str) else value

    @field_validator("enabled_languages", mode="before")
    @classmethod
    def _languages(cls, value: object) -> object:
        if value is None or value == "*" or value == ["*"]:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError('must be a list of language ids such as ["python", "java"]')
        return tuple(v.strip().lower() for v in value)

    def language_enabled(self, language_id: str) -> bool:
        return self.enabled and (self.enabled_languages is None or language_id in self.enabled_languages)

    def to_client_json(self) -> dict[str, Any]:
        """The settings as the client spells them (for logs and ``codeglm/status``)."""
        return self.model_dump(mode="json", by_alias=True)


# Every spelling a client may use for a field (camelCase and snake_case) -> the camelCase one.
_CLIENT_KEY: dict[str, str] = {
    spelling: str(field.alias)
    for name, field in Settings.model_fields.items()
    for spelling in (name, str(field.alias))
}


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
            raise SettingsError(
                f"the {SECTION!r} settings must be a JSON object, got {type(section).__name__}"
            )
        return section
    return raw


def apply_settings(current: Settings, raw: object) -> Settings:
    """``current`` updated with the settings in ``raw``; unknown keys are ignored.

    Raises ``SettingsError`` listing every invalid setting; nothing is applied then.
    """
    section = settings_section(raw)
    if section is None:
        return current
    given = {_CLIENT_KEY[key]: value for key, value in section.items() if key in _CLIENT_KEY}
    if not given:
        return current
    try:
        return Settings.model_validate({**current.model_dump(by_alias=True), **given})
    except ValidationError as error:
        problems = [
            f"{SECTION}.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')} (got {e['input']!r})"
            for e in error.errors()
        ]
        raise SettingsError("invalid settings, keeping the previous ones: " + "; ".join(problems)) from None
