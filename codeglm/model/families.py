"""Open model families in this project's ``Decoder``: a transformers model directory
(config.json, safetensors weights) read into it, tensor by tensor with shape checks.

``decoder_spec`` turns a config into a ``DecoderSpec`` (an unsupported ``model_type``
or setting is an ``UnsupportedModelError`` naming it); ``checkpoint_sources`` says which
checkpoint tensors make each of the decoder's (stacked where the decoder fuses layers);
``load_decoder`` does both from a directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codeglm.model.checkpoint_files import CheckpointFiles
from codeglm.model.decoder import Decoder, DecoderSpec

LLAMA_FAMILY = ("llama", "qwen2", "mistral")
FAMILIES = (*LLAMA_FAMILY, "gpt_bigcode")
# Checkpoint tensors that hold no weights (buffers older releases saved): skipped.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


class UnsupportedModelError(ValueError):
    """A model directory this project's engine cannot run (transformers' may: ``hf:``)."""


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a model directory (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return config


def unsupported(model_type: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"model_type {model_type!r}: {what} is not supported by the native engine; run it with transformers "
        "through the hf: backend (--backend hf:DIR)"
    )


def rope_settings(config: dict[str, Any], model_type: str) -> float:
    """The rotary base; only plain rotary positions (no scaling) are supported."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise unsupported(model_type, f"rotary scaling {kind!r}")
    return float(parameters.get("rope_theta") or config.get("rope_theta") or 10000.0)


