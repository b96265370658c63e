"""Register the CodeGeeX model type with transformers' Auto classes, lazily."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

_done = False


def register_now() -> None:
    global _done
    if _done:
        return
    for name in ("codeglm.config", "codeglm.model"):
        module = sys.modules.get(name)
        if module is not None and not getattr(module, "_MODULE_READY", False):
            # That module is mid-import (it imported transformers, which fired the hook);
            # it calls register_now() itself once it is complete.
            return
    _done = True
    from transformers import AutoConfig, AutoModelForCausalLM

    from codeglm.config import CodeGeeXConfig
    from codeglm.model import CodeGeeXForCausalLM

    AutoConfig.register(CodeGeeXConfig.model_type, CodeGeeXConfig, exist_ok=True)
    AutoModelForCausalLM.register(CodeGeeXConfig, CodeGeeXForCausalLM, exist_ok=True)


class _AfterTransformersImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``transformers`` so that the
    registration runs right after that package has been executed."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            register_now()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def register_with_transformers_when_imported() -> None:
    if "transformers" in sys.modules:
        register_now()
    elif not any(isinstance(f, _AfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformersImport())
