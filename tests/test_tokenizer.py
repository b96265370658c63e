"""The CodeGeeX tokenizer: identical ids to the reference tokenizer built from the same
files, lossless round trips, and the same behaviour after saving next to a model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codeglm.model.tokenizer import TokenizerFilesError, load_tokenizer, space_run_token
from codeglm.paths import humaneval_dir, tokenizer_dir

LANGUAGES = ("python", "cpp", "java", "js", "go", "rust")

EDGE_CASES = (
    ["", " ", "\t", "\t\tx = 1", "a\r\nb\r\n", "\r\n  \r\n", "héllo wörld", "数字 = 42  # 注释", "emoji 🙂  ok"]
    + [" " * n for n in range(1, 41)]
    + ["x" + " " * n + "y" for n in range(1, 41)]
    + ["\n" + " " * n + "return x" for n in range(1, 41)]
    + ["<|endoftext|>def f():", "tab\t \t  mix", "trailing   "]
)


@pytest.fixture(scope="module")
def ours():
    return load_tokenizer(tokenizer_dir())


@pytest.fixture(scope="module")
def reference():
    ref = pytest.importorskip("codegeex.tokenizer", reason="pip install --no-deps codegeex==1.0")
    from transformers import AutoTokenizer

    return ref.CodeGeeXTokenizer(tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir())))


def humaneval_texts(language: str) -> list[str]:
    texts = []
    with gzip.open(humaneval_dir() / f"humaneval_{language}.jsonl.gz", "rt") as f:
        for line in f:
            record = json.loads(line)
            texts += [record["prompt"], record["canonical_solution"]]
    return texts


@pytest.mark.parametrize("language", LANGUAGES)
def test_humaneval_ids_match_reference(ours, reference, language: str) -> None:
    texts = humaneval_texts(language)
    assert len(texts) == 2 * 164
    mismatched = [t[:60] for t in texts if ours.encode(t) != reference.encode_code(t)]
    assert mismatched == []


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_case_ids_match_reference_and_round_trip(ours, reference, text: str) -> None:
    ids = ours.encode(text)
    assert ids == reference.encode_code(text)
    assert ours.decode(ids) == text
    assert reference.decode_code(ids) == text


def test_space_runs_use_extra_tokens(ours) -> None:
    assert space_run_token(2) == "<|extratoken_10|>"
    assert space_run_token(10) == "<|extratoken_18|>"
    assert ours.encode("  ") == [ours.backend.token_to_id("<|extratoken_10|>")]
    # 13 spaces: the longest run first (10), then 3.
    assert ours.encode(" " * 13) == [
        ours.backend.token_to_id("<|extratoken_18|>"),
        ours.backend.token_to_id("<|extratoken_11|>"),
    ]
    assert ours.eos_token_id == 50256
    assert ours.vocab_size == 50400


def test_saved_tokenizer_loads_with_autotokenizer_and_own_loader(ours, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    ours.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    for text in EDGE_CASES + humaneval_texts("java")[:40]:
        ids = ours.encode(text)
        assert auto.encode(text, add_special_tokens=False) == ids
        assert again.encode(text) == ids
        assert auto.decode(ids) == ours.decode(ids)
    assert auto.eos_token_id == ours.eos_token_id


def test_loading_from_a_tokenizer_json_file(ours, tmp_path: Path) -> None:
    ours.save(tmp_path)
    assert load_tokenizer(tmp_path / "tokenizer.json").encode("def  f():") == ours.encode("def  f():")


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFilesError, match="vocab.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerFilesError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
