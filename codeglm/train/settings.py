"""What a training run is told: the model shapes, the run's settings, and its error type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    context_length: int
    vocab_size: int  # for a tokenizer trained here; a given tokenizer sets its own


MODEL_SHAPES: dict[str, ModelShape] = {
    # For tests and smoke runs: trains in seconds.
    "tiny": ModelShape(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, context_length=128, vocab_size=1024),
    # The shipped default model: about 1.6M parameters, 3 MB in fp16. Sized for the compute
    # at hand (~35 minutes of a shared 2-core CPU, ~1e13 FLOPs), where a bigger model
    # would see too few tokens to beat it.
    "small": ModelShape(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, context_length=256, vocab_size=4096),
    # Same context and vocabulary, 3x wider: for a machine with a few idle cores.
    "medium": ModelShape(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, context_length=512, vocab_size=8192),
    # A bigger model for a GPU or a long CPU run.
    "base": ModelShape(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, context_length=1024, vocab_size=16384),
}


@dataclass(frozen=True)
class TrainSettings:
    data_dirs: tuple[str, ...]
    output: str
    config: str = "small"
    tokenizer: str | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 1000
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_blocks: int = 16
    save_every: int = 200
    max_bytes_per_language: int = 3_000_000
    validation_fraction: float = 0.02
    languages: tuple[str, ...] | None = None
    precision: str = "auto"
    save_dtype: str = "fp16"
    seed: int = 1234
    threads: int | None = None
    time_budget_minutes: float | None = None
    stop_at_step: int | None = None  # pause here (checkpointed) as if interrupted; --resume goes on
    resume: bool = False
    progress: bool = True

    def shape(self) -> ModelShape:
        base = MODEL_SHAPES[self.config]
        return ModelShape(
            hidden_size=base.hidden_size,
            num_hidden_layers=base.num_hidden_layers,
            num_attention_heads=base.num_attention_heads,
            context_length=self.context_length or base.context_length,
            vocab_size=self.vocab_size or base.vocab_size,
        )

    def run_identity(self) -> dict[str, object]:
        """What must match for a checkpoint to resume (not the step budget or logging)."""
        keys = ("config", "tokenizer", "vocab_size", "context_length", "batch_size", "grad_accum", "seed")
        return {k: getattr(self, k) for k in keys} | {"data_dirs": list(self.data_dirs)}


class TrainError(RuntimeError):
    """A problem the user can fix (bad arguments, a foreign checkpoint): printed, not raised."""


__all__ = ["MODEL_SHAPES", "ModelShape", "TrainError", "TrainSettings"]
