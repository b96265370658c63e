"""Loading a model directory for inference: the weights in the asked dtype (int8 quantized
here), laid out for decode steps, and with its tokenizer as an ``Engine``.

The directory's ``model_type`` chooses the model: ``codegeex`` loads this project's
transformers class; ``llama``, ``qwen2``, ``mistral`` and ``gpt_bigcode`` load into the
family ``Decoder`` (``codeglm.model.families``); anything else is an
``UnsupportedModelError`` pointing to the ``hf:`` backend.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from codeglm.inference import model_thread
from codeglm.inference.decode import EngineModel
from codeglm.inference.engine import Engine
from codeglm.inference.jobs import Tokenizer
from codeglm.inference.layout import use_decode_layout
from codeglm.inference.quantize import quantize_int8
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.families import load_decoder, read_config
from codeglm.model.tokenizer import TransformersTokenizer, load_tokenizer

# What ``--dtype`` may say, and the floating type the weights are loaded in.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.float32,  # linears then quantized; activations stay floating point
}


@contextmanager
def without_progress_bars() -> Iterator[None]:
    """transformers draws a "Loading weights" bar on stderr for every load: noise in the
    CLI's output and the editor's server log for a load that takes well under a second."""

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def load_model(path: str | Path, device: str = "cpu", dtype: str = "fp32") -> EngineModel:
    """A model directory (config.json + weights) loaded for inference.

    ``dtype`` is one of fp32, fp16, bf16 or int8 (weight-only int8 linears, see
    ``codeglm.inference.quantize``). The work runs on the model thread (see
    ``codeglm.inference.model_thread``).
    """
    return model_thread.run(lambda: _load_model(path, device, dtype))


def _load_model(path: str | Path, device: str, dtype: str) -> EngineModel:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} is not a model directory (no config.json): give a directory written by "
            "`codeglm convert` or `save_pretrained`"
        )
    torch_dtype = DTYPES[dtype]
    if dtype == "int8" and device != "cpu":
        torch_dtype = torch.float16  # weight-only int8 on a GPU computes in fp16
    model: torch.nn.Module
    if read_config(directory).get("model_type") == "codegeex":
        with without_progress_bars():
            codegeex = CodeGeeXForCausalLM.from_pretrained(str(directory), dtype=torch_dtype)
        model = codegeex.to(device).eval()
        codegeex.transformer.fuse_attention_projections()  # once, as the weights load: then int8 rows of the fused layer
    else:
        # Projections stacked as they load; int8 blocks quantized one by one as they fill,
        # so the floating weights of only one block are ever held; what a block's loading
        # freed goes back to the system before the next (peak: bench/load_memory.py).
        def prepare_block(block: torch.nn.Module) -> None:
            if dtype == "int8":
                quantize_int8(block)
            release_freed_memory()

        model = load_decoder(directory, dtype=torch_dtype, device=device, prepare_block=prepare_block,
                             replaces_blocks=dtype == "int8")
    if dtype == "int8":
        quantize_int8(model)  # what is left: the output projection
    use_decode_layout(model)  # for decode speed
    release_freed_memory()
    return model  # type: ignore[return-value]


def release_freed_memory() -> None:
    """Give the memory freed while loading back to the system (glibc's ``malloc_trim``).

    Loading frees many tensors of 1-32 MB (the floating weights a block had before it
    was quantized, stacking's and conversion's temporaries); glibc keeps such blocks in
    its heap for reuse, so without this a loaded int8 StarCoderBase-1B stayed at 4.8 GB
    resident where its tensors hold 2.5 GB (``bench/load_memory.py``). Elsewhere (not
    glibc): nothing to do."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_model_tokenizer(path: str | Path, model: EngineModel) -> Tokenizer:
    """The tokenizer saved beside a model: CodeGeeX's own for ``codegeex``, transformers'
    otherwise. One that makes ids past the model's vocabulary is refused."""
    directory = Path(path)
    if isinstance(model, CodeGeeXForCausalLM):
        return load_tokenizer(directory)
    tokenizer = TransformersTokenizer.from_directory(directory)
    if len(tokenizer) > model.vocab_size:
        raise ValueError(
            f"the tokenizer in {directory} has {len(tokenizer)} tokens but the model's vocabulary is "
            f"{model.vocab_size}: they do not belong together"
        )
    return tokenizer


def load_engine(path: str | Path, device: str = "cpu", dtype: str = "fp32", **engine_kwargs: int) -> Engine:
    """The model and the tokenizer saved in the same directory, as an ``Engine``."""

    model = load_model(path, device=device, dtype=dtype)
    return Engine(model, load_model_tokenizer(path, model), **engine_kwargs)


__all__ = ["DTYPES", "load_engine", "load_model", "load_model_tokenizer", "without_progress_bars"]
