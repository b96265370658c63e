"""The configuration of a CodeGeeX model (a transformers ``PreTrainedConfig``)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig


@strict
class CodeGeeXConfig(PreTrainedConfig):
    """CodeGeeX: a GPT decoder of ``num_hidden_layers`` blocks plus one top query layer.

    ``num_hidden_layers`` counts the ordinary blocks only (39 in CodeGeeX-13B); the top
    query layer comes on top, so the KV cache holds ``num_hidden_layers + 1`` entries.
    The defaults are CodeGeeX-13B's.
    """

    model_type = "codegeex"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 52224
    hidden_size: int = 5120
    num_hidden_layers: int = 39
    num_attention_heads: int = 40
    max_position_embeddings: int = 2048
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = 50256
    tie_word_embeddings: bool = True

    def validate_architecture(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size

    @property
    def num_cache_layers(self) -> int:
        """Blocks with a KV cache: the ordinary ones and the top query layer."""
        return self.num_hidden_layers + 1


# transformers' public registration API: ``AutoConfig`` knows ``codegeex`` once this module is
# imported, and a saved config declares its class (``auto_map``) for ``trust_remote_code`` users.
AutoConfig.register(CodeGeeXConfig.model_type, CodeGeeXConfig, exist_ok=True)
CodeGeeXConfig.register_for_auto_class()

__all__ = ["CodeGeeXConfig"]
