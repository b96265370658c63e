"""Convert an original CodeGeeX checkpoint (``.pt``) into a model directory.

The original is ``torch.load(path)["module"]``: nested dicts
(``language_model -> embedding -> word_embeddings -> weight`` ...) or the same names
flattened with dots. We map it key by key onto ``CodeGeeXForCausalLM``'s names, check
every shape against the config inferred from the tensors, and stream the tensors into
safetensors shards of at most ``--max-shard-size`` so that peak memory stays near the
checkpoint's own size (the checkpoint is memory-mapped where its format allows).
The output appears at OUT_DIR only when complete: it is written to a sibling temporary
directory and renamed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from codeglm.model.config import CodeGeeXConfig
from codeglm.model.tokenizer import TokenizerFilesError, load_tokenizer

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_HEAD_SIZE = 128  # CodeGeeX-13B: 5120 / 40
DEFAULT_MAX_SHARD_BYTES = 2 * 1000**3
EOS_ID = 50256

# Names inside one block, original -> ours (identical but for the block's own prefix).
_BLOCK_PARAMS = (
    "input_layernorm.weight",
    "input_layernorm.bias",
    "attention.query.weight",
    "attention.query.bias",
    "attention.key.weight",
    "attention.key.bias",
    "attention.value.weight",
    "attention.value.bias",
    "attention.dense.weight",
    "attention.dense.bias",
    "post_attention_layernorm.weight",
    "post_attention_layernorm.bias",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight",
    "mlp.dense_4h_to_h.bias",
)
_EMBEDDINGS = {
    "embedding.word_embeddings.weight": "transformer.wte.weight",
    "embedding.position_embeddings.weight": "transformer.wpe.weight",
    "topQueryEmbedding.top_query_embeddings.weight": "transformer.top_query_embeddings.weight",
    "transformer.final_layernorm.weight": "transformer.final_layernorm.weight",
    "transformer.final_layernorm.bias": "transformer.final_layernorm.bias",
}
_LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")


class ConversionError(ValueError):
    """The input is not a CodeGeeX checkpoint we can convert; the message says why."""


@dataclass(frozen=True)
class InferredShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    max_position_embeddings: int


def flatten(tree: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested dicts -> dotted keys (the original format nests by module)."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        else:
            yield name, value


def original_state_dict(checkpoint: object) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, keyed relative to ``language_model``."""
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"expected a dict of tensors, found {type(checkpoint).__name__}")
    root = checkpoint.get("module", checkpoint)
    if not isinstance(root, Mapping):
        raise ConversionError("the checkpoint's 'module' entry is not a dict of tensors")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in flatten(root):
        for prefix in ("module.", "language_model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if not isinstance(value, torch.Tensor):
            continue  # training state (iteration counters, args) is not weights
        tensors[key] = value
    if not any(k.startswith(("embedding.", "transformer.")) for k in tensors):
        sample = ", ".join(sorted(tensors)[:5]) or "no tensors at all"
        raise ConversionError(f"this is not a CodeGeeX checkpoint (no language_model weights; found {sample})")
    return tensors


def map_key(original: str) -> str | None:
    """Our parameter name for an original one, or None if it has no place in the model."""
    if original in _EMBEDDINGS:
        return _EMBEDDINGS[original]
    match = _LAYER_KEY.match(original)
    if match and match.group(2) in _BLOCK_PARAMS:
        return f"transformer.layers.{match.group(1)}.{match.group(2)}"
    for param in _BLOCK_PARAMS:
        if original == f"transformer.topQueryLayer.{param}":
            return f"transformer.top_query_layer.{param}"
    return None


def original_name(ours: str) -> str:
    """The name a parameter of ours has in an original checkpoint (for error messages)."""
    inverse = {v: k for k, v in _EMBEDDINGS.items()}
    if ours in inverse:
        return "language_model." + inverse[ours]
    return "language_model." + ours.replace("transformer.top_query_layer.", "transformer.topQueryLayer.")


def infer_shape(tensors: Mapping[str, torch.Tensor]) -> InferredShape:
    for needed in ("embedding.word_embeddings.weight", "embedding.position_embeddings.weight"):
        if needed not in tensors:
            raise ConversionError(f"missing key language_model.{needed}")
    vocab, hidden = tensors["embedding.word_embeddings.weight"].shape
    max_pos = tensors["embedding.position_embeddings.weight"].shape[0]
    indices = {int(m.group(1)) for k in tensors if (m := _LAYER_KEY.match(k))}
    if not indices:
        raise ConversionError("the checkpoint has no transformer.layers.* weights")
    num_layers = max(indices) + 1
    absent = sorted(set(range(num_layers)) - indices)
    if absent:
        raise ConversionError(f"missing transformer layers {absent} (layers present up to {num_layers - 1})")
    return InferredShape(int(vocab), int(hidden), num_layers, int(max_pos))


def expected_shapes(shape: InferredShape) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model directory, with the shape it must have."""
    h, ff = shape.hidden_size, 4 * shape.hidden_size
    block = {
        "input_layernorm.weight": (h,),
        "input_layernorm.bias": (h,),
        "post_attention_layernorm.weight": (h,),
        "post_attention_layernorm.bias": (h,),
        "mlp.dense_h_to_4h.weight": (ff, h),
        "mlp.dense_h_to_4h.bias": (ff,),
        "mlp.dense_4h_to_h.weight": (h, ff),
        "mlp.dense_4h_to_h.bias": (h,),
    }
    for proj in ("query", "key", "value", "dense"):
        block[f"attention.{proj}.weight"] = (h, h)
        block[f"attention.{proj}.bias"] = (h,)
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (shape.vocab_size, h),
        "transformer.wpe.weight": (shape.max_position_embeddings, h),
        "transformer.top_query_embeddings.weight": (shape.max_position_embeddings, h),
        "transformer.final_layernorm.weight": (h,),
        "transformer.final_layernorm.bias": (h,),
    }
    prefixes = [f"transformer.layers.{i}." for i in range(shape.num_layers)] + ["transformer.top_query_layer."]
    for prefix in prefixes:
        for name, dims in block.items():
            shapes[prefix + name] = dims
    return shapes


def plan_mapping(tensors: Mapping[str, torch.Tensor]) -> tuple[InferredShape, dict[str, str]]:
    """Check keys and shapes; return the inferred shape and ours -> original names."""
    shape = infer_shape(tensors)
    expected = expected_shapes(shape)
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for original in tensors:
        ours = map_key(original)
        if ours is None or ours not in expected:
            unexpected.append(original)
        else:
            mapping[ours] = original
    missing = sorted(original_name(k) for k in set(expected) - set(mapping))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(sorted(unexpected)[:10])}" + (" ..." if len(unexpected) > 10 else "")
        )
    for ours, original in sorted(mapping.items()):
        got = tuple(tensors[original].shape)
        if got != expected[ours]:
            problems.append(f"shape of {original} is {list(got)}, expected {list(expected[ours])}")
    if problems:
        raise ConversionError("not a consistent CodeGeeX checkpoint: " + "; ".join(problems))
    return shape, mapping


def load_checkpoint(path: Path, allow_pickle: bool) -> object:
    if not path.is_file():
        raise ConversionError(f"{path} does not exist or is not a file")

    # mmap keeps the tensors on disk until each is read: memory stays near one copy.
    # Only the zip format (torch >= 1.6) can be mapped; a legacy file is read whole.
    mmap = zipfile.is_zipfile(path)
    with path.open("rb") as f:
        legacy_pickle = f.read(1) == b"\x80"
    if not mmap and not legacy_pickle:
        raise ConversionError(f"cannot read {path}: it is not a torch checkpoint (neither zip nor pickle data)")
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=not allow_pickle)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for foreign files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            " (if you trust this file, --allow-pickle lets it hold non-tensor objects)"
            if not allow_pickle and "Weights only" in str(err)
            else ""
        )
        raise ConversionError(f"cannot read {path} as a torch checkpoint: {first_line}{hint}") from err


def write_shards(
    tensors: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str],
    out: Path,
    dtype: torch.dtype,
    max_shard_bytes: int,
    progress: bool,
) -> None:
    """Stream tensors into safetensors shards (transformers' naming and index file)."""

    names = list(mapping)  # model order: embeddings, blocks, top layer
    itemsize = torch.empty((), dtype=dtype).element_size()
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = tensors[mapping[name]].numel() * itemsize
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    total = len(groups)
    weight_map: dict[str, str] = {}
    total_size = 0
    bar = tqdm(total=len(names), desc="converting", unit="tensor", disable=not progress, file=sys.stderr)
    for index, group in enumerate(groups, start=1):
        filename = "model.safetensors" if total == 1 else f"model-{index:05d}-of-{total:05d}.safetensors"
        shard = {}
        for name in group:
            shard[name] = tensors[mapping[name]].to(dtype).contiguous()
            total_size += shard[name].numel() * itemsize
            weight_map[name] = filename
            bar.update(1)
        save_file(shard, str(out / filename), metadata={"format": "pt"})
        del shard
    bar.close()
    if total > 1:
        index_doc = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2) + "\n")


