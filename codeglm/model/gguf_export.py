"""Write a Llama model directory as an f32 GGUF file, so llama.cpp runs the same weights.

Why here and not llama.cpp's own converter: that script refuses byte-level BPE
tokenizers whose pre-tokenizer it has no hash for (it checks a fixed list), and it
needs its sources beside it. This writer takes the one layout the project makes and
checks (a transformers ``llama`` directory with safetensors weights and a byte-level
BPE ``tokenizer.json``, GPT-2 style) and writes exactly what llama.cpp's ``llama``
architecture reads, in f32 so that llama.cpp and this project's engine can be compared
token for token (a quantized file would not agree, and q8_0 crashed on this machine's
CPU, see docs/backends.md).

Layout facts mirrored from llama.cpp's converter: tensor names ``token_embd``,
``blk.N.attn_q`` ...; the query and key projections are permuted from transformers'
half-split rotary layout to llama.cpp's interleaved one; the tokenizer is
``tokenizer.ggml.model = gpt2`` with the ``gpt-2`` pre-tokenizer, tokens in their
byte-level spelling, merges as ``"a b"``; added special tokens are control tokens
(parsed in prompts, as the FIM markers must be). No BOS is added, as transformers'
GPT-2 tokenizer adds none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class GGUFExportError(ValueError):
    """The directory cannot be written as GGUF by this writer; the message says why."""


@dataclass(frozen=True)
class GGUFExport:
    """What was written: the file, its tensor count and its vocabulary size."""

    path: Path
    tensors: int
    vocab_size: int


def _permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' rotary halves -> llama.cpp's interleaved pairs (its converter's ``permute``)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise GGUFExportError(f"{directory} has no config.json: give a transformers model directory")
    config = json.loads(path.read_text())
    if config.get("model_type") != "llama":
        raise GGUFExportError(
            f"{directory} holds a {config.get('model_type')!r} model: only 'llama' directories are written as GGUF here"
        )
    unsupported = [k for k in ("attention_bias", "mlp_bias") if config.get(k)]
    if config.get("rope_scaling"):
        unsupported.append("rope_scaling")
    if unsupported:
        raise GGUFExportError(f"{directory}: {', '.join(unsupported)} not supported by this GGUF writer")
    return config


def _read_tokenizer(directory: Path) -> tuple[list[str], list[int], list[str], int | None]:
    """Tokens (by id), their GGUF types, merges and the EOS id of a byte-level BPE tokenizer.json."""
    from gguf import TokenType  # deferred: gguf is the llamacpp extra

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(f"{directory} has no tokenizer.json")
    data = json.loads(path.read_text())
    model = data.get("model", {})
    pre = json.dumps(data.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre or data.get("normalizer") is not None:
        raise GGUFExportError(
            f"{path} is not a plain byte-level BPE tokenizer (GPT-2 style, no normalizer): llama.cpp's "
            "gpt2 tokenizer would not split text the same way"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    types = {i: TokenType.NORMAL for i in vocab.values()}
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        types[added["id"]] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    size = max(vocab.values()) + 1
    if len(set(vocab.values())) != size:
        raise GGUFExportError(f"{path}: token ids are not 0..{size - 1} without gaps")
    tokens = [""] * size
    for text, token_id in vocab.items():
        tokens[token_id] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    config_path = directory / "tokenizer_config.json"
    eos_text = json.loads(config_path.read_text()).get("eos_token") if config_path.is_file() else None
    if isinstance(eos_text, dict):
        eos_text = eos_text.get("content")
    eos = vocab.get(eos_text) if isinstance(eos_text, str) else None
    return tokens, [int(types[i]) for i in range(size)], merges, eos


def write_gguf(directory: str | Path, out: str | Path) -> GGUFExport:
    """Write the ``llama`` model in ``directory`` (weights and tokenizer) to ``out`` as f32 GGUF."""
    import gguf  # deferred: the llamacpp extra
    from safetensors.numpy import load_file

    directory, out = Path(directory), Path(out)
    config = _read_config(directory)
    tokens, token_types, merges, eos = _read_tokenizer(directory)
    weights: dict[str, np.ndarray] = {}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"{directory} has no .safetensors weights")
    for file in files:
        weights.update(load_file(str(file)))

    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    vocab_size = int(config["vocab_size"])
    if len(tokens) > vocab_size:
        raise GGUFExportError(f"the tokenizer has {len(tokens)} tokens but the model's vocabulary is {vocab_size}")
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    token_types += [int(gguf.TokenType.UNUSED)] * (vocab_size - len(token_types))

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(directory.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    rope_theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    if eos is not None:
        writer.add_eos_token_id(eos)
        writer.add_bos_token_id(eos)  # never added (add_bos_token is false); llama.cpp wants one named
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)

    def tensor(name: str) -> np.ndarray:
        if name not in weights:
            raise GGUFExportError(f"{directory}: the weights lack {name}")
        return np.ascontiguousarray(weights[name], dtype=np.float32)

    out_tensors = {
        "token_embd.weight": tensor("model.embed_tokens.weight"),
        "output_norm.weight": tensor("model.norm.weight"),
        "output.weight": tensor("lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        out_tensors |= {
            f"blk.{i}.attn_norm.weight": tensor(p + "input_layernorm.weight"),
            f"blk.{i}.attn_q.weight": _permute_rotary(tensor(p + "self_attn.q_proj.weight"), heads),
            f"blk.{i}.attn_k.weight": _permute_rotary(tensor(p + "self_attn.k_proj.weight"), kv_heads),
            f"blk.{i}.attn_v.weight": tensor(p + "self_attn.v_proj.weight"),
            f"blk.{i}.attn_output.weight": tensor(p + "self_attn.o_proj.weight"),
            f"blk.{i}.ffn_norm.weight": tensor(p + "post_attention_layernorm.weight"),
            f"blk.{i}.ffn_gate.weight": tensor(p + "mlp.gate_proj.weight"),
            f"blk.{i}.ffn_up.weight": tensor(p + "mlp.up_proj.weight"),
            f"blk.{i}.ffn_down.weight": tensor(p + "mlp.down_proj.weight"),
        }
    for name, array in out_tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFExport(path=out, tensors=len(out_tensors), vocab_size=vocab_size)


__all__ = ["GGUFExport", "GGUFExportError", "write_gguf"]
