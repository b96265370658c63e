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

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput

from codeglm.model.config import CodeGeeXConfig
from codeglm.model.layers import attend_with_decode_kernel, layer_norm, linear_step


class MLP(nn.Module):
    """The block's feed-forward layers; ``Block.forward`` applies them (with the norm
    before and the residual after, for kernels that fuse those)."""

    def __init__(self, config: CodeGeeXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)


# The fused projections ``Attention.fuse_projections`` makes, by the layers they stack.
FUSED_NAMES = {("query", "key", "value"): "query_key_value", ("key", "value"): "key_value"}


class Attention(nn.Module):
    """Multi-head attention with query/key/value projections.

    The query comes from ``query_input`` if given (the top query embedding in the top
    query layer), otherwise from the block's normed input, as keys and values do.
    ``fuse_projections`` (done once when an inference load is finished) replaces the
    projections of the same input by one stacked layer: one product instead of three,
    while the state dict keeps the separate layers' names and values (hooks split and
    join them), so saving and loading work as before.
    """

    def __init__(self, config: CodeGeeXConfig, layer_idx: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.layer_idx = layer_idx
        self.query: nn.Module | None = nn.Linear(h, h)
        self.key: nn.Module | None = nn.Linear(h, h)
        self.value: nn.Module | None = nn.Linear(h, h)
        self.dense = nn.Linear(h, h)
        self.query_key_value: nn.Module | None = None  # (h) -> (3h), after fuse_projections
        self.key_value: nn.Module | None = None  # (h) -> (2h), the top query layer's, after fuse_projections
        # The one-query attention for decode steps against a cache that offers
        # ``next_position`` (``codeglm.inference``'s AVX2 kernel; None: SDPA).
        self.decode_kernel: Callable[..., torch.Tensor] | None = None

    def fuse_projections(self, with_query: bool) -> bool:
        """Replace key and value (and the query, ``with_query``) by one linear layer
        computing them side by side; False if they are not float linears of one class
        with biases (already fused, or quantized: fuse before quantizing). Values unchanged."""
        names = ("query", "key", "value") if with_query else ("key", "value")
        parts = [getattr(self, name) for name in names]
        kind = type(parts[0])
        if not issubclass(kind, nn.Linear) or any(type(part) is not kind or part.bias is None for part in parts):
            return False
        # The parts' class (a float linear of an inference kernel stays one), same memory order.
        stacked = kind(parts[0].in_features, sum(p.out_features for p in parts), device="meta")
        with torch.no_grad():
            stacked.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=parts[0].weight.requires_grad)
            stacked.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=parts[0].bias.requires_grad)
        stacked.train(self.training)
        for name in names:
            setattr(self, name, None)
        setattr(self, FUSED_NAMES[names], stacked)
        fused_name = FUSED_NAMES[names]
        self.register_state_dict_post_hook(functools.partial(split_fused_state, fused_name=fused_name, names=names))
        self._register_load_state_dict_pre_hook(functools.partial(join_fused_state, fused_name=fused_name, names=names))
        return True

    def project(
        self, x: torch.Tensor, norm: nn.LayerNorm, query_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``norm(x)``, (B, T, h) each (the query of
        ``query_input`` if given)."""
        h = self.num_heads * self.head_dim
        if self.query_key_value is not None:
            q, k, v = linear_step(self.query_key_value, x, norm=norm).split(h, dim=-1)
            return q, k, v
        if self.key_value is not None:
            assert self.query is not None and query_input is not None
            k, v = linear_step(self.key_value, x, norm=norm).split(h, dim=-1)
            return linear_step(self.query, query_input), k, v
        assert self.query is not None and self.key is not None and self.value is not None
        normed = layer_norm(norm, x)
        q = self.query(normed if query_input is None else query_input)
        return q, self.key(normed), self.value(normed)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        """The heads' attention outputs side by side, (B, T, h), before ``dense``; q, k, v
        (B, T, h) each."""
        B, T, h = q.shape
        y = attend_with_decode_kernel(self.decode_kernel, q, k, v, mask, cache, self.layer_idx)
        if y is not None:
            return y  # (B, 1, h); the kernel wrote k and v into the cache
        nh, hs = self.num_heads, self.head_dim
        q = q.reshape(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.reshape(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.reshape(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs)
        # Scores scaled by 1/sqrt(hs), softmax accumulated in fp32 by the SDPA kernels.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, h)


def split_fused_state(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str, local_metadata: object, *, fused_name: str, names: tuple[str, ...]
) -> None:
    """State dict post hook of a fused attention: the stacked layer's tensors (weight,
    bias, or an int8 layer's rows and scales) as the separate layers' entries."""
    stem = f"{prefix}{fused_name}."
    for key in [key for key in state if key.startswith(stem)]:
        tensor = state.pop(key)
        for name, part in zip(names, tensor.chunk(len(names), dim=0), strict=True):
            state[f"{prefix}{name}.{key[len(stem):]}"] = part


def join_fused_state(
    state: dict[str, torch.Tensor], prefix: str, *args: object, fused_name: str, names: tuple[str, ...]
) -> None:
    """Load state dict pre hook of a fused attention: the separate layers' entries
    stacked into the fused layer's."""
    first = f"{prefix}{names[0]}."
    for key in [key for key in state if key.startswith(first)]:
        suffix = key[len(first) :]
        parts = [state.pop(f"{prefix}{name}.{suffix}") for name in names]
        state[f"{prefix}{fused_name}.{suffix}"] = torch.cat(parts)


class Block(nn.Module):
    """One pre-LayerNorm block: a = x + Attn(LN1(x)); y = a + MLP(LN2(a)).

    Written as products with the norm before and the GELU and residual after
    (``linear_step``), so that the kernels of a decode step take each in one call; a
    training pass and a prefill compute the same with torch's operations."""

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
        attention, mlp = self.attention, self.mlp
        q, k, v = attention.project(x, self.input_layernorm, query_input)  # (B, T, h) each
        heads = attention.attend(q, k, v, mask, is_causal, cache)  # (B, T, h)
        a = linear_step(attention.dense, heads, residual=x)
        hidden = linear_step(mlp.dense_h_to_4h, a, norm=self.post_attention_layernorm, activation="fast_gelu")  # (B, T, 4h)
        return linear_step(mlp.dense_4h_to_h, hidden, residual=a)


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
        x = self.blocks_forward(x, position_ids, mask, is_causal, cache)
        return BaseModelOutputWithPast(last_hidden_state=x, **{CACHE_FIELD: cache})

    def blocks_forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        """The blocks, the final LayerNorm and the top query layer over embedded input
        ``x`` (B, T, h) at ``position_ids`` (B or 1, T): what ``forward`` does once the
        input is embedded and the mask built, and what an engine's decode step calls."""
        for block in self.layers:
            x = block(x, mask, is_causal, cache)
        x = layer_norm(self.final_layernorm, x)
        top_query = F.embedding(position_ids, self.top_query_embeddings.weight).to(x.dtype)  # (B or 1, T, h)
        top_query = top_query.expand(x.shape[0], -1, -1)
        return self.top_query_layer(x, top_query, mask, is_causal, cache)

    def fuse_attention_projections(self) -> int:
        """Each block's query, key and value projections as one product (the top query
        layer's key and value: its query comes from the position table); returns how
        many attention layers were fused. Done once when an inference load is finished,
        before quantization; see ``Attention.fuse_projections``."""
        fused = sum(block.attention.fuse_projections(with_query=True) for block in self.layers)
        return fused + self.top_query_layer.attention.fuse_projections(with_query=False)


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

    # What an engine reads of a model (``codeglm.inference.engine.EngineModel``).
    @property
    def context_length(self) -> int:
        return self.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def cache_layout(self) -> tuple[int, int, int]:
        """(layers, heads, head size) of the KV cache: the blocks and the top query layer."""
        return self.config.num_cache_layers, self.config.num_attention_heads, self.config.head_dim

    def prefill(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Logits (B, V) of the last of ``input_ids`` (B, T), unpadded, after what ``cache`` holds."""
        return self(input_ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    def score(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Logits (B, T, V) of every one of ``input_ids`` (B, T), unpadded, after what ``cache`` holds."""
        return self(input_ids, cache=cache, use_cache=True).logits

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: Cache) -> torch.Tensor:
        """Logits (B, V) of one new token per row, (B, 1), at ``positions`` (B or 1, 1), after
        the cache's keys and values (all of them, or those ``mask`` (B, 1, 1, S) marks True).

        ``forward``'s layers without its per-call work (argument checks, positions, the
        mask, output objects): ~0.5 ms a step, 2-5% of a decode step of a 100M-parameter
        model on a CPU."""
        transformer = self.transformer
        x = F.embedding(tokens, transformer.wte.weight) + F.embedding(positions, transformer.wpe.weight)  # (B, 1, h)
        x = transformer.blocks_forward(x, positions, mask, False, cache)
        return self.lm_head.forward(x[:, -1])

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
    "TopQueryLayer",
    "output_cache",
]