def convert(
    src: Path,
    out_dir: Path,
    *,
    dtype: str = "fp16",
    tokenizer: Path | None = None,
    num_attention_heads: int | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
) -> Path:
    """Convert ``src`` into a model directory at ``out_dir``; return ``out_dir``."""

    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ConversionError(f"{out_dir} exists and is not empty; pass --force to replace it")
    try:
        tok = load_tokenizer(tokenizer)
    except (TokenizerFilesError, FileNotFoundError) as err:
        raise ConversionError(f"no tokenizer to save with the model: {err}; pass --tokenizer DIR") from err

    tensors = original_state_dict(load_checkpoint(src, allow_pickle))
    shape, mapping = plan_mapping(tensors)
    heads = num_attention_heads or max(1, shape.hidden_size // DEFAULT_HEAD_SIZE)
    if shape.hidden_size % heads != 0:
        raise ConversionError(
            f"hidden size {shape.hidden_size} is not divisible by {heads} attention heads; "
            "give the right count with --num-attention-heads N (no tensor shape shows it)"
        )
    config = CodeGeeXConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=heads,
        max_position_embeddings=shape.max_position_embeddings,
        dtype=dtype_name(DTYPES[dtype]),
        # CodeGeeX's <|endoftext|>; a toy vocabulary without it has no such token.
        **({} if shape.vocab_size > EOS_ID else {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}),
    )
    config.architectures = ["CodeGeeXForCausalLM"]

    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.converting-", dir=out_dir.parent))
    try:
        write_shards(tensors, mapping, staging, DTYPES[dtype], max_shard_bytes, progress)
        config.save_pretrained(str(staging))
        tok.save(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


