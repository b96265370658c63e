"""``codeglm train``: train a CodeGeeX-architecture model on trees of source files.

    codeglm train /usr/lib/python3.11 /usr/share/go-1.19/src -o out/ --config small

Steps: gather documents (``codeglm.train.data``), train a byte-level BPE with the
CodeGeeX whitespace-run tokens (or reuse ``--tokenizer``), pack the token stream into
blocks of the context length, then AdamW with linear warmup and cosine decay, gradient
accumulation, mixed precision where the hardware has it, periodic validation loss per
language and checkpoints that resume exactly. Data-parallel under ``torchrun``
(DistributedDataParallel; gloo on CPU, nccl on GPUs).

Layout of ``-o OUT``: the finished model (config.json, model.safetensors, tokenizer
files, training_summary.json) at the top, and ``OUT/train-state/`` with the tokenized
data, the resumable checkpoint and the log (``log.jsonl``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from codeglm.languages import get_language
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.config import CodeGeeXConfig
from codeglm.model.tokenizer import CodeGeeXTokenizer, TokenizerFilesError, load_tokenizer
from codeglm.train.checkpoints import load_checkpoint, save_checkpoint, set_rng_state
from codeglm.train.data import block_order, blocks, gather, pack, render, train_tokenizer
from codeglm.train.distributed import Distributed, barrier
from codeglm.train.settings import ModelShape, TrainError, TrainSettings

STATE_DIR = "train-state"


CHECKPOINT = "checkpoint.pt"


SUMMARY = "training_summary.json"


# The tokenizer is trained on a sample: BPE merges settle long before 10 MB.
TOKENIZER_SAMPLE_CHARS = 4_000_000


VOCAB_MULTIPLE = 64  # embedding rows padded for friendlier matmul shapes


@dataclass
class PreparedData:
    tokenizer: CodeGeeXTokenizer
    train_blocks: np.ndarray  # (n, context_length) int32
    validation: dict[str, np.ndarray]  # language id -> token stream
    documents: dict[str, int]  # language id -> training documents
    train_tokens: dict[str, int]  # language id -> training tokens


def _tokenizer_for(settings: TrainSettings, texts: list[str]) -> CodeGeeXTokenizer:
    if settings.tokenizer:
        try:
            return load_tokenizer(settings.tokenizer)
        except TokenizerFilesError as error:
            raise TrainError(str(error)) from error
    sample, size = [], 0
    for text in texts:  # texts are already in shuffled order: the sample mixes languages
        if size >= TOKENIZER_SAMPLE_CHARS:
            break
        sample.append(text)
        size += len(text)
    return train_tokenizer(sample, settings.shape().vocab_size)


def prepare_data(settings: TrainSettings, state_dir: Path) -> None:
    """Gather, tokenize and save everything training needs into ``state_dir``."""
    corpus = gather(
        [Path(d) for d in settings.data_dirs],
        settings.max_bytes_per_language,
        settings.validation_fraction,
        settings.seed,
        settings.languages,
    )
    rendered = [render(d, get_language(d.language)) for d in corpus.train]
    tokenizer = _tokenizer_for(settings, rendered)
    tokenizer.save(state_dir / "tokenizer")
    train_ids = tokenizer.encode_batch(rendered)
    # Shuffle documents before packing so a block rarely mixes two files of one directory.
    order = np.random.default_rng(settings.seed).permutation(len(train_ids))
    stream = pack((train_ids[i] for i in order), tokenizer.eos_token_id)
    np.save(state_dir / "train.npy", blocks(stream, settings.shape().context_length))
    stats: dict[str, dict[str, int]] = {"documents": {}, "train_tokens": {}}
    for document, ids in zip(corpus.train, train_ids, strict=True):
        stats["documents"][document.language] = stats["documents"].get(document.language, 0) + 1
        stats["train_tokens"][document.language] = stats["train_tokens"].get(document.language, 0) + len(ids) + 1
    by_language: dict[str, list[list[int]]] = {}
    for document in corpus.validation:
        ids = tokenizer.encode(render(document, get_language(document.language)))
        by_language.setdefault(document.language, []).append(ids)
    for language, id_lists in by_language.items():
        np.save(state_dir / f"validation-{language}.npy", pack(id_lists, tokenizer.eos_token_id))
    (state_dir / "data.json").write_text(json.dumps(stats, indent=2))


def load_data(state_dir: Path) -> PreparedData:
    stats = json.loads((state_dir / "data.json").read_text())
    validation = {
        path.stem.removeprefix("validation-"): np.load(path) for path in sorted(state_dir.glob("validation-*.npy"))
    }
    return PreparedData(
        tokenizer=load_tokenizer(state_dir / "tokenizer"),
        train_blocks=np.load(state_dir / "train.npy"),
        validation=validation,
        documents=stats["documents"],
        train_tokens=stats["train_tokens"],
    )


@functools.lru_cache(maxsize=4)
def _epoch_order(n_blocks: int, epoch: int, seed: int) -> np.ndarray:
    return block_order(n_blocks, epoch, seed)


def block_ids(start: int, count: int, n_blocks: int, seed: int) -> np.ndarray:
    """Blocks number ``start .. start+count`` of the endless, epoch-shuffled sequence."""
    ids = []
    for position in range(start, start + count):
        epoch, index = divmod(position, n_blocks)
        ids.append(_epoch_order(n_blocks, epoch, seed)[index])
    return np.asarray(ids)


def micro_batches(
    data: np.ndarray, step: int, settings: TrainSettings, world: Distributed
) -> Iterator[torch.Tensor]:
    """The micro-batches of this rank for optimizer step ``step``: a pure function of
    the step, so resuming needs no saved iterator."""
    per_step = settings.batch_size * settings.grad_accum * world.world_size
    for micro in range(settings.grad_accum):
        start = step * per_step + (micro * world.world_size + world.rank) * settings.batch_size
        ids = block_ids(start, settings.batch_size, len(data), settings.seed)
        yield torch.from_numpy(data[ids].astype(np.int64))


def padded(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return (n + multiple - 1) // multiple * multiple


def build_model(shape: ModelShape, tokenizer: CodeGeeXTokenizer, seed: int) -> CodeGeeXForCausalLM:
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = CodeGeeXConfig(
        vocab_size=padded(tokenizer.vocab_size),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        max_position_embeddings=shape.context_length,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CodeGeeXForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (the tied output matrix counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    # Decay matrices only: biases, LayerNorm gains and position tables stay undecayed.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim >= 2 and "wpe" not in name and "top_query" not in name else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.95), eps=1e-8)


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.max_steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = fp32. ``auto``: bf16 (or fp16) on a GPU; fp32 on CPU, where bf16 autocast
    was measured slower than fp32 on this project's 2-core machines."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, streams: dict[str, np.ndarray], context_length: int, max_blocks: int, device: torch.device
) -> dict[str, float]:
    """Mean next-token loss per language over its first ``max_blocks`` held-out blocks."""
    model.eval()
    losses: dict[str, float] = {}
    for language, stream in streams.items():
        length = min(context_length, len(stream))
        if length < 2:
            continue
        data = blocks(stream, length)[:max_blocks]
        batch = torch.from_numpy(data.astype(np.int64)).to(device)
        losses[language] = float(model(input_ids=batch, labels=batch).loss)
    model.train()
    if losses:
        losses["all"] = sum(losses.values()) / len(losses)
    return losses


def out_of_time(started: float, budget_minutes: float | None, world: Distributed) -> bool:
    """Whether the time budget is spent; all ranks agree (rank 0's clock decides)."""
    if budget_minutes is None:
        return False
    over = torch.tensor(float(time.time() - started > budget_minutes * 60), device=world.device)
    if world.world_size > 1:
        dist.broadcast(over, src=0)
    return bool(over)


def export_model(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer, output: Path, save_dtype: str) -> None:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[save_dtype]
    copy = CodeGeeXForCausalLM(model.config)
    copy.load_state_dict(model.state_dict())
    copy.to(dtype).save_pretrained(str(output))
    tokenizer.save(output)


def train(settings: TrainSettings, world: Distributed | None = None) -> dict[str, object]:
    """Run (or resume) training; returns the summary also written to ``training_summary.json``."""
    world = world or Distributed()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    output = Path(settings.output)
    state_dir = output / STATE_DIR
    checkpoint_path = state_dir / CHECKPOINT
    if checkpoint_path.exists() and not settings.resume:
        raise TrainError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose a new -o directory")
    if world.is_main:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not (state_dir / "data.json").exists():
            prepare_data(settings, state_dir)
    barrier(world)
    data = load_data(state_dir)
    shape = settings.shape()
    model = build_model(shape, data.tokenizer, settings.seed).to(world.device)
    optimizer = build_optimizer(model, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings))
    amp_dtype = autocast_dtype(settings.precision, world.device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and world.device.type == "cuda" else None
    start_step, history = 0, []
    if settings.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, settings)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_step, history = state["step"], state["history"]
    else:
        torch.manual_seed(settings.seed)
    trained = DistributedDataParallel(model) if world.world_size > 1 else model
    model.train()
    tokens_per_step = settings.batch_size * settings.grad_accum * world.world_size * shape.context_length
    log = (state_dir / "log.jsonl").open("a") if world.is_main else None
    bar = tqdm(
        total=settings.max_steps,
        initial=start_step,
        disable=not (settings.progress and world.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    started, last_time, loss_value = time.time(), time.time(), float("nan")
    steps_done = start_step
    end_step = min(settings.max_steps, settings.stop_at_step or settings.max_steps)
    for step in range(start_step, end_step):
        if out_of_time(started, settings.time_budget_minutes, world):
            # Out of time: keep what was learned (checkpoint, so --resume can go on later).
            if world.is_main:
                bar.write(f"time budget reached at step {step}: stopping")
                history.append({"step": step, "loss": loss_value, "validation": validation_loss(
                    model, data.validation, shape.context_length, settings.eval_blocks, world.device)})
                save_checkpoint(checkpoint_path, step, model, optimizer, scheduler, scaler, settings, history)
            break
        total = torch.zeros((), device=world.device)
        for micro, batch in enumerate(micro_batches(data.train_blocks, step, settings, world)):
            batch = batch.to(world.device)
            last = micro == settings.grad_accum - 1
            sync = contextlib.nullcontext() if last or world.world_size == 1 else trained.no_sync()
            autocast = (
                torch.autocast(world.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            )
            with sync, autocast:
                loss = trained(input_ids=batch, labels=batch).loss / settings.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
            total += loss.detach()
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if world.world_size > 1:
            dist.all_reduce(total)
            total /= world.world_size
        loss_value = float(total)
        now = time.time()
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_step / max(now - last_time, 1e-9):,.0f}",
                        lr=f"{scheduler.get_last_lr()[0]:.2e}")
        last_time = now
        bar.update(1)
        done = steps_done = step + 1
        record: dict[str, object] = {"step": done, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}
        if world.is_main and (done % settings.eval_every == 0 or done == settings.max_steps):
            record["validation"] = validation_loss(
                model, data.validation, shape.context_length, settings.eval_blocks, world.device
            )
            history.append(record)
            bar.write(f"step {done}: train loss {loss_value:.3f}, validation {json.dumps(record['validation'])}")
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if world.is_main and (done % settings.save_every == 0 or done == end_step):
            save_checkpoint(checkpoint_path, done, model, optimizer, scheduler, scaler, settings, history)
        barrier(world)
    bar.close()
    elapsed = time.time() - started
    summary: dict[str, object] = {}
    if world.is_main:
        if log is not None:
            log.close()
        export_model(model, data.tokenizer, output, settings.save_dtype)
        summary = {
            "settings": asdict(settings),
            "shape": asdict(shape),
            "parameters": count_parameters(model),
            "vocab_size": data.tokenizer.vocab_size,
            "steps": steps_done,
            "stopped_early": steps_done < settings.max_steps,
            "tokens_per_step": tokens_per_step,
            "tokens_seen": tokens_per_step * steps_done,
            "train_blocks": int(len(data.train_blocks)),
            "train_documents": data.documents,
            "train_tokens": data.train_tokens,
            "final_train_loss": loss_value,
            "validation": history[-1]["validation"] if history else {},
            "history": history,
            "seconds_this_session": round(elapsed, 1),
            "world_size": world.world_size,
            "torch": torch.__version__,
        }
        (output / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    barrier(world)
    return summary


__all__ = ["CHECKPOINT", "PreparedData", "STATE_DIR", "SUMMARY", "TOKENIZER_SAMPLE_CHARS", "VOCAB_MULTIPLE", "autocast_dtype", "block_ids", "build_model", "build_optimizer", "count_parameters", "export_model", "load_data", "lr_factor", "micro_batches", "out_of_time", "padded", "prepare_data", "train", "validation_loss"]
