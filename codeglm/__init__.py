"""codeglm: a CodeGeeX-style code model, language server, translator and evaluator.

Importing ``codeglm`` alone imports nothing heavy, so light parts of the package (languages,
post-processing, the harness) do not pay for torch. ``import codeglm.model.codegeex`` registers the
``codegeex`` model type with ``AutoConfig`` and ``AutoModelForCausalLM`` (transformers' public
``register`` API); every loader in codeglm imports it.
"""

from __future__ import annotations

__version__ = "0.1.0"
