"""The small default model shipped inside the package, used when no backend is given.

It is trained by ``scripts/train-default-model.sh`` (see ``docs/default-model.md``): good
enough to show real completions offline, not for real work.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR: Path = Path(__file__).resolve().parent / "default_model"
# What a model directory must hold for ``load_engine`` / ``from_pretrained``.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class DefaultModelMissingError(FileNotFoundError):
    """The package was installed without its default model files."""


def default_model_path() -> Path:
    """The shipped model directory; a clear error if its files are missing."""
    missing = [name for name in REQUIRED_FILES if not (DEFAULT_MODEL_DIR / name).is_file()]
    if missing:
        raise DefaultModelMissingError(
            f"the default model is missing {', '.join(missing)} in {DEFAULT_MODEL_DIR}: reinstall codeglm, "
            "rebuild it with scripts/train-default-model.sh, or give a backend (e.g. --backend hf:MODEL)"
        )
    return DEFAULT_MODEL_DIR


def default_backend_spec() -> str:
    """The backend spec for the default model, as the ``--backend`` options take it."""
    return f"native:{default_model_path()}"


__all__ = ["DEFAULT_MODEL_DIR", "DefaultModelMissingError", "default_backend_spec", "default_model_path"]
