"""Training checkpoints: model, optimizer, scheduler, scaler and random state, saved and
resumed."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from codeglm.train.settings import TrainError, TrainSettings


def rng_state() -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    random.setstate(state["python"])  # type: ignore[arg-type]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]


def save_checkpoint(path: Path, step: int, model: torch.nn.Module, optimizer, scheduler, scaler, settings, history) -> None:
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "identity": settings.run_identity(),
        "history": history,
    }
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)  # atomic: an interrupted save never leaves a torn checkpoint


def load_checkpoint(path: Path, settings: TrainSettings) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["identity"] != settings.run_identity():
        raise TrainError(
            f"{path} belongs to a run with different settings ({state['identity']}); "
            "use the same data, --config, --batch-size, --grad-accum and --seed, or a new -o directory"
        )
    return state


__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
