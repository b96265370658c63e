"""Real model shapes through this project's engine against transformers' generate().

Random weights of two real shapes (no pretrained weights reach this machine):
- ``qwen2_0_5b``: Qwen2.5-Coder-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads,
  MLP 4864, vocabulary 151936, tied embeddings, 494M parameters);
- ``starcoder_1b``: StarCoderBase-1B (hidden 2048, 24 layers, 16 heads, multi-query,
  MLP 8192, vocabulary 49152, 8192 positions).

For each, in one run and on the same weights: transformers' own class (``Qwen2ForCausalLM``,
``GPTBigCodeForCausalLM``) with ``generate()``, and the engine (``native:``'s path: the
``Decoder`` loaded from the same tensors, laid out for decoding) in fp32 and int8.

Before anything is timed, each timed path's greedy tokens are checked: the fp32 engine's
against transformers' ``generate()``, the int8 engine's against its own model's reference
loop (the whole sequence recomputed each step), and the keystroke path (prefix cache):
fp32 against transformers' ``generate()`` on the typed prompt, int8 against its model's
own cached loop (the prompt in one pass, then one-token steps: how many rows an int8
product takes changes its rounding, so a cold pass over the typed prompt is no reference). A path that differs is an ERROR, its figures are left out
and the script exits 1.

Figures: decode tok/s at batch 1 (fp32, int8, transformers), the fraction of the memory
bandwidth bound the fp32 engine reaches (bytes a step reads / measured read bandwidth),
cold prefill of a 1,500-token prompt, and the keystroke time: one token typed onto a
1,500-token prompt whose prefix is cached, then a 32-token suggestion (engine, int8),
against transformers (fp32, the whole prompt again). Also fp32 decode with an int8 draft
of the same model (speculative decoding, ``codeglm.inference.speculative``: the model's own
greedy tokens, checked above) and the fraction of drafted tokens the model accepted; the
plain fp32 figure and its bandwidth fraction stay as they were. The last line is JSON.

    .venv/bin/python bench/real_models.py            # ~10 minutes on 2 cores, ~14 GB of memory
    .venv/bin/python bench/real_models.py --quick    # small shapes, a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generation import best_of, read_bandwidth, transformers_version  # noqa: E402 (the sibling bench script)

from codeglm.inference import model_thread
from codeglm.inference.engine import Engine  # noqa: E402
from codeglm.inference.kv_cache import CacheShape, StaticKVCache  # noqa: E402
from codeglm.inference.layout import use_decode_layout  # noqa: E402
from codeglm.inference.quantize import linear_bytes, quantize_int8  # noqa: E402
from codeglm.inference.speculative import DEFAULT_DRAFT_TOKENS, int8_draft  # noqa: E402
from codeglm.inference.types import SamplingParams  # noqa: E402
from codeglm.model.decoder import Decoder  # noqa: E402
from codeglm.model.families import decoder_from_tensors, decoder_spec  # noqa: E402

TARGETS = {  # per shape, on 2 cores
    "decode_vs_hf": 1.3,  # decode_tok_s_fp32 / hf_decode_tok_s
    "bandwidth_fraction_fp32": 0.75,
    "int8_vs_fp32": 2.5,  # decode_tok_s_int8 / decode_tok_s_fp32
    "keystroke_vs_hf": 0.2,  # keystroke_suggestion_s / hf_keystroke_suggestion_s, at most
}
KEYSTROKE_LIMIT_S = {"qwen2_0_5b": 1.5}


def shapes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "qwen2_0_5b": Qwen2Config(
                hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=384, vocab_size=8192, tie_word_embeddings=True, max_position_embeddings=4096,
                rope_theta=1000000.0,
            ),
            "starcoder_1b": GPTBigCodeConfig(
                n_embd=128, n_layer=4, n_head=4, n_inner=512, vocab_size=8192, n_positions=4096, multi_query=True,
            ),
        }
    return {
        "qwen2_0_5b": Qwen2Config(
            hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
            rope_theta=1000000.0,
        ),
        "starcoder_1b": GPTBigCodeConfig(
            n_embd=2048, n_layer=24, n_head=16, n_inner=8192, vocab_size=49152, n_positions=8192, multi_query=True,
        ),
    }


class IdText:
    """Token ids as text (the shapes' real tokenizers are not on this machine, and random
    weights make any text noise): each id its own word; no id ends a sample, so every
    run decodes the same number of steps."""

    eos_token_id = -1

    def encode(self, text: str) -> list[int]:
        return [int(word) for word in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(f" {i}" for i in ids)


def hf_model(config: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    model_class = Qwen2ForCausalLM if config.model_type == "qwen2" else GPTBigCodeForCausalLM
    return model_class(config).eval()


def engine_model(hf: torch.nn.Module, int8: bool) -> Decoder:
    """The engine's model from transformers' tensors, as ``native:`` loads a directory."""
    spec = decoder_spec(hf.config.to_dict())
    state = hf.state_dict()
    model = decoder_from_tensors(spec, state.__getitem__, set(state))
    if int8:
        quantize_int8(model)
    use_decode_layout(model)
    return model


@torch.inference_mode()
def hf_greedy(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@torch.inference_mode()
def reference_greedy(model: Decoder, prompt: list[int], new_tokens: int) -> list[int]:
    """The model's own forward over the whole sequence each step, no cache."""
    ids = list(prompt)
    for _ in range(new_tokens):
        x = torch.tensor([ids])
        hidden = model(x, torch.arange(len(ids))[None], None, True, None)
        ids.append(int(model.logits(hidden[:, -1])[0].argmax()))
    return ids[len(prompt):]


