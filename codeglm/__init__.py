"""codeglm: a CodeGeeX-style code model, language server, translator and evaluator.

Importing ``codeglm`` makes ``AutoConfig`` / ``AutoModelForCausalLM`` /
``AutoTokenizer`` know the ``codegeex`` model type. The registration waits until
``transformers`` itself is imported (an import hook), so light parts of the package
(languages, post-processing, the harness) do not pay for importing torch.
"""

from __future__ import annotations

from codeglm._register import register_with_transformers_when_imported

__version__ = "0.1.0"

register_with_transformers_when_imported()
