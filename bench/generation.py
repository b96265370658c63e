"""Generation speed: this project's engine against transformers' generate().

On one random-weight CodeGeeX-shaped model (>= 100M parameters) and, as the
transformers baseline, transformers' own ``GPT2LMHeadModel`` of the same width, depth
(L + 1 blocks), vocabulary and context, in one run:

- prefill and decode tokens/s at batch 1 (greedy) and at n = 8 samples of one prompt
  (temperature 0.8, top-p 0.95), for the engine, for GPT-2 with ``generate()``, and
  for this project's transformers adapter (``CodeGeeXForCausalLM.generate()``);
- the machine's memory read bandwidth, and the fraction of the bandwidth bound
  (bytes a decode step must read / bandwidth) the engine reaches at batch 1;
- int8 decode speed against fp32, and int8's effect on logits (HumanEval-X prompts);
- the prefix cache: time to first token for a 1,500-token prompt cold, and after one
  more typed character.

Before anything is timed, each timed path's greedy output is checked against its model's
reference path (a manual greedy loop over the model's own forward pass): a path that
gives other tokens is printed as an ERROR and its figures, and every ratio built on
them, are left out (the script exits 1). A fast wrong path is never a figure.

Every timing is the best of ``--repeats`` runs (the machine may be shared). The runs
that ratios compare are interleaved - each round times the engine, GPT-2, the int8
engine and the memory bandwidth once, in turn - so both sides of a ratio see the
same moments of a shared machine. The last line of output is one JSON object with all
figures; the line before each target's verdict.

    .venv/bin/python bench/generation.py            # ~2 minutes on 2 cores
    .venv/bin/python bench/generation.py --quick    # smaller model, a smoke run
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from codeglm.backends.base import SamplingParams
from codeglm.inference import model_thread
from codeglm.inference.engine import Engine
from codeglm.inference.quantize import linear_bytes, measure_int8_effect, quantize_int8
from codeglm.model.codegeex import CodeGeeXForCausalLM, output_cache
from codeglm.model.config import CodeGeeXConfig
from codeglm.model.tokenizer import CodeGeeXTokenizer, load_tokenizer
from codeglm.paths import humaneval_dir

LANGUAGES = ("python", "cpp", "java", "js", "go", "rust")


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int  # ordinary blocks; the model has one more (the top query layer)
    heads: int
    vocab: int = 52224
    context: int = 2048


FULL = Shape(hidden=768, layers=12, heads=12)
# The targets on 2 CPU threads (the full model; --quick runs are smoke tests).
TARGETS = {
    "decode_ratio_b1": 1.3,
    "decode_ratio_n8": 1.5,
    "bandwidth_fraction_b1": 0.6,
    "int8_speedup": 2.5,
    "prefix_cache_ttft_ratio": 5.0,
}
QUICK = Shape(hidden=256, layers=4, heads=4)


class NoEndOfText:
    """The tokenizer, except that no token ends a sample: every run decodes the same
    number of steps, as ``min_new_tokens`` makes transformers do."""

    eos_token_id = -1

    def __init__(self, tokenizer: CodeGeeXTokenizer) -> None:
        self.encode = tokenizer.encode
        self.decode = tokenizer.decode


@torch.inference_mode()
def reference_greedy(model: torch.nn.Module, prompt: list[int], new_tokens: int, cached: bool) -> list[int]:
    """The reference path: greedy tokens from a manual loop over ``model``'s forward pass,
    one token a step through the model's own KV cache (``cached``, CodeGeeX models: the
    same one-row products as the engine's steps, which matters for int8) or recomputing
    the whole sequence each step (transformers' GPT-2, whose cache argument we leave alone)."""
    ids = torch.tensor([prompt])
    out = model(ids, use_cache=cached)
    tokens: list[int] = []
    while True:
        tokens.append(int(out.logits[0, -1].argmax()))
        if len(tokens) == new_tokens:
            return tokens
        step = torch.tensor([[tokens[-1]]])
        if cached:
            out = model(step, cache=output_cache(out), use_cache=True)
        else:
            ids = torch.cat([ids, step], dim=1)
            out = model(ids, use_cache=False)


def engine_greedy_texts(engine: Engine, prompt: list[int], new_tokens: int, n: int) -> list[str]:
    engine.prefix_cache.clear()
    [completions] = engine.generate_tokens([prompt], SamplingParams(max_new_tokens=new_tokens), n=n)
    return [c.text for c in completions]


@torch.inference_mode()
def hf_greedy_texts(model: torch.nn.Module, tokenizer: CodeGeeXTokenizer, prompt: list[int], new_tokens: int,
                    n: int) -> list[str]:
    ids = torch.tensor([prompt]).expand(n, -1).contiguous()
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=50256)
    return [tokenizer.decode(row[len(prompt):].tolist()) for row in out]