@torch.inference_mode()
def reference_keystroke(model: Decoder, prompt: list[int], typed: list[int], new_tokens: int) -> list[int]:
    """The model's own cached loop for a keystroke: ``prompt`` in one pass, then the typed
    tokens and each chosen one as one-token steps (the products an int8 model computes
    depend on how many rows go together, so this is the int8 keystroke's reference)."""
    layers, heads, head_dim = model.cache_layout
    weight = model.embed.weight
    cache = StaticKVCache.allocate(CacheShape(layers, heads, head_dim, weight.dtype, weight.device), 1, len(typed) + new_tokens)
    logits = model.prefill(torch.tensor([prompt]), cache)
    for token in typed[len(prompt):]:
        logits = model.decode(torch.tensor([[token]]), torch.tensor([[cache.length]]), None, cache)
    chosen: list[int] = []
    while True:
        chosen.append(int(logits[0].argmax()))
        if len(chosen) == new_tokens:
            return chosen
        logits = model.decode(torch.tensor([[chosen[-1]]]), torch.tensor([[cache.length]]), None, cache)


def engine_tokens(engine: Engine, prompt: list[int], new_tokens: int) -> list[int]:
    [[completion]] = engine.generate_tokens([prompt], SamplingParams(temperature=0.0, max_new_tokens=new_tokens))
    return IdText().encode(completion.text)


def check(name: str, got: list[int], expected: list[int]) -> bool:
    if got != expected:
        print(f"ERROR: {name}: greedy tokens differ from the reference path's; its figures are not reported\n"
              f"  reference: {expected}\n  got:       {got}")
        return False
    print(f"check {name}: greedy tokens equal the reference path's ({len(got)} tokens)")
    return True


def engine_decode_tok_s(engine: Engine, prompt: list[int], new_tokens: int, repeats: int) -> float:
    def run() -> float:
        engine.prefix_cache.clear()
        engine.generate_tokens([prompt], SamplingParams(temperature=0.0, max_new_tokens=new_tokens))
        stats = engine.last_stats
        return stats.decode_seconds / stats.decode_steps

    return 1.0 / best_of(repeats, run)


