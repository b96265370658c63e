"""The CodeGeeX model: a GPT decoder whose last layer asks "what comes next?".

Input = token embedding + learned position embedding. ``L`` pre-LayerNorm blocks,
a final LayerNorm, then the *top query layer*: a block whose attention query is not
computed from the hidden state but from a learned table ``top_query_embeddings``
looked up at the same position ids (in effect an embedding of position n + 1), while
keys and values come from the hidden state as usual. No LayerNorm after it; logits
are tied to the token embedding. See ``shared/docs/codegeex-reference.md``.

Shapes: B batch, T new tokens, S keys (past + new), h hidden, nh heads, hs head size.

The KV cache is any object with ``update(k, v, layer_idx) -> (k_all, v_all)`` and
``get_seq_length()`` (transformers' ``DynamicCache``, or the engine's preallocated
static cache); it holds ``L + 1`` layers, the top query layer's being index ``L``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput

from codeglm.model.config import CodeGeeXConfig


def fast_gelu(x: torch.Tensor) -> torch.Tensor:
    """CodeGeeX's GELU approximation, x * sigmoid(1.702 x). torch's sigmoid is already
    overflow-safe, so this equals the reference's exp-based form without its extra ops."""
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, config: CodeGeeXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(fast_gelu(self.dense_h_to_4h(x)))


class ProjectionFusion(Protocol):
    """What ``Attention.project`` uses of a fusion of its projections into one stacked layer
    (``codeglm.inference.decode.FusedProjections``, made for inference)."""

    names: tuple[str, ...]  # ("query", "key", "value"), or ("key", "value") in the top query layer
    project: nn.Module  # (B, T, h) -> (B, T, len(names) * h)

    @property
    def with_query(self) -> bool: ...

    def in_place(self, attention: nn.Module) -> bool: ...


