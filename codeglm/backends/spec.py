"""Backend strings: one string names a backend everywhere (CLI, servers, harness).

Grammar (OPTIONS is ``key=value`` pairs joined by ``&``, after the last ``?``)::

    native:PATH[?OPTIONS]            this project's engine over a model directory
    hf:PATH_OR_HUB_ID[?OPTIONS]      any transformers causal LM and its tokenizer
    openai:URL[#MODEL][?OPTIONS]     an OpenAI-compatible /v1/completions server

Examples: ``native:models/codegeex?dtype=int8``, ``hf:bigcode/tiny_starcoder_py``,
``openai:http://gpu-box:8000/v1#codegeex?timeout=30&retries=2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from codeglm.backends.base import BackendError

OptionValue = str | int | float | bool


class BackendSpecError(BackendError, ValueError):
    """A backend string or option that cannot be understood."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{value} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"{value} is negative")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


# kind -> option name -> (parser from text, what it means). Option values given as
# Python values (``load_backend(spec, dtype="int8")``) are checked by the same parsers.
OPTIONS: dict[str, dict[str, tuple[Callable[[str], OptionValue], str]]] = {
    "native": {
        "device": (str, "torch device, e.g. cpu or cuda:0 (default cpu)"),
        "dtype": (_one_of("fp32", "fp16", "bf16", "int8"), "weights: fp32, fp16, bf16 or int8 (default fp32)"),
        "max_batch_size": (_positive_int, "rows decoded together (default 8)"),
        "prefix_cache": (_non_negative_int, "prefix cache size in tokens, 0 disables it (default 8192)"),
        "draft": (_one_of("none", "int8"), "speculative decoding: int8 drafts tokens that the model checks, for "
                  "greedy one-sample requests; the model's own output, sooner (default none)"),
        "draft_tokens": (_positive_int, "tokens the draft proposes a step (default 5)"),
    },
    "hf": {
        "device": (str, "torch device, e.g. cpu or cuda:0 (default cpu)"),
        "dtype": (_one_of("auto", "fp32", "fp16", "bf16"), "weights: auto, fp32, fp16 or bf16 (default auto)"),
        "context": (_positive_int, "context length in tokens (default: from the model's config)"),
    },
    "openai": {
        "timeout": (_positive_float, "seconds to wait for the server per request (default 60)"),
        "retries": (_non_negative_int, "retries after a connection error, 429 or 5xx (default 3)"),
        "backoff": (_non_negative_float, "first retry delay in seconds, doubled each retry (default 0.5)"),
        "tokenizer": (str, "local tokenizer.json or directory for exact token counts"),
        "context": (_positive_int, "context length in tokens (default: the server's, else 2048)"),
        "api_key_env": (str, "environment variable holding the API key (default OPENAI_API_KEY)"),
        "fim": (_parse_bool, "fill-in-the-middle: true sends `suffix`, false never; by default only where the "
                "server is probed to take a FIM prompt laid out with the model's markers (llama-cpp-python)"),
    },
}
KINDS = tuple(OPTIONS)
EXAMPLES = "native:PATH, hf:PATH_OR_HUB_ID or openai:URL#MODEL"


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend string. ``model`` is set for ``openai`` only."""

    kind: str
    target: str
    model: str | None = None
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def with_options(self, **options: object) -> BackendSpec:
        """A copy with ``options`` (Python values; None means "not given") added over the string's."""
        merged = dict(self.options)
        for name, value in options.items():
            if value is not None:
                merged[name] = check_option(self.kind, name, value)
        return BackendSpec(self.kind, self.target, self.model, merged)

    def __str__(self) -> str:
        text = f"{self.kind}:{self.target}"
        if self.model is not None:
            text += f"#{self.model}"
        if self.options:
            text += "?" + "&".join(f"{k}={_render(v)}" for k, v in self.options.items())
        return text


def _render(value: OptionValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_option(kind: str, name: str, value: object) -> OptionValue:
    """``value`` (text or a Python value) checked and converted for option ``name`` of ``kind``."""
    known = OPTIONS[kind]
    if name not in known:
        raise BackendSpecError(
            f"unknown option {name!r} for a {kind} backend: known options are "
            + ", ".join(f"{n} ({about})" for n, (_, about) in known.items())
        )
    parse, about = known[name]
    text = _render(value) if isinstance(value, bool | int | float) else str(value)
    try:
        return parse(text)
    except ValueError as error:
        raise BackendSpecError(f"bad value for option {name!r} of a {kind} backend: {error}; expected {about}") from None


def _parse_options(kind: str, text: str) -> dict[str, OptionValue]:
    options: dict[str, OptionValue] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise BackendSpecError(f"bad option {pair!r}: write options as key=value joined by &")
        options[name] = check_option(kind, name, value)
    return options


def parse_backend_spec(spec: str) -> BackendSpec:
    """Parse a backend string; raises ``BackendSpecError`` naming what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise BackendSpecError(f"empty backend string: give one of {EXAMPLES}")
    text = spec.strip()
    kind, colon, rest = text.partition(":")
    if not colon or kind not in OPTIONS:
        hint = ""
        if kind.startswith("http") or text.startswith("/") or text.startswith("."):
            hint = f" (did you mean native:{text} or openai:{text}?)"
        raise BackendSpecError(
            f"backend string {spec!r} does not start with a known kind: write {EXAMPLES}{hint}"
        )
    body, question, option_text = rest.rpartition("?") if "?" in rest else (rest, "", "")
    options = _parse_options(kind, option_text) if question else {}
    model: str | None = None
    if kind == "openai":
        body, hash_mark, model_text = body.partition("#")
        model = model_text or None
        if not body.startswith(("http://", "https://")):
            raise BackendSpecError(
                f"openai backend {spec!r} needs an http:// or https:// URL, e.g. openai:http://127.0.0.1:8000/v1#MODEL"
            )
        if hash_mark and not model_text:
            raise BackendSpecError(f"openai backend {spec!r} has an empty model name after '#'")
    if not body:
        what = "a model directory" if kind == "native" else "a model directory or hub id"
        raise BackendSpecError(f"backend string {spec!r} names no model: write {kind}:PATH with {what}")
    return BackendSpec(kind=kind, target=body, model=model, options=options)


__all__ = ["KINDS", "OPTIONS", "BackendSpec", "BackendSpecError", "check_option", "parse_backend_spec"]