def hf_timed(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> float:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start


def hf_decode_tok_s(model: torch.nn.Module, prompt: list[int], new_tokens: int, repeats: int) -> float:
    first = best_of(repeats, lambda: hf_timed(model, prompt, 1))
    full = best_of(repeats, lambda: hf_timed(model, prompt, new_tokens))
    return (new_tokens - 1) / (full - first)


def engine_cold_prefill_s(engine: Engine, prompt: list[int], repeats: int) -> float:
    def run() -> float:
        engine.prefix_cache.clear()
        engine.generate_tokens([prompt], SamplingParams(temperature=0.0, max_new_tokens=1))
        return engine.last_stats.prefill_seconds

    return best_of(repeats, run)


def keystroke_s(engine: Engine, prompt: list[int], typed: list[int], new_tokens: int, repeats: int) -> float:
    """Wall time of a suggestion for ``typed`` right after one for ``prompt`` (its prefix)."""
    def run() -> float:
        engine.prefix_cache.clear()
        engine.generate_tokens([prompt], SamplingParams(temperature=0.0, max_new_tokens=1))  # the keystroke before
        start = time.perf_counter()
        engine.generate_tokens([typed], SamplingParams(temperature=0.0, max_new_tokens=new_tokens))
        return time.perf_counter() - start

    return best_of(repeats, run)


@dataclass
class Options:
    decode_prompt: int
    decode_tokens: int
    long_prompt: int
    suggestion: int
    repeats: int


def measure(name: str, config: Any, options: Options, bandwidth: Callable[[], float]) -> tuple[dict[str, Any], bool]:
    print(f"\n== {name}: building random weights of the real shape")
    hf = hf_model(config)
    params = sum(p.numel() for p in hf.parameters())
    fp32 = engine_model(hf, int8=False)
    vocab = config.vocab_size
    generator = torch.Generator().manual_seed(1)
    short = torch.randint(0, vocab, (options.decode_prompt,), generator=generator).tolist()
    long = torch.randint(0, vocab, (options.long_prompt,), generator=generator).tolist()
    typed = long + [int(torch.randint(0, vocab, (1,), generator=generator))]

    fp32_engine = Engine(fp32, IdText())
    reference_tokens = hf_greedy(hf, short, 16)
    ok = check(f"{name} fp32 engine", engine_tokens(fp32_engine, short, 16), reference_tokens)
    # The same fp32 model with an int8 draft of itself (speculative decoding): its output
    # must still be the model's own.
    speculative_engine = Engine(fp32, IdText(), draft=int8_draft(fp32))
    ok &= check(f"{name} fp32 engine with an int8 draft", engine_tokens(speculative_engine, short, 16), reference_tokens)
    int8 = engine_model(hf, int8=True)
    int8_engine = Engine(int8, IdText())
    ok &= check(f"{name} int8 engine", engine_tokens(int8_engine, short, 16), reference_greedy(int8, short, 16))
    for label, engine, reference in (
        ("fp32", fp32_engine, lambda: hf_greedy(hf, typed, options.suggestion)),
        ("int8", int8_engine, lambda: reference_keystroke(int8, long, typed, options.suggestion)),
    ):
        engine.prefix_cache.clear()
        engine.generate_tokens([long], SamplingParams(temperature=0.0, max_new_tokens=1))  # the keystroke before
        warm = engine_tokens(engine, typed, options.suggestion)
        reused = engine.last_stats.reused_prefix_tokens
        ok &= check(f"{name} {label} keystroke (prefix cache, {reused} tokens reused)", warm, reference())
        if reused != len(long):
            print(f"ERROR: {name}: the keystroke reused {reused} cached tokens, not {len(long)}")
            ok = False
    if not ok:
        return {"parameters_m": round(params / 1e6, 1), "correct": False}, False

    print(f"{name}: timing decode")
    figures: dict[str, Any] = {"parameters_m": round(params / 1e6, 1), "correct": True}
    figures["hf_decode_tok_s"] = hf_decode_tok_s(hf, short, options.decode_tokens, options.repeats)
    figures["decode_tok_s_fp32"] = engine_decode_tok_s(fp32_engine, short, options.decode_tokens, options.repeats)
    figures["decode_tok_s_int8"] = engine_decode_tok_s(int8_engine, short, options.decode_tokens, options.repeats)
    figures["decode_tok_s_fp32_speculative"] = engine_decode_tok_s(
        speculative_engine, short, options.decode_tokens, options.repeats
    )
    stats = speculative_engine.last_stats
    figures["draft_tokens"] = DEFAULT_DRAFT_TOKENS
    figures["draft_acceptance"] = stats.accepted_draft_tokens / max(1, stats.drafted_tokens)
    gb_s = bandwidth()
    step_bytes = linear_bytes(fp32)
    figures["bandwidth_gb_s"] = gb_s / 1e9
    figures["bytes_per_step_mb"] = step_bytes / 1e6
    figures["bandwidth_fraction_fp32"] = figures["decode_tok_s_fp32"] / (gb_s / step_bytes)
    print(f"{name}: timing prefill and keystrokes ({options.long_prompt}-token prompt)")
    figures["cold_prefill_s"] = engine_cold_prefill_s(fp32_engine, long, options.repeats)
    figures["hf_cold_prefill_s"] = best_of(options.repeats, lambda: hf_timed(hf, long, 1))
    figures["keystroke_suggestion_s"] = keystroke_s(int8_engine, long, typed, options.suggestion, options.repeats)
    figures["hf_keystroke_suggestion_s"] = best_of(options.repeats, lambda: hf_timed(hf, typed, options.suggestion))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}, True