class Attention(nn.Module):
    """Multi-head attention with separate query/key/value projections.

    The query comes from ``query_input`` if given (the top query embedding in the top
    query layer), otherwise from ``kv_input`` (the block's own LayerNormed input).
    Inference may fuse the projections of the same input into one matmul
    (``codeglm.inference.decode``); ``project`` then uses the fused layer.
    """

    def __init__(self, config: CodeGeeXConfig, layer_idx: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.layer_idx = layer_idx
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dense = nn.Linear(h, h)
        # Set for inference by codeglm.inference.decode: the projections of one input as one
        # stacked layer (``fuse_attention_projections``), and the AVX2 one-query attention
        # its decode steps use (``use_decode_attention``; None: SDPA).
        self.fused: ProjectionFusion | None = None
        self.decode_kernel: Callable[..., torch.Tensor] | None = None

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # .to(), .double(), .cuda() and the like give the parts new tensors; the fused
        # layer is not a submodule and keeps the old ones: drop it if it went stale.
        result = super()._apply(fn, recurse)
        if self.fused is not None and not self.fused.in_place(self):
            self.fused = None
        return result

    def __setattr__(self, name: str, value: object) -> None:
        # A projection replaced (say by quantize_int8) makes the fusion stale; checking
        # here keeps the per-step check down to one attribute.
        if name in ("query", "key", "value"):
            self.__dict__["fused"] = None
        super().__setattr__(name, value)

    def _usable_fusion(self, query_input: torch.Tensor | None) -> ProjectionFusion | None:
        fused = self.fused
        # Under autograd the separate path keeps gradients flowing to the parameters.
        if fused is None or torch.is_grad_enabled() or fused.with_query != (query_input is None):
            return None
        return fused

    def forward(
        self,
        kv_input: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
        query_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.project(kv_input, query_input)
        return self.dense(self.attend(q, k, v, mask, is_causal, cache))

    def project(
        self, kv_input: torch.Tensor, query_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, (B, nh, T, hs) each."""
        B, T, _ = kv_input.shape
        nh, hs = self.num_heads, self.head_dim
        fused = self._usable_fusion(query_input)
        if fused is None:
            q = self.query(kv_input if query_input is None else query_input)
            q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            k = self.key(kv_input).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            v = self.value(kv_input).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            return q, k, v
        # Called through forward(), not the module: decode_step's callers skip nn.Module
        # dispatch, and the stacked layer is no submodule (it would show in the state dict).
        parts = len(fused.names)
        projected = fused.project.forward(kv_input).view(B, T, parts, nh, hs).permute(2, 0, 3, 1, 4)  # (parts, B, nh, T, hs)
        if query_input is None:
            q, k, v = projected.unbind(0)
            return q, k, v
        k, v = projected.unbind(0)
        q = self.query.forward(query_input).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        """The heads' attention outputs side by side, (B, T, h), before ``dense``."""
        B, _, T, _ = q.shape
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs)
        # Scores scaled by 1/sqrt(hs), softmax accumulated in fp32 by the SDPA kernels.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)


class Block(nn.Module):
    """One pre-LayerNorm block: a = x + Attn(LN1(x)); y = a + MLP(LN2(a))."""

    def __init__(self, config: CodeGeeXConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attention = Attention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
        query_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        normed = self.input_layernorm(x)
        a = x + self.attention(normed, mask, is_causal, cache, query_input)
        return a + self.mlp(self.post_attention_layernorm(a))


class TopQueryLayer(Block):
    """The last block: its attention query is the learned embedding of the position."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        top_query: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        return super().forward(x, mask, is_causal, cache, query_input=top_query)


def build_attention_mask(
    attention_mask: torch.Tensor | None, past_length: int, num_new: int, dtype_device: torch.Tensor
) -> tuple[torch.Tensor | None, bool]:
    """The mask for SDPA: (mask, is_causal).

    ``attention_mask`` is transformers' 2-D (B, S) padding mask (1 = real token) or
    None. Without padding, a first pass is plain causal and a one-token step sees
    everything: no mask tensor at all, so SDPA takes its fastest path.
    """
    S = past_length + num_new
    device = dtype_device.device
    if attention_mask is None or bool(attention_mask.all()):
        if past_length == 0:
            return None, num_new > 1
        if num_new == 1:
            return None, False
        padding = None
    else:
        padding = attention_mask[:, -S:].to(device=device, dtype=torch.bool)  # (B, S)
    query_pos = torch.arange(past_length, S, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    allowed = (key_pos <= query_pos).unsqueeze(0).unsqueeze(0)  # (1, 1, T, S)
    if padding is not None:
        allowed = allowed & padding[:, None, None, :]  # (B, 1, T, S)
        # A padding position (left padding) would see no key at all and make NaNs that
        # leak through 0 * NaN; let every query see itself.
        allowed = allowed | (key_pos == query_pos).unsqueeze(0).unsqueeze(0)
    return allowed, False


class CodeGeeXPreTrainedModel(PreTrainedModel):
    config_class = CodeGeeXConfig
    config: CodeGeeXConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block", "TopQueryLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    supports_gradient_checkpointing = False


class CodeGeeXModel(CodeGeeXPreTrainedModel):
    """Embeddings, the ``L`` blocks, the final LayerNorm and the top query layer."""

    def __init__(self, config: CodeGeeXConfig) -> None:
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.top_query_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.top_query_layer = TopQueryLayer(config, config.num_hidden_layers)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
    ) -> BaseModelOutputWithPast:
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if isinstance(cache, DynamicCache):
            # transformers sizes a DynamicCache by num_hidden_layers; the top query
            # layer needs one more entry.
            while len(cache.layers) < self.config.num_cache_layers:
                cache.layers.append(DynamicLayer())
        if not use_cache:
            cache = None

        B, T = input_ids.shape  # (B, T)
        past_length = cache.get_seq_length() if cache is not None else 0
        if past_length + T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {past_length + T} tokens exceeds the model's context of "
                f"{self.config.max_position_embeddings} positions"
            )
        if position_ids is None:
            if attention_mask is not None and not bool(attention_mask.all()):
                # Left padding: real tokens count positions from 0.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past_length, past_length + T, device=input_ids.device).unsqueeze(0)

        x = self.wte(input_ids) + self.wpe(position_ids)  # (B, T, h)
        mask, is_causal = build_attention_mask(attention_mask, past_length, T, x)
        for block in self.layers:
            x = block(x, mask, is_causal, cache)
        x = self.final_layernorm(x)
        top_query = self.top_query_embeddings(position_ids).to(x.dtype)  # (B or 1, T, h)
        top_query = top_query.expand(B, -1, -1)
        x = self.top_query_layer(x, top_query, mask, is_causal, cache)
        return BaseModelOutputWithPast(last_hidden_state=x, **{CACHE_FIELD: cache})


class CodeGeeXForCausalLM(CodeGeeXPreTrainedModel, GenerationMixin):
    """CodeGeeX with tied output weights: logits = out @ wte^T."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: CodeGeeXConfig) -> None:
        super().__init__(config)
        self.transformer = CodeGeeXModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        cache_position: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits of ``input_ids`` (B, T) after what ``cache`` holds.

        Every argument that transformers' ``generate()`` passes in the releases this
        project supports is named here, and there is no ``**kwargs``: an argument this
        model does not know is a ``TypeError`` naming it, never silently dropped (a
        dropped cache argument once made ``generate()`` run without context).
        ``past_key_values`` is the cache's name before transformers 5.24; ``cache_position``
        (passed by older releases) must agree with the cache's length.
        """
        cache = cache_argument(cache, past_key_values)
        if inputs_embeds is not None:
            raise ValueError("CodeGeeXForCausalLM takes input_ids, not inputs_embeds")
        if output_attentions or output_hidden_states:
            raise ValueError(
                "CodeGeeXForCausalLM does not return attentions or hidden states "
                "(output_attentions / output_hidden_states must be False)"
            )
        if cache_position is not None:
            check_cache_position(cache_position, cache, input_ids.shape[1])
        out = self.transformer(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=use_cache
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)  # (B, T, vocab)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        output = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: output_cache(out)})
        return output if return_dict is None or return_dict else output.to_tuple()


# transformers 5.24 renamed the KV cache argument and output field from ``past_key_values``
# to ``cache`` (the old names still work there, with a deprecation warning). The model takes
# either name and puts the cache in its outputs under the installed release's field name.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def output_cache(output: ModelOutput) -> Cache | None:
    """The KV cache of a model output, whichever transformers release made it."""
    return getattr(output, CACHE_FIELD)


def cache_argument(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("pass the KV cache as `cache` or as `past_key_values`, not both")
    return past_key_values


def check_cache_position(cache_position: torch.Tensor, cache: Cache | None, num_new: int) -> None:
    past_length = cache.get_seq_length() if cache is not None else 0
    expected = torch.arange(past_length, past_length + num_new, device=cache_position.device)
    if cache_position.shape != expected.shape or not bool((cache_position == expected).all()):
        raise ValueError(
            f"cache_position {cache_position.tolist()} does not follow the {past_length} cached positions: "
            "this model takes positions from the cache (or from position_ids)"
        )

# transformers' public registration API: ``AutoModelForCausalLM`` loads a ``codegeex`` directory
# once this module is imported; a saved model declares its classes (``auto_map``), so transformers
# alone loads it with ``trust_remote_code=True`` (codeglm must be installed: the code imports it).
AutoModelForCausalLM.register(CodeGeeXConfig, CodeGeeXForCausalLM, exist_ok=True)
CodeGeeXForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "CodeGeeXForCausalLM",
    "CodeGeeXModel",
    "CodeGeeXPreTrainedModel",
    "ProjectionFusion",
    "TopQueryLayer",
    "fast_gelu",
    "output_cache",
]
