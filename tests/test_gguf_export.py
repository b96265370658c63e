"""``codeglm.model.gguf_export``: what it refuses, with a message naming why. (What it
writes is proven by llama.cpp running it: tests/test_backends_llamacpp.py compares
llama.cpp's greedy text on the file with the engine's on the directory.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _llamacpp_fixtures import llamacpp_missing

from codeglm.model.gguf_export import GGUFExportError, write_gguf
from codeglm.model.tokenizer import load_tokenizer

pytestmark = pytest.mark.skipif(llamacpp_missing() is not None, reason=str(llamacpp_missing()))


def test_a_model_type_other_than_llama_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(GGUFExportError, match="holds a 'qwen2' model: only 'llama'"):
        write_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_a_directory_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GGUFExportError, match="has no config.json"):
        write_gguf(tmp_path, tmp_path / "out.gguf")


def test_the_codegeex_tokenizer_is_refused_because_llama_cpp_would_split_differently(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    load_tokenizer().save(tmp_path)  # its whitespace-run normalizer has no llama.cpp equivalent
    with pytest.raises(GGUFExportError, match="not a plain byte-level BPE tokenizer"):
        write_gguf(tmp_path, tmp_path / "out.gguf")


def test_unsupported_llama_options_are_named(tmp_path: Path) -> None:
    config = {"model_type": "llama", "attention_bias": True, "rope_scaling": {"type": "linear", "factor": 2.0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GGUFExportError, match="attention_bias, rope_scaling not supported"):
        write_gguf(tmp_path, tmp_path / "out.gguf")
