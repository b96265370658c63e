"""``codeglm convert``: an original CodeGeeX checkpoint into a model directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codeglm.model.convert import DEFAULT_HEAD_SIZE, DTYPES, ConversionError, convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="the original checkpoint, e.g. codegeex_13b.pt")
    parser.add_argument("out_dir", type=Path, help="the model directory to create")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="weight dtype (default fp16)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: CODEGLM_TOKENIZER or shared data)")
    parser.add_argument(
        "--num-attention-heads",
        type=int,
        help=f"attention heads (not visible in the weights; default hidden size / {DEFAULT_HEAD_SIZE})",
    )
    parser.add_argument("--max-shard-size", type=float, default=2.0, help="largest shard in GB (default 2)")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    parser.add_argument("--allow-pickle", action="store_true", help="load a checkpoint that holds non-tensor objects")


def run(args: argparse.Namespace) -> int:
    try:
        out = convert(
            args.src,
            args.out_dir,
            dtype=args.dtype,
            tokenizer=args.tokenizer,
            num_attention_heads=args.num_attention_heads,
            max_shard_bytes=int(args.max_shard_size * 1000**3),
            force=args.force,
            allow_pickle=args.allow_pickle,
            progress=sys.stderr.isatty(),
        )
    except ConversionError as err:
        print(f"codeglm convert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}", file=sys.stderr)
    return 0