def verdicts(name: str, f: dict[str, Any]) -> list[str]:
    lines = []

    def line(what: str, value: float, target: float, at_most: bool = False) -> None:
        met = value <= target if at_most else value >= target
        lines.append(f"target {name} {what}: {value:.3f} against {'<=' if at_most else '>='} {target}: "
                     f"{'met' if met else 'NOT MET'}")

    line("decode fp32 / transformers", f["decode_tok_s_fp32"] / f["hf_decode_tok_s"], TARGETS["decode_vs_hf"])
    line("bandwidth fraction fp32", f["bandwidth_fraction_fp32"], TARGETS["bandwidth_fraction_fp32"])
    line("decode fp32 with an int8 draft / transformers", f["decode_tok_s_fp32_speculative"] / f["hf_decode_tok_s"],
         TARGETS["decode_vs_hf"])
    line("decode int8 / fp32", f["decode_tok_s_int8"] / f["decode_tok_s_fp32"], TARGETS["int8_vs_fp32"])
    line("keystroke / transformers'", f["keystroke_suggestion_s"] / f["hf_keystroke_suggestion_s"],
         TARGETS["keystroke_vs_hf"], at_most=True)
    if name in KEYSTROKE_LIMIT_S:
        line("keystroke seconds", f["keystroke_suggestion_s"], KEYSTROKE_LIMIT_S[name], at_most=True)
    line("cold prefill / transformers'", f["cold_prefill_s"] / f["hf_cold_prefill_s"], 1.0, at_most=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes and short runs (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure, best taken (default 2, quick 1)")
    parser.add_argument("--only", choices=["qwen2_0_5b", "starcoder_1b"], default=None, help="one shape only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = Options(decode_prompt=128, decode_tokens=32, long_prompt=1500, suggestion=32,
                      repeats=args.repeats or (1 if args.quick else 2))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    all_ok = True
    for name, config in shapes(args.quick).items():
        if args.only and name != args.only:
            continue
        figures, ok = measure(name, config, options, lambda: read_bandwidth(1024, 5))
        results[name] = figures
        gc.collect()  # the shape's models go before the next is built
        all_ok &= ok
        if ok:
            print(json.dumps({name: figures}))
            for line in verdicts(name, figures):
                print(line)
    machine = {
        "cpu": platform.machine(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
        "transformers": transformers_version(), "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps({"machine": machine, **results, "seconds": round(time.perf_counter() - started, 1)}))
    if not all_ok:
        sys.exit(1)


if __name__ == "__main__":
    # Everything on the model thread, transformers' generate() and the reference paths
    # included: the engine runs its steps there, and a second thread with an OpenMP
    # team of its own would make libgomp sleep between parallel regions for both
    # (codeglm/inference/model_thread.py): the engine measured 25-40% slow beside it.
    model_thread.run(main)
