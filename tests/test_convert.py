"""`codeglm convert`: the output directory, sharding, and every bad-input error
(exit status 2, a message naming the problem, nothing left at OUT_DIR)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _reference import SHAPES, reference_model, save_original

from codeglm.cli import main
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.convert import ConversionError, convert

SHAPE = SHAPES[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_original(reference_model(SHAPE), tmp_path_factory.mktemp("ck") / "codegeex.pt")


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess: exit status and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "codeglm.cli", "convert", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def run_main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """The same entry point in-process (fast): exit status and stderr."""
    status = main(["convert", *map(str, args)])
    return status, capsys.readouterr().err


def nested_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)


def test_cli_writes_a_complete_model_directory(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = run_cli(checkpoint, out, "--dtype", "bf16", "--num-attention-heads", str(SHAPE.heads))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "codegeex" and config["num_attention_heads"] == SHAPE.heads
    model = CodeGeeXForCausalLM.from_pretrained(out)
    assert model.transformer.wte.weight.dtype == torch.bfloat16


def test_default_head_count_is_hidden_over_128(tmp_path: Path) -> None:
    ref = reference_model(SHAPES[1].__class__(hidden=256, layers=1, heads=2))
    out = convert(save_original(ref, tmp_path / "c.pt"), tmp_path / "m", progress=False)
    assert json.loads((out / "config.json").read_text())["num_attention_heads"] == 2


def test_small_shards_with_an_index(checkpoint: Path, tmp_path: Path) -> None:
    out = convert(checkpoint, tmp_path / "m", num_attention_heads=SHAPE.heads, max_shard_bytes=200_000,
                  dtype="fp32", progress=False)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 3 and shards[0].startswith("model-00001-of-")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    whole = convert(checkpoint, tmp_path / "whole", num_attention_heads=SHAPE.heads, dtype="fp32", progress=False)
    a = CodeGeeXForCausalLM.from_pretrained(out).state_dict()
    b = CodeGeeXForCausalLM.from_pretrained(whole).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def assert_fails_cleanly(src: Path, tmp_path: Path, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status, stderr = run_main(capsys, src, out, "--num-attention-heads", str(SHAPE.heads))
    assert status == 2, stderr
    assert message in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_not_a_checkpoint_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file\n" * 10)
    assert_fails_cleanly(junk, tmp_path, "not a torch checkpoint", capsys)
    # As a user runs it: exit status 2 and one clear line, no traceback.
    result = run_cli(junk, tmp_path / "out")
    assert result.returncode == 2 and "not a torch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_torch_file_that_is_not_codegeex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, other)
    assert_fails_cleanly(other, tmp_path, "not a CodeGeeX checkpoint", capsys)


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_fails_cleanly(tmp_path / "absent.pt", tmp_path, "does not exist", capsys)


def test_shape_that_disagrees(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = nested_state(checkpoint)
    layer = state["module"]["language_model"]["transformer"]
    layer["layers.1.attention.key.weight"] = torch.zeros(SHAPE.hidden, SHAPE.hidden + 1, dtype=torch.float16)
    torch.save(state, tmp_path / "bad.pt")
    assert_fails_cleanly(tmp_path / "bad.pt", tmp_path, "shape of transformer.layers.1.attention.key.weight", capsys)


def test_missing_keys(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = nested_state(checkpoint)
    del state["module"]["language_model"]["transformer"]["topQueryLayer.mlp.dense_4h_to_h.bias"]
    del state["module"]["language_model"]["topQueryEmbedding"]
    torch.save(state, tmp_path / "bad.pt")
    assert_fails_cleanly(tmp_path / "bad.pt", tmp_path, "missing keys: language_model.topQueryEmbedding.top_query_embeddings.weight, language_model.transformer.topQueryLayer.mlp.dense_4h_to_h.bias", capsys)


def test_unexpected_keys(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = nested_state(checkpoint)
    state["module"]["language_model"]["transformer"]["layers.0.attention.rotary.inv_freq"] = torch.zeros(4)
    torch.save(state, tmp_path / "bad.pt")
    assert_fails_cleanly(tmp_path / "bad.pt", tmp_path, "unexpected keys: transformer.layers.0.attention.rotary", capsys)


def test_heads_that_do_not_divide_the_hidden_size(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status, stderr = run_main(capsys, checkpoint, out, "--num-attention-heads", "7")
    assert status == 2 and "--num-attention-heads" in stderr
    assert not out.exists()


def test_existing_output_is_not_replaced_without_force(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli(checkpoint, out, "--num-attention-heads", str(SHAPE.heads))
    assert result.returncode == 2 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ConversionError):
        convert(checkpoint, out, num_attention_heads=SHAPE.heads, progress=False)
    convert(checkpoint, out, num_attention_heads=SHAPE.heads, progress=False, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