def check_greedy(name: str, texts: list[str], reference: str) -> bool:
    """Whether every row of a timed path's greedy output equals the reference's text."""
    wrong = [i for i, text in enumerate(texts) if text != reference]
    if wrong:
        print(f"ERROR: {name}: greedy output of row(s) {wrong} differs from the reference path's; "
              f"its figures are not reported\n  reference: {reference!r}\n  got:       {texts[wrong[0]]!r}")
    else:
        print(f"check {name}: greedy output equals the reference path's ({len(texts)} row(s))")
    return not wrong


def best_of(repeats: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeats))


def read_bandwidth(megabytes: int, repeats: int) -> float:
    """Bytes/s of summing a tensor far larger than the caches (what a GEMV does)."""
    data = torch.ones(megabytes * 2**20 // 4)
    data.sum()

    def run() -> float:
        start = time.perf_counter()
        data.sum()
        return time.perf_counter() - start

    return data.numel() * 4 / best_of(repeats, run)


def humaneval_records(language: str) -> list[dict]:
    with gzip.open(humaneval_dir() / f"humaneval_{language}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def humaneval_text(min_chars: int) -> str:
    """HumanEval-X prompts, languages taken in turn, joined until ``min_chars`` long."""
    records = {language: humaneval_records(language) for language in LANGUAGES}
    parts: list[str] = []
    for i in range(164):
        for language in LANGUAGES:
            parts.append(records[language][i]["prompt"])
            if sum(map(len, parts)) >= min_chars:
                return "\n".join(parts)
    return "\n".join(parts)


def humaneval_prompts(tokenizer: CodeGeeXTokenizer, tokens_each: int) -> list[list[int]]:
    """The first two prompts of each language, as at most ``tokens_each`` tokens."""
    return [
        tokenizer.encode(record["prompt"])[:tokens_each]
        for language in LANGUAGES
        for record in humaneval_records(language)[:2]
    ]


def codegeex_model(shape: Shape) -> CodeGeeXForCausalLM:
    config = CodeGeeXConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, max_position_embeddings=shape.context,
    )
    return CodeGeeXForCausalLM(config).eval()


def gpt2_model(shape: Shape) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=shape.vocab, n_positions=shape.context, n_embd=shape.hidden, n_layer=shape.layers + 1,
        n_head=shape.heads, bos_token_id=50256, eos_token_id=50256,
    )
    return GPT2LMHeadModel(config).eval()


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float  # over all rows

    def as_dict(self) -> dict[str, float]:
        return {"prefill_tok_s": round(self.prefill_tokens_per_s, 2), "decode_tok_s": round(self.decode_tokens_per_s, 2)}


def engine_run(engine: Engine, prompt: list[int], new_tokens: int, n: int, params: SamplingParams) -> tuple[float, float]:
    """One generation: (prefill seconds, seconds per decode step)."""
    engine.prefix_cache.clear()
    engine.generate_tokens([prompt], params, n=n)
    stats = engine.last_stats
    assert stats.decode_steps == new_tokens - 1, stats
    return stats.prefill_seconds, stats.decode_seconds / stats.decode_steps


