"""Backend strings: parsing, options, bad strings, and what load_backend does without one."""

from __future__ import annotations

import sys

import pytest

from codeglm.backends import BackendError, load_backend, parse_backend_spec
from codeglm.backends.spec import BackendSpec, BackendSpecError


def test_native_with_options() -> None:
    spec = parse_backend_spec("native:/models/codegeex?dtype=int8&device=cpu&max_batch_size=4")
    assert spec == BackendSpec("native", "/models/codegeex", None, {"dtype": "int8", "device": "cpu", "max_batch_size": 4})
    assert str(spec) == "native:/models/codegeex?dtype=int8&device=cpu&max_batch_size=4"


def test_hf_hub_id_and_relative_path() -> None:
    assert parse_backend_spec("hf:bigcode/tiny_starcoder_py") == BackendSpec("hf", "bigcode/tiny_starcoder_py")
    assert parse_backend_spec(" hf:./models/gpt2 ").target == "./models/gpt2"


def test_openai_url_model_and_options() -> None:
    spec = parse_backend_spec("openai:http://gpu-box:8000/v1#codegeex-13b?timeout=2.5&retries=0&fim=true")
    assert (spec.kind, spec.target, spec.model) == ("openai", "http://gpu-box:8000/v1", "codegeex-13b")
    assert spec.options == {"timeout": 2.5, "retries": 0, "fim": True}
    assert parse_backend_spec("openai:https://h/v1").model is None


def test_keyword_options_override_the_string() -> None:
    spec = parse_backend_spec("native:/m?dtype=fp16").with_options(dtype="int8", device=None)
    assert spec.options == {"dtype": "int8"}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty backend string"),
        ("   ", "empty backend string"),
        ("/models/codegeex", "did you mean native:/models/codegeex"),
        ("gguf:/models/x", "does not start with a known kind"),
        ("native:", "names no model"),
        ("native:/m?dtype=fp64", "bad value for option 'dtype'"),
        ("native:/m?colour=red", "unknown option 'colour'"),
        ("native:/m?dtype", "key=value"),
        ("native:/m?max_batch_size=0", "not a positive integer"),
        ("openai:gpu-box:8000#m", "needs an http:// or https:// URL"),
        ("openai:http://h:1/v1#", "empty model name"),
        ("openai:http://h:1/v1#m?retries=-1", "negative"),
        ("openai:http://h:1/v1#m?fim=maybe", "not a boolean"),
    ],
)
def test_bad_strings_are_rejected_with_a_clear_message(text: str, complaint: str) -> None:
    with pytest.raises(BackendSpecError, match=complaint.replace("?", r"\?")) as caught:
        parse_backend_spec(text)
    # Both kinds of caller can catch it: as a backend failure or as a bad value.
    assert isinstance(caught.value, BackendError) and isinstance(caught.value, ValueError)


def test_bad_keyword_option_is_rejected() -> None:
    with pytest.raises(BackendSpecError, match="unknown option 'dtype' for a openai backend"):
        load_backend("openai:http://127.0.0.1:9/v1#m", dtype="int8")


def test_no_backend_and_no_default_model_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEGLM_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "codeglm.defaults", None)  # as if the default model were not installed
    with pytest.raises(BackendError, match="--backend native:PATH"):
        load_backend(None)


def test_the_environment_names_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEGLM_BACKEND", "native:/nowhere/at/all")
    with pytest.raises(BackendError, match="model directory /nowhere/at/all does not exist"):
        load_backend(None)


def test_openai_backend_is_made_without_touching_the_network() -> None:
    backend = load_backend("openai:http://127.0.0.1:9#m?retries=0")
    try:
        assert backend.name == "openai:http://127.0.0.1:9#m"
        assert backend.root == "http://127.0.0.1:9/v1"  # port 9 (discard) is closed: nothing was asked yet
    finally:
        backend.close()
