"""Llama-family and StarCoder-family models in this project's engine: parity with
transformers' own classes (whole sequences, cached steps, greedy continuations through
the prefix cache and in padded batches), int8, fill-in-the-middle prompts, and the
errors a user meets with a model directory the engine cannot run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _torch_fixtures import one_thread  # noqa: F401 (autouse)
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTBigCodeConfig,
    GPTBigCodeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from codeglm.backends.base import BackendError, GenerationRequest
from codeglm.backends.native import NativeBackend
from codeglm.cli import main
from codeglm.inference.cpu_kernels import ACTIVATION_CODES, float_gemv
from codeglm.inference.engine import Engine
from codeglm.inference.fim import FIM_TOKEN_TRIPLES, FimTokens, detect_fim_tokens, prompt_token_ids
from codeglm.inference.kv_cache import CacheShape, StaticKVCache
from codeglm.inference.loading import load_model, load_model_tokenizer
from codeglm.inference.onednn import OneDNNLinear, use_onednn_linears
from codeglm.inference.types import SamplingParams
from codeglm.model.decoder import SWIGLU_SPLIT_ROWS, Decoder, DecoderMLP
from codeglm.model.families import UnsupportedModelError, load_decoder
from codeglm.model.tokenizer import load_tokenizer
from codeglm.paths import tokenizer_dir

# Stacked projections and the engine's cache change how the sums are grouped, not what
# they are: logits agree with transformers' to this fraction of the largest logit.
RELATIVE_LOGIT_TOLERANCE = 1e-5
QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


def tokenizer_with(extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """The CodeGeeX tokenizer as a transformers tokenizer, with extra special tokens."""
    tokenizer = load_tokenizer(tokenizer_dir()).to_transformers()
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
    return tokenizer


def family_configs(vocab: int) -> dict[str, Any]:
    common = {"vocab_size": vocab, "bos_token_id": None, "eos_token_id": 50256, "pad_token_id": None}
    return {
        "qwen2 gqa tied": Qwen2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
            tie_word_embeddings=True, max_position_embeddings=256, rope_theta=1000000.0, **common,
        ),
        "llama mha untied biases": LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=96,
            attention_bias=True, mlp_bias=True, max_position_embeddings=256, **common,
        ),
        "mistral gqa 4:1 head_dim": MistralConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, max_position_embeddings=256, sliding_window=None, **common,
        ),
        "starcoder multi-query": GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4, n_positions=256, multi_query=True, **common),
        "gpt_bigcode multi-head": GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4, n_positions=256, multi_query=False, **common),
    }


MODEL_CLASSES = {
    "qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM, "mistral": MistralForCausalLM, "gpt_bigcode": GPTBigCodeForCausalLM,
}
FAMILY_NAMES = list(family_configs(10))


def save_family(directory: Path, name: str, extra_tokens: tuple[str, ...] = ()) -> Any:
    """A random model of the named config saved with its tokenizer; returns transformers' model."""
    tokenizer = tokenizer_with(extra_tokens)
    config = family_configs(len(tokenizer))[name]
    torch.manual_seed(0)
    model = MODEL_CLASSES[config.model_type](config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # larger than the init's, so logits differ clearly
            parameter.normal_(0.0, 0.15)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    return directory, save_family(directory, request.param)


def assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= RELATIVE_LOGIT_TOLERANCE * scale


PROMPT = "def fibonacci(n: int) -> int:\n    "
OTHER = "import os\nfor name in os.listdir('.'):\n"


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=tokens)


