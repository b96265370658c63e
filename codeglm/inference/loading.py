"""Loading a model directory for inference: the weights in the asked dtype (int8 quantized
here), laid out for decode steps, and with its tokenizer as an ``Engine``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from codeglm.inference.engine import Engine
from codeglm.inference.layout import use_decode_layout
from codeglm.inference.quantize import quantize_int8
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.tokenizer import load_tokenizer

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


def load_model(path: str | Path, device: str = "cpu", dtype: str = "fp32") -> CodeGeeXForCausalLM:
    """A model directory (config.json + weights) loaded for inference.

    ``dtype`` is one of fp32, fp16, bf16 or int8 (weight-only int8 linears, see
    ``codeglm.inference.quantize``).
    """
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
    with without_progress_bars():
        model = CodeGeeXForCausalLM.from_pretrained(str(directory), dtype=torch_dtype)
    model = model.to(device).eval()
    if dtype == "int8":

        quantize_int8(model)
    use_decode_layout(model)  # for decode speed
    return model


def load_engine(path: str | Path, device: str = "cpu", dtype: str = "fp32", **engine_kwargs: int) -> Engine:
    """The model and the tokenizer saved in the same directory, as an ``Engine``."""

    model = load_model(path, device=device, dtype=dtype)
    return Engine(model, load_tokenizer(path), **engine_kwargs)


__all__ = ["DTYPES", "load_engine", "load_model", "without_progress_bars"]