def llama_spec(config: dict[str, Any]) -> DecoderSpec:
    model_type = config["model_type"]
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise unsupported(model_type, f"hidden_act {act!r}")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    context = int(config.get("max_position_embeddings", 2048))
    window = config.get("sliding_window")
    uses_window = model_type == "mistral" or config.get("use_sliding_window", False)
    if uses_window and isinstance(window, int) and 0 < window < context:
        context = window  # beyond the window transformers masks older keys; within it attention is exact
    attention_bias = bool(config.get("attention_bias", False))
    return DecoderSpec(
        model_type=model_type,
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        num_layers=int(config["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=int(config["intermediate_size"]),
        context_length=context,
        norm="rms",
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        positions="rotary",
        mlp="swiglu",
        qkv_bias=True if model_type == "qwen2" else attention_bias,  # Qwen2 always has q/k/v biases
        attention_output_bias=attention_bias and model_type != "qwen2",
        mlp_bias=bool(config.get("mlp_bias", False)),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_theta=rope_settings(config, model_type),
    )


def gpt_bigcode_spec(config: dict[str, Any]) -> DecoderSpec:
    act = config.get("activation_function", "gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):  # the tanh approximation, by three names
        raise unsupported("gpt_bigcode", f"activation_function {act!r}")
    if not config.get("scale_attn_weights", True):
        raise unsupported("gpt_bigcode", "scale_attn_weights=false")
    hidden, heads = int(config["n_embd"]), int(config["n_head"])
    return DecoderSpec(
        model_type="gpt_bigcode",
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        num_layers=int(config["n_layer"]),
        num_heads=heads,
        num_kv_heads=1 if config.get("multi_query", True) else heads,
        head_dim=hidden // heads,
        intermediate_size=int(config.get("n_inner") or 4 * hidden),
        context_length=int(config.get("n_positions", 2048)),
        norm="layer",
        norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
        positions="learned",
        mlp="gelu_tanh",
        qkv_bias=True,
        attention_output_bias=True,
        mlp_bias=True,
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
    )


def decoder_spec(config: dict[str, Any]) -> DecoderSpec:
    model_type = config.get("model_type")
    if model_type in LLAMA_FAMILY:
        return llama_spec(config)
    if model_type == "gpt_bigcode":
        return gpt_bigcode_spec(config)
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported by the native engine (it runs codegeex, {', '.join(FAMILIES)}); "
        "run it with transformers through the hf: backend (--backend hf:DIR)"
    )


# A decoder tensor's checkpoint sources and how they combine into it.
Source = tuple[tuple[str, ...], Callable[[list[torch.Tensor]], torch.Tensor]]


def single(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors)


def heads_grouped(spec: DecoderSpec) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """GPTBigCode's multi-head ``c_attn`` rows are per head [q, k, v]; the decoder's
    are [all q; all k; all v]."""

    def regroup(tensors: list[torch.Tensor]) -> torch.Tensor:
        t = tensors[0]
        per_head = t.reshape(spec.num_heads, 3, spec.head_dim, *t.shape[1:])
        return per_head.transpose(0, 1).reshape(t.shape)

    return regroup


def checkpoint_sources(spec: DecoderSpec) -> dict[str, Source]:
    """For each of the decoder's tensors, the checkpoint tensors that make it."""
    sources: dict[str, Source] = {}
    if spec.model_type == "gpt_bigcode":
        sources["embed.weight"] = (("transformer.wte.weight",), single)
        sources["position_embed.weight"] = (("transformer.wpe.weight",), single)
        qkv = single if spec.num_kv_heads == 1 else heads_grouped(spec)
        for i in range(spec.num_layers):
            src, dst = f"transformer.h.{i}.", f"blocks.{i}."
            for kind in ("weight", "bias"):
                sources[f"{dst}attention_norm.{kind}"] = ((f"{src}ln_1.{kind}",), single)
                sources[f"{dst}attention.qkv.{kind}"] = ((f"{src}attn.c_attn.{kind}",), qkv)
                sources[f"{dst}attention.output.{kind}"] = ((f"{src}attn.c_proj.{kind}",), single)
                sources[f"{dst}mlp_norm.{kind}"] = ((f"{src}ln_2.{kind}",), single)
                sources[f"{dst}mlp.up.{kind}"] = ((f"{src}mlp.c_fc.{kind}",), single)
                sources[f"{dst}mlp.down.{kind}"] = ((f"{src}mlp.c_proj.{kind}",), single)
        sources["norm.weight"] = (("transformer.ln_f.weight",), single)
        sources["norm.bias"] = (("transformer.ln_f.bias",), single)
    else:
        sources["embed.weight"] = (("model.embed_tokens.weight",), single)
        for i in range(spec.num_layers):
            src, dst = f"model.layers.{i}.", f"blocks.{i}."
            sources[f"{dst}attention_norm.weight"] = ((f"{src}input_layernorm.weight",), single)
            sources[f"{dst}mlp_norm.weight"] = ((f"{src}post_attention_layernorm.weight",), single)
            kinds = ("weight", "bias") if spec.qkv_bias else ("weight",)
            for kind in kinds:
                names = tuple(f"{src}self_attn.{p}_proj.{kind}" for p in ("q", "k", "v"))
                sources[f"{dst}attention.qkv.{kind}"] = (names, stacked)
            for kind in ("weight", "bias") if spec.attention_output_bias else ("weight",):
                sources[f"{dst}attention.output.{kind}"] = ((f"{src}self_attn.o_proj.{kind}",), single)
            for kind in ("weight", "bias") if spec.mlp_bias else ("weight",):
                sources[f"{dst}mlp.up.{kind}"] = ((f"{src}mlp.gate_proj.{kind}", f"{src}mlp.up_proj.{kind}"), stacked)
                sources[f"{dst}mlp.down.{kind}"] = ((f"{src}mlp.down_proj.{kind}",), single)
        sources["norm.weight"] = (("model.norm.weight",), single)
    if not spec.tied_embeddings:
        sources["lm_head.weight"] = (("lm_head.weight",), single)
    return sources


def load_decoder(
    directory: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    prepare_block: Callable[[nn.Module], object] | None = None,
    replaces_blocks: bool = False,
) -> Decoder:
    """The decoder of a transformers model directory, in ``dtype`` on ``device``: see
    ``decoder_from_tensors``, here over the directory's safetensors files. Tensors used
    as stored stay memory-mapped; the rest are read (see ``CheckpointFiles``)."""
    directory = Path(directory)
    spec = decoder_spec(read_config(directory))
    files = CheckpointFiles(directory)
    return decoder_from_tensors(spec, files.get, set(files.where), dtype, device, where=str(directory),
                                read=files.read, stored_dtype=files.dtype, prepare_block=prepare_block,
                                replaces_blocks=replaces_blocks)


def decoder_from_tensors(
    spec: DecoderSpec,
    get: Callable[[str], torch.Tensor],
    keys: set[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    where: str = "the checkpoint",
    read: Callable[[str], torch.Tensor] | None = None,
    stored_dtype: Callable[[str], torch.dtype] | None = None,
    prepare_block: Callable[[nn.Module], object] | None = None,
    replaces_blocks: bool = False,
) -> Decoder:
    """A decoder of ``spec`` from checkpoint tensors (``get(key)`` for each of ``keys``, in
    the family's names; a transformers model's ``state_dict`` works too).

    Built without memory of its own (the meta device), then filled block by block, each
    tensor read, combined, converted and put in place one at a time. ``get`` serves the
    tensors kept as stored (same dtype, on the CPU, not combined, and not in a block when
    ``replaces_blocks``); ``read`` (default ``get``) the others, which are transformed
    and dropped. ``prepare_block(block)`` runs on each block once it is filled
    (``quantize_int8``, say, with ``replaces_blocks``: it replaces the block's tensors),
    so peak memory is what the prepared blocks hold plus one block as stored. A
    tensor missing, of the wrong shape, or left over in the checkpoint is an error naming it.
    """
    with torch.device("meta"):
        model = Decoder(spec)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    if spec.tied_embeddings:
        expected.pop("lm_head.weight")
    sources = checkpoint_sources(spec)
    if set(sources) != set(expected):
        raise AssertionError(f"checkpoint map and decoder disagree: {sorted(set(sources) ^ set(expected))}")
    read = read or get
    on_cpu = torch.device(device).type == "cpu"

    def take(key: str, combined: bool, in_block: bool) -> torch.Tensor:
        as_stored = (
            not combined and on_cpu and not (in_block and replaces_blocks)
            and (stored_dtype is None or stored_dtype(key) == dtype)
        )
        return get(key) if as_stored else read(key)

    used: set[str] = set()

    def tensors_of(names_to_load: list[str]) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name in names_to_load:
            names, combine = sources[name]
            missing = [key for key in names if key not in keys]
            if missing:
                raise ValueError(f"{where}: the weights have no tensor {missing[0]} (needed for {spec.model_type})")
            in_block = name.startswith("blocks.")
            tensor = combine([take(key, combine is not single, in_block) for key in names])
            if tensor.shape != expected[name]:
                raise ValueError(
                    f"{where}: {', '.join(names)} make a tensor of shape {tuple(tensor.shape)} where the config "
                    f"says {tuple(expected[name])}"
                )
            state[name] = tensor.to(device=device, dtype=dtype)
            used.update(names)
        return state

    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}."
        state = tensors_of([name for name in sources if name.startswith(prefix)])
        block.load_state_dict({name.removeprefix(prefix): t for name, t in state.items()}, strict=False, assign=True)
        del state
        if prepare_block is not None:
            prepare_block(block)
    rest = tensors_of([name for name in sources if not name.startswith("blocks.")])
    left = sorted(key for key in keys if key not in used and not key.endswith(IGNORED_SUFFIXES))
    if spec.tied_embeddings and "lm_head.weight" in left:
        left.remove("lm_head.weight")  # a saved copy of the tied embedding
    if left:
        raise ValueError(f"{where}: the weights hold tensors a {spec.model_type} model has no place for: {', '.join(left[:5])}")
    model.load_state_dict(rest, strict=False, assign=True)
    if spec.tied_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


__all__ = [
    "FAMILIES",
    "UnsupportedModelError",
    "checkpoint_sources",
    "decoder_from_tensors",
    "decoder_spec",
    "load_decoder",
    "read_config",
]
