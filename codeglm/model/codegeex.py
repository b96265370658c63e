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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput

from codeglm.inference.cpu_kernels import DecodeAttention, decode_attention
from codeglm.inference.kv_cache import StaticKVCache
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


@dataclass(frozen=True)
class FusedProjections:
    """Attention projections of the same input computed as one stacked layer.

    At decode time each projection is a matrix-vector product bound by memory reads
    and per-call overhead, so one (3h x h) product beats three (h x h) ones. The parts
    keep their parameters (names, values, state dict) as views into the stacked layer's
    (``stack_linears``; int8 layers: ``Int8Linear.stacked``), so an in-place change of a
    parameter is seen by both paths. A part replaced (say quantized) or its tensors
    moved (a dtype or device move) make the fusion stale, and the separate projections
    take over again: ``Attention`` drops the fusion when a projection is assigned or its
    tensors move (``Attention.__setattr__``, ``Attention._apply``), so a forward pass
    checks nothing. Reassigning a parameter's ``.data`` by hand needs
    ``fuse_projections`` again.
    """

    names: tuple[str, ...]  # ("query", "key", "value"), or ("key", "value") in the top query layer
    project: nn.Module  # (B, T, h) -> (B, T, len(names) * h)
    parts: tuple[nn.Module, ...]  # the layers stacked, in ``names`` order
    addresses: tuple[int, ...]  # their tensors' data_ptr when stacked

    @property
    def with_query(self) -> bool:
        return self.names[0] == "query"

    def in_place(self, attention: nn.Module) -> bool:
        """Whether ``attention``'s projections are still the layers this fusion stacked,
        holding the tensors they held then."""
        return all(getattr(attention, name) is part for name, part in zip(self.names, self.parts, strict=True)) and (
            tensor_addresses(self.parts) == self.addresses
        )


def tensor_addresses(layers: tuple[nn.Module, ...]) -> tuple[int, ...]:
    return tuple(
        t.data_ptr() for layer in layers for t in (*layer._parameters.values(), *layer._buffers.values()) if t is not None
    )


