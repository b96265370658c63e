"""``codeglm train``: train a CodeGeeX-architecture model on source trees (one process,
or several under ``torchrun``)."""

from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from codeglm.languages import get_language
from codeglm.train.distributed import init_distributed
from codeglm.train.settings import MODEL_SHAPES, TrainError, TrainSettings
from codeglm.train.trainer import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="directory trees of source files")
    parser.add_argument("-o", "--output", required=True, help="output directory (model + train-state/)")
    parser.add_argument("--config", choices=sorted(MODEL_SHAPES), default="small", help="model size (default small)")
    parser.add_argument("--tokenizer", help="reuse this tokenizer directory instead of training one")
    parser.add_argument("--vocab-size", type=int, help="vocabulary of a trained tokenizer (default: per config)")
    parser.add_argument("--context-length", type=int, help="tokens per training block (default: per config)")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per micro-batch per process")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps in total")
    parser.add_argument("--lr", type=float, default=1e-3, dest="learning_rate", help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=200, help="steps between validation losses")
    parser.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument("--eval-blocks", type=int, default=16, help="held-out blocks per language per validation")
    parser.add_argument("--max-bytes-per-language", type=int, default=3_000_000)
    parser.add_argument("--validation-fraction", type=float, default=0.02)
    parser.add_argument("--languages", nargs="+", help="only these language ids (default: all found)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    parser.add_argument("--save-dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--time-budget-minutes", type=float, help="stop (and checkpoint) after this much training")
    parser.add_argument("--stop-at-step", type=int, help="stop after this step with a checkpoint (resume later)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train-state/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    values = vars(args).copy()
    values["data_dirs"] = tuple(values["data_dirs"])
    values["languages"] = tuple(values["languages"]) if values.get("languages") else None
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every"):
        if values[name] < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
    known = TrainSettings.__dataclass_fields__
    return TrainSettings(**{k: v for k, v in values.items() if k in known})


def run(args: argparse.Namespace) -> int:
    world = None
    try:
        settings = settings_from_args(args)
        for language in settings.languages or ():
            get_language(language)
        world = init_distributed()
        summary = train(settings, world)
        if world.is_main:
            print(f"model written to {settings.output} (validation loss {summary['validation']})")
        return 0
    except (TrainError, FileNotFoundError, ValueError) as error:
        print(f"codeglm train: {error}", file=sys.stderr)
        return 1
    finally:
        if world is not None and world.world_size > 1:
            dist.destroy_process_group()