def hf_greedy(model: Any, ids: list[int], tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return out[0, len(ids):].tolist()


def test_whole_sequence_logits_equal_transformers(family: tuple[Path, Any]) -> None:
    directory, reference = family
    decoder = load_decoder(directory)
    ids = torch.randint(0, 50000, (2, 40))
    with torch.no_grad():
        expected = reference(ids).logits
        got = decoder.logits(decoder(ids, torch.arange(40)[None], None, True, None))
    assert_close(got, expected)


def test_a_long_prefill_computes_swiglu_in_halves_and_equals_transformers(
    family: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From SWIGLU_SPLIT_ROWS rows the gate and up products run apart (faster in MKL for
    long prefills); the logits are still transformers'."""
    directory, reference = family
    decoder = load_decoder(directory)
    halves = []
    original = DecoderMLP._swiglu_in_halves
    monkeypatch.setattr(DecoderMLP, "_swiglu_in_halves", lambda self, x: halves.append(x.shape) or original(self, x))
    ids = torch.randint(0, 50000, (4, 200))  # 800 rows, past SWIGLU_SPLIT_ROWS
    assert ids.numel() >= SWIGLU_SPLIT_ROWS
    with torch.no_grad():
        expected = reference(ids).logits
        got = decoder.logits(decoder(ids, torch.arange(200)[None], None, True, None))
    assert_close(got, expected)
    swiglu = decoder.spec.mlp == "swiglu"
    assert len(halves) == (decoder.spec.num_layers if swiglu else 0)


def test_engine_steps_and_greedy_continuation_equal_transformers(family: tuple[Path, Any]) -> None:
    """Token by token through the engine's cache (with its decode layout and kernels):
    each step's logits are transformers' for the same sequence, and greedy text is the
    same as transformers' ``generate()``; a second run reuses the prefix cache and gives
    the same tokens."""
    directory, reference = family
    model = load_model(directory)
    engine = Engine(model, load_model_tokenizer(directory, model))
    prompt = engine.tokenizer.encode(PROMPT)
    steps: list[torch.Tensor] = []
    engine.logits_tap = lambda logits: steps.append(logits.clone())
    [[completion]] = engine.generate_tokens([prompt], greedy(24))
    tokens = [int(logits[0].argmax()) for logits in steps]
    assert completion.generated_tokens == len(tokens) == 24
    assert tokens == hf_greedy(reference, prompt, len(tokens))
    assert completion.text == engine.tokenizer.decode(tokens)
    with torch.no_grad():
        expected = reference(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    assert_close(torch.cat(steps), expected)
    [[again]] = engine.generate_tokens([prompt + [tokens[0]]], greedy(23))  # one more token typed
    assert engine.last_stats.reused_prefix_tokens == len(prompt)
    assert again.text == engine.tokenizer.decode(tokens[1:])


@pytest.mark.skipif(float_gemv() is None, reason="the AVX2 kernels are not built here (test_cpu_kernels says why)")
def test_one_token_steps_through_the_fused_kernels_equal_transformers(family: tuple[Path, Any]) -> None:
    """Every product of a one-token step through the AVX2 kernel with its norm (LayerNorm
    or RMSNorm), activation (GELU-tanh or SwiGLU) and residual taken in (a real model's
    layers are large enough to be swapped; these small ones are swapped by hand), and the
    attention kernel with rotary positions and shared key/value heads: the steps' logits
    are still transformers'."""
    directory, reference = family
    model = load_model(directory)
    use_onednn_linears(model, min_weight_bytes=0)
    calls: list[tuple[bool, int, bool]] = []  # (a norm taken in, activation code, a residual taken in)

    def counted(kernel: Any) -> Any:
        def call(x: Any, weight: Any, bias: Any, norm_weight: Any = None, norm_bias: Any = None, eps: float = 1e-5,
                 residual: Any = None, activation: int = 0) -> Any:
            calls.append((norm_weight is not None, activation, residual is not None))
            return kernel(x, weight, bias, norm_weight, norm_bias, eps, residual, activation)
        return call

    for layer in model.modules():
        if isinstance(layer, OneDNNLinear) and layer._gemv is not None:
            layer._gemv = counted(layer._gemv)
    engine = Engine(model, load_model_tokenizer(directory, model))
    prompt = engine.tokenizer.encode(PROMPT)
    steps: list[torch.Tensor] = []
    engine.logits_tap = lambda logits: steps.append(logits.clone())
    engine.generate_tokens([prompt], greedy(12))
    tokens = [int(logits[0].argmax()) for logits in steps]
    assert tokens == hf_greedy(reference, prompt, len(tokens))
    with torch.no_grad():
        expected = reference(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    assert_close(torch.cat(steps), expected)
    # Per block and one-token step: q/k/v with its norm, the output with the residual, the
    # MLP's first layer with its norm and activation, its second with the residual; and
    # the logits with the final norm, of each step and of the prompt's last position. The
    # prompt's last block computes its output and MLP for the last row alone: one row,
    # through the kernels too.
    steps_taken = len(tokens) - 1
    activation = ACTIVATION_CODES["swiglu" if model.spec.mlp == "swiglu" else "gelu_tanh"]
    assert calls.count((False, 0, True)) == 2 * model.spec.num_layers * steps_taken + 2
    assert calls.count((True, activation, False)) == model.spec.num_layers * steps_taken + 1
    assert calls.count((True, 0, False)) == model.spec.num_layers * steps_taken + len(tokens)


def test_padded_batch_and_n_samples_equal_single_runs(family: tuple[Path, Any]) -> None:
    directory, _ = family
    model = load_model(directory)
    engine = Engine(model, load_model_tokenizer(directory, model), prefix_cache_size=0)
    single = [engine.generate([p], greedy(16))[0][0].text for p in (PROMPT, OTHER)]
    batched = engine.generate([PROMPT, OTHER], greedy(16), n=2)
    assert [[c.text for c in per_prompt] for per_prompt in batched] == [[single[0]] * 2, [single[1]] * 2]


def test_int8_follows_fp32(family: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    directory, reference = family
    quantized = load_model(directory, dtype="int8")
    ids = torch.tensor([load_model_tokenizer(directory, quantized).encode(PROMPT + "return n")])
    with torch.no_grad():
        expected = reference(ids).logits[0]
        got = torch.cat([quantized.logits(quantized(ids, torch.arange(ids.shape[1])[None], None, True, None))[0]])
    difference = float((got - expected).abs().max())
    agreement = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    with capsys.disabled():
        print(f"\nint8 {directory.name}: max logit difference {difference:.4f} of {float(expected.abs().max()):.2f}, "
              f"greedy agreement {agreement:.0%}")
    assert difference <= 0.05 * float(expected.abs().max())
    assert agreement >= 0.8


def test_native_backend_lays_out_fill_in_the_middle(tmp_path: Path) -> None:
    save_family(tmp_path, "qwen2 gqa tied", extra_tokens=QWEN_FIM)
    backend = NativeBackend.load(tmp_path)
    assert backend.supports_fim
    tokenizer = backend.engine.tokenizer  # type: ignore[union-attr]
    prefix, suffix, middle = (tokenizer.vocabulary[t] for t in QWEN_FIM)
    request = GenerationRequest(prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", params=greedy(8))
    expected = [prefix, *tokenizer.encode(request.prompt), suffix, *tokenizer.encode(request.suffix), middle]
    assert backend.prompt_ids(request) == expected
    [completion] = backend.generate(request)
    assert completion.generated_tokens == 8 or completion.finish_reason == "stop"


@pytest.mark.parametrize("triple", FIM_TOKEN_TRIPLES, ids=[t[0] for t in FIM_TOKEN_TRIPLES])
def test_each_fim_token_style_gives_prefix_suffix_middle(triple: tuple[str, str, str]) -> None:
    vocabulary = {triple[0]: 90, triple[1]: 91, triple[2]: 92, "a": 1}
    fim = detect_fim_tokens(vocabulary)
    assert fim == FimTokens(90, 91, 92)
    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]
    assert prompt_token_ids(encode, "ab", "c", fim, start=(7,)) == [7, 90, 97, 98, 91, 99, 92]
    assert prompt_token_ids(encode, "ab", None, fim, start=(7,)) == [7, 97, 98]  # no suffix: plain
    assert prompt_token_ids(encode, "ab", "c", None) == [97, 98]  # no FIM tokens: the suffix is left out


def test_an_unsupported_model_type_names_it_and_points_to_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="model_type 'gpt2'.*hf:"):
        load_model(tmp_path)
    with pytest.raises(BackendError, match="model_type 'gpt2'"):
        NativeBackend.load(tmp_path)
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    assert main(["complete", str(source), "--line", "1", "--col", "0", "--backend", f"native:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'gpt2'" in err and "hf:" in err and "Traceback" not in err


def test_unsupported_rope_scaling_is_refused(tmp_path: Path) -> None:
    save_family(tmp_path, "llama mha untied biases")
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="rotary scaling 'llama3'"):
        load_decoder(tmp_path)


def test_a_directory_without_weights_says_so(tmp_path: Path) -> None:
    save_family(tmp_path, "qwen2 gqa tied")
    (tmp_path / "model.safetensors").rename(tmp_path / "weights.bak")
    with pytest.raises(BackendError, match="no safetensors weights"):
        NativeBackend.load(tmp_path)


def test_weights_of_another_shape_name_the_tensor(tmp_path: Path) -> None:
    save_family(tmp_path, "starcoder multi-query")
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_inner"] = 128  # the saved MLP is 256 wide
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight make a tensor of shape \(256, 64\)"):
        load_decoder(tmp_path)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path: Path) -> None:
    save_family(tmp_path, "qwen2 gqa tied")
    tokenizer_with(("<extra_1>", "<extra_2>")).save_pretrained(tmp_path)
    with pytest.raises(BackendError, match="do not belong together"):
        NativeBackend.load(tmp_path)


def test_the_decoder_is_what_loads(family: tuple[Path, Any]) -> None:
    directory, reference = family
    model = load_model(directory)
    assert isinstance(model, Decoder)
    assert model.spec.model_type == reference.config.model_type


def test_a_hub_id_without_a_network_says_what_to_give_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine without a network
    with pytest.raises(BackendError, match="Qwen/Qwen2.5-Coder-1.5B is not a local directory and could not be fetched"):
        NativeBackend.load("Qwen/Qwen2.5-Coder-1.5B")
    with pytest.raises(BackendError, match="model directory ./no/such does not exist"):
        NativeBackend.load("./no/such")


@torch.inference_mode()
def test_prefill_computes_only_the_last_row_of_the_last_block(family: tuple[Path, Any]) -> None:
    """A prefill's last block attends, projects and runs its MLP for the last row alone
    (nothing reads the others); its logits and every cached key and value are still those
    of the whole sequence's pass (``score``), cold and after a cached prefix."""
    directory, _ = family
    model = load_model(directory)
    layers, heads, head_dim = model.cache_layout
    shape = CacheShape(layers, heads, head_dim, torch.float32, torch.device("cpu"))
    ids = torch.tensor([load_model_tokenizer(directory, model).encode(PROMPT)])
    for past in (0, 5):
        caches = [StaticKVCache.allocate(shape, 1, 64) for _ in range(2)]
        for cache in caches:
            if past:
                model.prefill(ids[:, :past], cache)
        last = model.prefill(ids[:, past:], caches[0])
        every = model.score(ids[:, past:], caches[1])
        assert last.shape == (1, model.vocab_size)
        assert_close(last, every[:, -1])
        for cached, expected in zip(caches[0].prefix(0, ids.shape[1]), caches[1].prefix(0, ids.shape[1]), strict=True):
            for got, want in zip(cached, expected, strict=True):
                assert_close(got, want)