def stack_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One layer of the linears' class computing their outputs side by side; each
    linear's parameters become views into its. The weights' memory order is kept:
    out-major stays out-major, (in, out) storage (``store_linear_weights_transposed``)
    stays (in, out)."""
    weights = [linear.weight for linear in linears]
    transposed = all(not w.is_contiguous() and w.t().is_contiguous() for w in weights)
    with torch.no_grad():
        if transposed:
            weight = torch.cat([w.t() for w in weights], dim=1).t()  # (parts * out, in), (in, out) storage
        else:
            weight = torch.cat([w.contiguous() for w in weights], dim=0)
        bias = torch.cat([linear.bias for linear in linears])  # type: ignore[misc]
        start = 0
        for linear in linears:
            stop = start + linear.out_features
            linear.weight.data = weight[start:stop]
            linear.bias.data = bias[start:stop]  # type: ignore[union-attr]
            start = stop
    stacked = type(linears[0])(weight.shape[1], weight.shape[0], device="meta")  # OneDNNLinear stays OneDNNLinear
    stacked.weight = nn.Parameter(weight, requires_grad=False)
    stacked.bias = nn.Parameter(bias, requires_grad=False)
    return stacked


def stack_layers(layers: list[nn.Module]) -> nn.Module | None:
    """One layer computing the layers' outputs side by side, or None if they cannot be
    stacked: float linears with biases, or layers whose class offers ``stacked`` (int8)."""
    kind = type(layers[0])
    if any(type(layer) is not kind for layer in layers):
        return None
    if issubclass(kind, nn.Linear):
        return stack_linears(layers) if all(layer.bias is not None for layer in layers) else None  # type: ignore[arg-type]
    stacked = getattr(kind, "stacked", None)
    return stacked(layers) if stacked is not None else None


class Attention(nn.Module):
    """Multi-head attention with separate query/key/value projections.

    The query comes from ``query_input`` if given (the top query embedding in the top
    query layer), otherwise from ``kv_input`` (the block's own LayerNormed input).
    ``fuse_projections`` lets inference compute the projections of the same input in
    one matmul.
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
        self.fused: FusedProjections | None = None
        # The AVX2 attention for decode steps (``use_decode_attention``); None: SDPA.
        self.decode_kernel: DecodeAttention | None = None

    def fuse_projections(self, with_query: bool) -> bool:
        """Fuse key and value (and the query, ``with_query``, when it is computed from the
        same input) for inference; False if the layers cannot be stacked (see
        ``stack_layers``). Values are unchanged; see ``FusedProjections``."""
        names = ("query", "key", "value") if with_query else ("key", "value")
        if self.fused is not None and self.fused.names == names and self.fused.in_place(self):
            return True
        parts = tuple(getattr(self, name) for name in names)
        project = stack_layers(list(parts))
        if project is None:
            return False
        self.fused = FusedProjections(names, project, parts, tensor_addresses(parts))
        return True

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

    def _usable_fusion(self, query_input: torch.Tensor | None) -> FusedProjections | None:
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

    def project_step(
        self, x: torch.Tensor, norm: nn.LayerNorm, query_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``project(norm(x), query_input)`` for ``decode_step``'s one token, with the
        norm taken into the product's kernel where it can be: (B, 1, h) each."""
        fused = self._usable_fusion(query_input)
        if fused is None:
            normed = layer_norm(norm, x)
            q = step_linear(self.query, normed if query_input is None else query_input)
            return q, step_linear(self.key, normed), step_linear(self.value, normed)
        projected = step_linear(fused.project, x, norm=norm)  # (B, 1, parts * h)
        if query_input is None:
            q, k, v = projected.chunk(3, dim=-1)
            return q, k, v
        k, v = projected.chunk(2, dim=-1)
        return step_linear(self.query, query_input), k, v

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


def fuse_attention_projections(model: nn.Module) -> int:
    """Fuse each block's query, key and value projections (the top query layer's key and
    value: its query comes from the position table) for inference, in place; returns how
    many attention layers were fused. Run it after any re-layout of the weights
    (``store_linear_weights_transposed``) or swap of the layers (``use_onednn_linears``,
    ``quantize_int8``) so the fused layer keeps that memory order and kernel.

    Parameter names, values, the state dict and ``save_pretrained`` work as before (the
    parameters become views into the fused weights). Training is unaffected: under
    autograd the separate projections run.
    """
    fused = 0
    for module in model.modules():
        if isinstance(module, Block):
            fused += module.attention.fuse_projections(with_query=not isinstance(module, TopQueryLayer))
    return fused


def decode_step(
    model: CodeGeeXForCausalLM,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    cache: Cache,
) -> torch.Tensor:
    """Logits (B, V) of one new token per row, (B, 1), at ``positions`` (B or 1, 1), after
    the cache's keys and values (all of them, or those ``mask`` (B, 1, 1, S) marks True).

    The model's forward pass for a decode step, for inference: the same operations in
    the same order, but each layer's ``forward`` called directly. Going through
    ``nn.Module.__call__`` (hooks, which this skips) and the model's argument handling
    costs ~0.5 ms a step, 2-5% of a decode step of a 100M-parameter model on a CPU.
    """
    transformer = model.transformer
    x = F.embedding(tokens, transformer.wte.weight) + F.embedding(positions, transformer.wpe.weight)  # (B, 1, h)
    for block in transformer.layers:
        x = block_step(block, x, mask, cache)
    x = layer_norm(transformer.final_layernorm, x)
    top_query = F.embedding(positions, transformer.top_query_embeddings.weight).to(x.dtype)  # (B or 1, 1, h)
    x = block_step(transformer.top_query_layer, x, mask, cache, top_query.expand(x.shape[0], -1, -1))
    return model.lm_head.forward(x[:, -1])


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def block_step(
    block: Block, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache, query_input: torch.Tensor | None = None
) -> torch.Tensor:
    """``Block.forward`` for ``decode_step``: with the attention's decode kernel where it
    is set and takes the step (no mask, the engine's fp32 CPU cache), and each layer norm,
    GELU and residual addition inside the neighbouring product's kernel (``step_linear``)."""
    attention, mlp = block.attention, block.mlp
    kernel = attention.decode_kernel
    if (
        kernel is not None
        and mask is None
        and isinstance(cache, StaticKVCache)
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and cache.keys[attention.layer_idx].dtype == torch.float32
    ):
        q, k, v = attention.project_step(x, block.input_layernorm, query_input)  # (B, 1, h) each
        key_cache, value_cache, position = cache.next_position(attention.layer_idx)
        heads = kernel(q, k, v, key_cache, value_cache, position)  # (B, 1, h)
    else:
        q, k, v = attention.project(layer_norm(block.input_layernorm, x), query_input)
        heads = attention.attend(q, k, v, mask, False, cache)
    a = step_linear(attention.dense, heads, residual=x)
    hidden = step_linear(mlp.dense_h_to_4h, a, norm=block.post_attention_layernorm, gelu=True)
    return step_linear(mlp.dense_4h_to_h, hidden, residual=a)


def step_linear(
    layer: nn.Module,
    x: torch.Tensor,
    norm: nn.LayerNorm | None = None,
    residual: torch.Tensor | None = None,
    gelu: bool = False,
) -> torch.Tensor:
    """``residual + gelu(layer(norm(x)))``, each part if given, for ``decode_step``: in
    one kernel call where the layer offers one for this input (``fused_forward`` of the
    int8 and oneDNN layers: a torch call saved per part, ~3-25 us each), else with
    torch's operations."""
    fused_forward = getattr(layer, "fused_forward", None)
    if fused_forward is not None:
        y = fused_forward(x, norm, residual, gelu)
        if y is not None:
            return y
    y = layer.forward(x if norm is None else layer_norm(norm, x))
    if gelu:
        y = fast_gelu(y)
    return y if residual is None else residual + y


def use_decode_attention(model: nn.Module) -> int:
    """Give each attention layer the AVX2 decode attention (``codeglm.inference.cpu_kernels``) where
    it is built; returns how many layers got it. ``decode_step`` uses it for steps without
    a padding mask, SDPA otherwise."""
    kernel = decode_attention()
    layers = [module for module in model.modules() if isinstance(module, Attention)]
    for layer in layers:
        layer.decode_kernel = kernel
    return 0 if kernel is None else len(layers)


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
    "FusedProjections",
    "TopQueryLayer",
    "decode_step",
    "fast_gelu",
    "fuse_attention_projections",
    "output_cache",
]