def engine_speed(prompt: list[int], n: int, runs: list[tuple[float, float]]) -> Speed:
    return Speed(len(prompt) / min(r[0] for r in runs), n / min(r[1] for r in runs))


def hf_run(model: torch.nn.Module, prompt: list[int], new_tokens: int, n: int, sample: bool) -> tuple[float, float]:
    """transformers' generate() once for one token and once for all: (seconds, seconds)."""
    ids = torch.tensor([prompt]).expand(n, -1).contiguous()
    options = dict(do_sample=sample, pad_token_id=50256)
    if sample:
        options.update(temperature=0.8, top_p=0.95, top_k=0)

    def timed(tokens: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **options)
        return time.perf_counter() - start

    return timed(1), timed(new_tokens)


def hf_speed(prompt: list[int], new_tokens: int, n: int, runs: list[tuple[float, float]]) -> Speed:
    """Decode time = (N tokens - 1 token) / (N - 1) steps, from the best of each."""
    first, full = min(r[0] for r in runs), min(r[1] for r in runs)
    # The batch-n prefill computes the prompt n times; count it once per prompt, as the engine does.
    return Speed(len(prompt) / first, n * (new_tokens - 1) / (full - first))


def time_to_first_token(engine: Engine, text: str, repeats: int) -> float:
    """Seconds from the request text to the first chosen token (encoding included)."""
    def run() -> float:
        start = time.perf_counter()
        ids = engine.tokenizer.encode(text)
        encoded = time.perf_counter() - start
        engine.generate_tokens([ids], SamplingParams(max_new_tokens=1))
        return encoded + engine.last_stats.prefill_seconds

    return best_of(repeats, run)


def prefix_cache_ttft(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer, prompt_tokens: int, repeats: int) -> dict:
    ids = tokenizer.encode(humaneval_text(prompt_tokens * 6))[:prompt_tokens]
    text = tokenizer.decode(ids)
    typed = text + "x"
    engine = Engine(model, NoEndOfText(tokenizer))
    engine.prefix_cache.max_tokens = 0
    cold = time_to_first_token(engine, typed, repeats)
    engine.prefix_cache.max_tokens = 8192

    def warm_run() -> float:
        engine.prefix_cache.clear()
        engine.generate([text], SamplingParams(max_new_tokens=1))  # the keystroke before
        return time_to_first_token(engine, typed, 1)

    warm = best_of(repeats, warm_run)
    # The prefix-cached path gives the first token a full pass over the typed text gives.
    typed_ids = tokenizer.encode(typed)
    [[first]] = engine.generate_tokens([typed_ids], SamplingParams(max_new_tokens=1))
    expected = tokenizer.decode(reference_greedy(model, typed_ids, 1, cached=False))
    if engine.last_stats.reused_prefix_tokens == 0:
        raise SystemExit("ERROR: prefix cache: the check run reused no prefix, so it checked nothing")
    correct = check_greedy("prefix-cached first token", [first.text], expected)
    return {
        "correct": correct,
        "prompt_tokens": len(tokenizer.encode(typed)),
        "reused_tokens": engine.last_stats.reused_prefix_tokens,
        "cold_ttft_s": round(cold, 4),
        "warm_ttft_s": round(warm, 4),
        "ratio": round(cold / warm, 2),
    }


def transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small model and short runs (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per decode run (default 48, quick 16)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure, best taken (default 3, quick 1)")
    parser.add_argument("--ttft-prompt-tokens", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else FULL
    new_tokens = args.new_tokens or (16 if args.quick else 48)
    repeats = args.repeats or (1 if args.quick else 3)
    load_before = os.getloadavg()[0]
    began = time.perf_counter()

    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    model = codegeex_model(shape)
    parameters = sum(p.numel() for p in model.parameters())
    prompt = tokenizer.encode(humaneval_text(args.prompt_tokens * 6))[: args.prompt_tokens]
    greedy = SamplingParams(max_new_tokens=new_tokens)
    sampled = SamplingParams(max_new_tokens=new_tokens, temperature=0.8, top_p=0.95, seed=0)
    print(f"CodeGeeX-shaped model: {parameters / 1e6:.1f}M parameters, h={shape.hidden}, "
          f"{shape.layers}+1 blocks, vocab {shape.vocab}, context {shape.context}; {args.threads} threads")

    # The reference paths' greedy tokens, from the plain models, before any engine re-lays out weights.
    quantized = quantize_int8(copy.deepcopy(model))
    gpt2 = gpt2_model(shape)
    texts = {
        "codegeex": tokenizer.decode(reference_greedy(model, prompt, new_tokens, cached=True)),
        "int8": tokenizer.decode(reference_greedy(quantized, prompt, new_tokens, cached=True)),
        "gpt2": tokenizer.decode(reference_greedy(gpt2, prompt, new_tokens, cached=False)),
    }

    # transformers' generate() on this project's adapter, before the engine re-lays out the weights.
    adapter_ok = check_greedy("adapter generate() b1", hf_greedy_texts(model, tokenizer, prompt, new_tokens, 1),
                              texts["codegeex"])
    adapter_b1 = None
    if adapter_ok:
        hf_run(model, prompt, 2, 1, False)  # warm-up
        adapter_b1 = hf_speed(prompt, new_tokens, 1, [hf_run(model, prompt, new_tokens, 1, False) for _ in range(repeats)])
        print(f"adapter generate() b1: {adapter_b1}")
    engine = Engine(model, NoEndOfText(tokenizer), prefix_cache_size=0, decode_layout=True)
    int8_engine = Engine(quantized, NoEndOfText(tokenizer), prefix_cache_size=0, decode_layout=True)
    correct = {
        "engine b1": check_greedy("engine b1", engine_greedy_texts(engine, prompt, new_tokens, 1), texts["codegeex"]),
        "gpt2 generate() b1": check_greedy(
            "gpt2 generate() b1", hf_greedy_texts(gpt2, tokenizer, prompt, new_tokens, 1), texts["gpt2"]),
        "int8 engine b1": check_greedy(
            "int8 engine b1", engine_greedy_texts(int8_engine, prompt, new_tokens, 1), texts["int8"]),
        # The n = 8 runs sample; their greedy check runs the same 8-row decode path.
        "engine n8": check_greedy("engine n8", engine_greedy_texts(engine, prompt, new_tokens, 8), texts["codegeex"]),
        "gpt2 generate() n8": check_greedy(
            "gpt2 generate() n8", hf_greedy_texts(gpt2, tokenizer, prompt, new_tokens, 8), texts["gpt2"]),
    }
    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        "engine b1": partial(engine_run, engine, prompt, new_tokens, 1, greedy),
        "gpt2 generate() b1": partial(hf_run, gpt2, prompt, new_tokens, 1, False),
        "int8 engine b1": partial(engine_run, int8_engine, prompt, new_tokens, 1, greedy),
        "engine n8": partial(engine_run, engine, prompt, new_tokens, 8, sampled),
        "gpt2 generate() n8": partial(hf_run, gpt2, prompt, new_tokens, 8, True),
    }
    contenders = {name: run for name, run in contenders.items() if correct[name]}
    for run in contenders.values():  # warm-up: first calls pay for allocations and kernel choices
        run()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    bandwidths: list[float] = []
    for _ in range(repeats):
        bandwidths.append(read_bandwidth(256 if args.quick else 1024, 5))
        for name, run in contenders.items():
            runs[name].append(run())
    del contenders, gpt2
    bandwidth = max(bandwidths)
    print(f"memory read bandwidth: {bandwidth / 1e9:.2f} GB/s (best of {5 * repeats} reads, 5 in each round)")
    speeds: dict[str, Speed] = {}
    for name, measured in runs.items():
        n = 8 if name.endswith("n8") else 1
        speeds[name] = engine_speed(prompt, n, measured) if "engine" in name else hf_speed(prompt, new_tokens, n, measured)
        print(f"{name}: {speeds[name]}")
    engine_b1 = speeds.get("engine b1")
    engine_n8 = speeds.get("engine n8")
    int8_b1 = speeds.get("int8 engine b1")
    gpt2_b1 = speeds.get("gpt2 generate() b1")
    gpt2_n8 = speeds.get("gpt2 generate() n8")

    # The bandwidth bound at batch 1: every linear weight, the embedding row and
    # position rows, the layer norms, and the KV cache at the mean decode length.
    mean_length = args.prompt_tokens + new_tokens / 2
    kv_bytes = engine.cache_shape.bytes_per_token * mean_length
    step_bytes = linear_bytes(model) + kv_bytes
    bound = bandwidth / step_bytes
    fraction = engine_b1.decode_tokens_per_s / bound if engine_b1 else None
    print(f"bytes per decode step {step_bytes / 1e6:.1f} MB -> bound {bound:.1f} tok/s; "
          f"engine reaches {'(not measured)' if fraction is None else f'{fraction:.1%}'}")

    effect = measure_int8_effect(model, quantized, humaneval_prompts(tokenizer, 128))
    print(f"int8 effect: {effect}")
    del int8_engine, quantized

    ttft = prefix_cache_ttft(model, tokenizer, args.ttft_prompt_tokens, repeats)
    print(f"prefix cache: {ttft}")

    def as_dict(speed: Speed | None) -> dict[str, float] | None:
        return None if speed is None else speed.as_dict()

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a / b, 3)

    def decode(speed: Speed | None) -> float | None:
        return None if speed is None else speed.decode_tokens_per_s

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "transformers": transformers_version(),
                    "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)},
        "model": {"parameters_m": round(parameters / 1e6, 1), "hidden": shape.hidden, "blocks": shape.layers + 1,
                  "vocab": shape.vocab, "context": shape.context},
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": new_tokens,
        "greedy_checks": {**correct, "adapter generate() b1": adapter_ok, "prefix cache": ttft["correct"]},
        "bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "engine_b1": as_dict(engine_b1),
        "engine_n8": as_dict(engine_n8),
        "gpt2_generate_b1": as_dict(gpt2_b1),
        "gpt2_generate_n8": as_dict(gpt2_n8),
        "adapter_generate_b1": as_dict(adapter_b1),
        "int8_engine_b1": as_dict(int8_b1),
        "int8_max_logit_diff": round(effect.max_logit_diff, 4),
        "int8_max_abs_logit": round(effect.max_abs_logit, 4),
        "int8_greedy_agreement": round(effect.greedy_agreement, 4),
        "prefix_cache": ttft,
        "decode_ratio_b1": ratio(decode(engine_b1), decode(gpt2_b1)),
        "decode_ratio_n8": ratio(decode(engine_n8), decode(gpt2_n8)),
        "prefill_ratio_b1": ratio(engine_b1 and engine_b1.prefill_tokens_per_s, gpt2_b1 and gpt2_b1.prefill_tokens_per_s),
        "bandwidth_fraction_b1": None if fraction is None else round(fraction, 3),
        "int8_speedup": ratio(decode(int8_b1), decode(engine_b1)),
        "prefix_cache_ttft_ratio": ttft["ratio"] if ttft["correct"] else None,
        "seconds": round(time.perf_counter() - began, 1),
    }
    for key, target in TARGETS.items():
        value = result[key]
        verdict = "NOT MEASURED (a greedy check failed)" if value is None else "met" if value >= target else "MISSED"
        print(f"target {key}: {value} against >= {target}: {verdict}")
    print(json.dumps(result))
    if not all(result["greedy_checks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    # Everything on the model thread, transformers' generate() and the reference paths
    # included: the engine runs its steps there, and a second thread with an OpenMP
    # team of its own would make libgomp sleep between parallel regions for both
    # (codeglm/inference/model_thread.py): the engine measured 25-40% slow beside it.
    model_thread.run(main)
