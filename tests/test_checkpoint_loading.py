"""How a model directory's safetensors become the engine's tensors: read or mapped as
the tensor's use needs, half-precision loads of each family against transformers' own
class in the same dtype, checkpoints saved in bf16, sharded checkpoints, and int8 blocks
quantized as they load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _torch_fixtures import one_thread  # noqa: F401 (autouse)
from test_families import FAMILY_NAMES, MODEL_CLASSES, family_configs, save_family, tokenizer_with

from codeglm.inference.loading import load_model
from codeglm.inference.quantize import Int8Linear
from codeglm.model.checkpoint_files import CheckpointFiles, read_header


def prefill_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.prefill(ids, None).float()


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("qwen")
    return directory, save_family(directory, "qwen2 gqa tied")


def test_read_gives_the_mapped_tensors_values_in_memory_of_its_own(qwen_dir: tuple[Path, Any]) -> None:
    directory, _ = qwen_dir
    files = CheckpointFiles(directory)
    header = read_header(directory / "model.safetensors")
    assert set(header) == set(files.where)
    for key in files.where:
        mapped, read = files.get(key), files.read(key)
        assert read.dtype == mapped.dtype == files.dtype(key) and torch.equal(read, mapped)
        read.add_(1)  # its own memory: the file's tensor is untouched
        assert not torch.equal(read, files.get(key))


def test_a_cut_short_file_is_a_clear_error(tmp_path: Path, qwen_dir: tuple[Path, Any]) -> None:
    directory, _ = qwen_dir
    (tmp_path / "config.json").write_bytes((directory / "config.json").read_bytes())
    data = (directory / "model.safetensors").read_bytes()
    header = read_header(directory / "model.safetensors")
    last = max(header, key=lambda key: header[key].end)
    (tmp_path / "model.safetensors").write_bytes(data[: header[last].end - 10])
    with pytest.raises(ValueError, match="model.safetensors is not a whole safetensors file"):
        load_model(tmp_path)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_half_precision_loads_match_transformers_in_the_same_dtype(
    name: str, dtype: str, tmp_path: Path
) -> None:
    reference = save_family(tmp_path, name)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = load_model(tmp_path, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {torch_dtype}
    ids = torch.randint(0, 50000, (1, 24))
    got = prefill_logits(model, ids)[0]
    with torch.inference_mode():
        expected = reference.to(torch_dtype)(ids).logits[0, -1].float()
        exact = reference.float()(ids).logits[0, -1]
    # Both round differently in half precision: each must be as close to fp32 as the other, within 2x.
    ours, theirs = float((got - exact).abs().max()), float((expected - exact).abs().max())
    assert ours <= 2 * theirs + 1e-3 * float(exact.abs().max()), (ours, theirs)
    assert int(got.argmax()) == int(exact.argmax()) or theirs > 0


def test_a_checkpoint_saved_in_bf16_loads_in_fp32_and_bf16(tmp_path: Path) -> None:
    tokenizer = tokenizer_with()
    config = family_configs(len(tokenizer))["llama mha untied biases"]
    torch.manual_seed(1)
    reference = MODEL_CLASSES["llama"](config).to(torch.bfloat16).eval()
    reference.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert {entry.dtype for entry in read_header(tmp_path / "model.safetensors").values()} == {"BF16"}
    ids = torch.randint(0, 50000, (1, 16))
    with torch.inference_mode():
        exact = reference.float()(ids).logits[0, -1]
    as_fp32 = load_model(tmp_path, dtype="fp32")
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}
    assert torch.allclose(prefill_logits(as_fp32, ids)[0], exact, atol=1e-4 * float(exact.abs().max()))
    as_bf16 = load_model(tmp_path, dtype="bf16")
    assert {p.dtype for p in as_bf16.parameters()} == {torch.bfloat16}


def test_a_sharded_checkpoint_loads_like_one_file(tmp_path: Path, qwen_dir: tuple[Path, Any]) -> None:
    directory, reference = qwen_dir
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    (tmp_path / "tokenizer.json").write_bytes((directory / "tokenizer.json").read_bytes())
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, 50000, (1, 12))
    assert torch.equal(prefill_logits(load_model(tmp_path), ids), prefill_logits(load_model(directory), ids))


def test_int8_loads_quantize_every_block_and_keep_no_floating_linear(qwen_dir: tuple[Path, Any]) -> None:
    directory, _ = qwen_dir
    model = load_model(directory, dtype="int8")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == []  # the blocks' and the output projection's
    # Per block: q/k/v, the attention's output, the MLP's up (gate and up) and down; then the logits'.
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2 * 4 + 1
