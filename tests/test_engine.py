"""The generation engine against transformers' generate() and against itself.

Tiny random CodeGeeX models with the real CodeGeeX tokenizer. Weights are drawn with
a large spread (initializer_range 0.3) so the greedy choice is never a near-tie that
float rounding could flip.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
import torch
from _torch_fixtures import one_thread, random_model  # noqa: F401 (one_thread: autouse)

from codeglm.backends.base import CancelToken, SamplingParams
from codeglm.inference.cpu_kernels import build
from codeglm.inference.engine import Engine
from codeglm.inference.jobs import PromptRequest, plan_batches, should_drop_finished_rows, split_into_jobs
from codeglm.inference.kv_cache import CacheShape, StaticKVCache
from codeglm.inference.layout import use_decode_layout
from codeglm.inference.loading import load_engine, load_model
from codeglm.inference.onednn import onednn_available, use_onednn_linears
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.tokenizer import CodeGeeXTokenizer, load_tokenizer

# Logits of two runs of the same tokens that take different paths (batched, padded,
# cached prefix, no cache) differ by float rounding only: at most this fraction of the
# largest logit (fp32 has a relative precision of 6e-8; the sums are long).
RELATIVE_LOGIT_TOLERANCE = 1e-5
PROMPT = "def fibonacci(n):\n    "
OTHER_PROMPT = "import os\nimport sys\n\n\ndef main(argv: list[str]) -> int:\n    "


def tiny_model(seed: int = 0, context: int = 256) -> CodeGeeXForCausalLM:
    return random_model(52224, 64, 2, 4, context, seed=seed, initializer_range=0.3)


@pytest.fixture(scope="module")
def tokenizer() -> CodeGeeXTokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def model() -> CodeGeeXForCausalLM:
    return tiny_model()


def cold_engine(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> Engine:
    return Engine(model, tokenizer, prefix_cache_size=0)


def step_logits(engine: Engine, run) -> list[torch.Tensor]:
    """The (rows, V) logits of every step of ``run()``."""
    seen: list[torch.Tensor] = []
    engine.logits_tap = lambda logits: seen.append(logits.clone())
    try:
        run()
    finally:
        engine.logits_tap = None
    return seen


def assert_same_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    diff = float((got - expected).abs().max())
    assert diff <= RELATIVE_LOGIT_TOLERANCE * scale, f"logits differ by {diff:.3g} (largest logit {scale:.3g})"


def greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)


def test_greedy_equals_transformers_generate(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    for prompt in (PROMPT, OTHER_PROMPT):
        ids = tokenizer.encode(prompt)
        expected = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None)
        expected_text = tokenizer.decode(expected[0, len(ids):].tolist())
        [[completion]] = engine.generate([prompt], greedy(24))
        assert completion.finish_reason == "length" and completion.generated_tokens == 24
        assert completion.text == expected_text


def test_batch_of_different_prompts_equals_each_alone(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    alone = [engine.generate([p], greedy(16))[0][0] for p in (PROMPT, OTHER_PROMPT)]
    together = engine.generate([PROMPT, OTHER_PROMPT], greedy(16))
    assert [c[0] for c in together] == alone


def test_batched_and_n_sample_logits_equal_cold_single_runs(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    single = {p: step_logits(engine, lambda p=p: engine.generate([p], greedy(12))) for p in (PROMPT, OTHER_PROMPT)}
    # Two prompts of different lengths (left padding), three samples of the first.
    batched = step_logits(engine, lambda: engine.generate([PROMPT, OTHER_PROMPT], greedy(12), n=3))
    assert len(batched) == 12
    for step, logits in enumerate(batched):
        assert logits.shape[0] == 6
        for row in range(3):
            assert_same_logits(logits[row], single[PROMPT][step][0])
        for row in range(3, 6):
            assert_same_logits(logits[row], single[OTHER_PROMPT][step][0])


def test_decode_layout_gives_the_same_logits(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    """The decode layout (fused q/k/v, oneDNN linears, (in, out) weights) and the
    direct decode steps (``decode_step``) change how, not what, is computed: padded
    batches and n samples give the logits of the plain model's cold runs."""
    laid_out = copy.deepcopy(model)
    use_decode_layout(laid_out)
    if onednn_available():
        assert use_onednn_linears(laid_out, min_weight_bytes=0) > 0  # tiny layers too, to run that kernel
    assert all(block.attention.query_key_value is not None for block in laid_out.transformer.layers)
    assert laid_out.transformer.top_query_layer.attention.key_value is not None
    # Where the AVX2 kernels are built, steps without padding run the decode attention
    # and the products with their layer norm, GELU and residual inside.
    kernels_built = build() is not None
    assert all((block.attention.decode_kernel is not None) == kernels_built for block in (*laid_out.transformer.layers, laid_out.transformer.top_query_layer))
    reference, engine = cold_engine(model, tokenizer), cold_engine(laid_out, tokenizer)
    single = {p: step_logits(reference, lambda p=p: reference.generate([p], greedy(12))) for p in (PROMPT, OTHER_PROMPT)}
    batched = step_logits(engine, lambda: engine.generate([PROMPT, OTHER_PROMPT], greedy(12), n=2))
    assert len(batched) == 12
    for step, logits in enumerate(batched):
        for row, prompt in enumerate((PROMPT, PROMPT, OTHER_PROMPT, OTHER_PROMPT)):
            assert_same_logits(logits[row], single[prompt][step][0])
    for prompt in (PROMPT, OTHER_PROMPT):
        alone = step_logits(engine, lambda prompt=prompt: engine.generate([prompt], greedy(12)))
        samples = step_logits(engine, lambda prompt=prompt: engine.generate([prompt], greedy(12), n=3))
        assert len(alone) == len(samples) == 12
        for step in range(12):
            assert_same_logits(alone[step][0], single[prompt][step][0])
            for row in range(3):
                assert_same_logits(samples[step][row], single[prompt][step][0])


def test_laid_out_greedy_equals_transformers_generate(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    """What ``load_model`` gives users (the decode layout, and the AVX2 kernels where
    they are built) against transformers' own loop over the plain model."""
    laid_out = copy.deepcopy(model)
    use_decode_layout(laid_out)
    engine = cold_engine(laid_out, tokenizer)
    for prompt in (PROMPT, OTHER_PROMPT):
        ids = tokenizer.encode(prompt)
        expected = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None)
        [[completion]] = engine.generate([prompt], greedy(24))
        assert completion.text == tokenizer.decode(expected[0, len(ids):].tolist())


@torch.no_grad()
def test_cached_decoding_equals_a_full_forward_pass(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    ids = tokenizer.encode(PROMPT)
    logits = step_logits(engine, lambda: engine.generate_tokens([ids], greedy(10)))
    generated = [int(step[0].argmax()) for step in logits]
    full = model(torch.tensor([ids + generated[:-1]]), use_cache=False).logits[0, len(ids) - 1 :]
    assert_same_logits(torch.stack([step[0] for step in logits]), full)


def test_prefix_cache_reuses_kv_and_gives_the_same_logits(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    warm = Engine(model, tokenizer, prefix_cache_size=4096)
    cold = cold_engine(model, tokenizer)
    warm.generate([OTHER_PROMPT], greedy(4))
    assert len(warm.prefix_cache) == 1
    typed = OTHER_PROMPT + "return"  # one more word typed in the editor
    shared = len(tokenizer.encode(OTHER_PROMPT)) - 1
    warm_logits = step_logits(warm, lambda: warm.generate([typed], greedy(8)))
    assert warm.last_stats.reused_prefix_tokens >= shared
    cold_logits = step_logits(cold, lambda: cold.generate([typed], greedy(8)))
    assert cold.last_stats.reused_prefix_tokens == 0
    for a, b in zip(warm_logits, cold_logits, strict=True):
        assert_same_logits(a, b)
    # The same prompt again: everything but the last token comes from the cache.
    warm.generate([typed], greedy(2))
    assert warm.last_stats.reused_prefix_tokens == len(tokenizer.encode(typed)) - 1


def test_prefix_cache_stays_within_its_token_budget(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = Engine(model, tokenizer, prefix_cache_size=40)
    prompts = [f"# file {i}\n" + "x = 1\n" * 5 for i in range(6)]
    for prompt in prompts:
        engine.generate([prompt], greedy(1))
        assert engine.prefix_cache.tokens <= 40
    # The most recent prompt survives eviction.
    engine.generate([prompts[-1]], greedy(1))
    assert engine.last_stats.reused_prefix_tokens == len(tokenizer.encode(prompts[-1])) - 1


def test_seeded_sampling_is_reproducible(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    first = engine.generate([PROMPT], params, n=4)
    again = engine.generate([PROMPT], params, n=4)
    assert first == again
    texts = [c.text for c in first[0]]
    assert len(set(texts)) > 1  # the samples differ from one another
    other_seed = engine.generate([PROMPT], SamplingParams(max_new_tokens=16, temperature=1.0, seed=99), n=4)
    assert [c.text for c in other_seed[0]] != texts


def test_samples_split_over_batches_are_all_returned(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = Engine(model, tokenizer, max_batch_size=3)
    out = engine.generate([PROMPT, OTHER_PROMPT], SamplingParams(max_new_tokens=5, temperature=1.0, seed=7), n=5)
    assert [len(c) for c in out] == [5, 5]
    assert all(c.generated_tokens == 5 for per_prompt in out for c in per_prompt)


def reference_text(engine: Engine, prompt: str, tokens: int) -> str:
    [[completion]] = engine.generate([prompt], greedy(tokens))
    return completion.text


def greedy_tokens(model: CodeGeeXForCausalLM, ids: list[int], count: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=count, do_sample=False, eos_token_id=None)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("where", ["inside a token", "across tokens"])
def test_stop_strings_never_leak(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer, where: str) -> None:
    engine = cold_engine(model, tokenizer)
    full = reference_text(engine, PROMPT, 30)
    generated = greedy_tokens(model, tokenizer.encode(PROMPT), 30)
    ends = [len(tokenizer.decode(generated[: i + 1])) for i in range(len(generated))]
    # A token from the fourth on whose text (and the next one's) has 3+ characters.
    i = next(i for i in range(3, 28) if ends[i] - ends[i - 1] >= 3 and ends[i + 1] - ends[i] >= 3)
    stop = full[ends[i] - 3 : ends[i] - 1] if where == "inside a token" else full[ends[i] - 2 : ends[i] + 2]
    expected = full[: full.find(stop)]

    [[completion]] = engine.generate([PROMPT], greedy(30), stop=[stop, "\x00never"])
    assert completion.text == expected and completion.finish_reason == "stop"
    deltas = list(engine.stream(PROMPT, greedy(30), stop=[stop, "\x00never"]))
    assert "".join(deltas) == expected
    assert all(stop not in d for d in deltas)


def test_finished_callback_cuts_the_completion(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    full = reference_text(engine, PROMPT, 30)

    def finished(text: str) -> int | None:
        return 7 if len(text) >= 12 else None

    [[completion]] = engine.generate([PROMPT], greedy(30), finished=finished)
    assert completion.text == full[:7] and completion.finish_reason == "stop"
    assert completion.generated_tokens < 30


def test_streaming_holds_back_partial_utf8(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    from codeglm.inference.text_rules import Sample

    text = "# 计算斐波那契数列 €\nx = 1"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids[:3]).endswith("\ufffd")  # some character spans tokens
    sample = Sample(stop=["\nx ="], finished=None, decode=tokenizer.decode)
    deltas = []
    for token in ids:
        sample.add_token(token, tokenizer.eos_token_id)
        deltas.append(sample.take_delta())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text[: text.find("\nx =")]
    assert sample.finish_reason == "stop"


def test_eos_ends_a_sample_with_stop(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    generated = greedy_tokens(model, tokenizer.encode(PROMPT), 12)
    # Call end-of-text the first token the model produces that it had not produced before.
    k = next(k for k in range(1, 12) if generated[k] not in generated[:k])

    class EosIsKth:  # the tokenizer, with another end-of-text id
        eos_token_id = generated[k]
        encode = staticmethod(tokenizer.encode)
        decode = staticmethod(tokenizer.decode)

    [[completion]] = Engine(model, EosIsKth(), prefix_cache_size=0).generate([PROMPT], greedy(12))
    assert completion.finish_reason == "stop" and completion.generated_tokens == k + 1
    assert completion.text == tokenizer.decode(generated[:k])


def test_cancellation_stops_within_one_step(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    cancel = CancelToken()
    steps: list[int] = []
    steps_at_cancel: list[int] = []

    def finished(text: str) -> None:
        if len(text) >= 10 and not cancel.cancelled:
            cancel.cancel()  # tripped while a token is being looked at
            steps_at_cancel.append(len(steps))
        return None

    engine.logits_tap = lambda logits: steps.append(1)
    [[completion]] = engine.generate([PROMPT], greedy(50), finished=finished, cancel=cancel)
    engine.logits_tap = None
    assert completion.finish_reason == "cancelled"
    assert completion.generated_tokens == steps_at_cancel[0] == len(steps)  # no model step after the cancel
    assert len(completion.text) >= 10
    # Already cancelled: nothing is computed at all.
    [[completion]] = engine.generate([PROMPT], greedy(50), cancel=cancel)
    assert completion.finish_reason == "cancelled" and completion.generated_tokens == 0


def test_cancelling_a_stream_from_another_thread(model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer) -> None:
    engine = cold_engine(model, tokenizer)
    cancel = CancelToken()
    steps: list[int] = []
    engine.logits_tap = lambda logits: steps.append(1)
    stream = engine.stream(PROMPT, greedy(200), cancel=cancel)
    next(stream)
    worker = threading.Thread(target=cancel.cancel)
    worker.start()
    worker.join()
    seen_at_cancel = len(steps)
    rest = list(stream)
    engine.logits_tap = None
    assert len(steps) == seen_at_cancel and len(rest) <= 1
    assert seen_at_cancel < 200


def test_context_limit_and_empty_prompt(tokenizer: CodeGeeXTokenizer) -> None:
    small = Engine(tiny_model(context=32), tokenizer, prefix_cache_size=0)
    prompt_ids = tokenizer.encode(OTHER_PROMPT)
    assert len(prompt_ids) < 32
    [[completion]] = small.generate_tokens([prompt_ids], greedy(100))
    assert completion.finish_reason == "length" and completion.generated_tokens == 32 - len(prompt_ids)
    with pytest.raises(ValueError, match="context"):
        small.generate(["x = 1\n" * 40], greedy(4))
    with pytest.raises(ValueError, match="empty prompt"):
        small.generate([""], greedy(4))


def test_load_engine_from_a_saved_directory(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    capfd.readouterr()
    engine = load_engine(tmp_path, prefix_cache_size=0)
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar in the CLI's or the server's output
    assert engine.context_length == 256
    assert engine.generate([PROMPT], greedy(8)) == cold_engine(model, tokenizer).generate([PROMPT], greedy(8))
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tmp_path, dtype="int4")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "missing")


# --- several requests in one batch: own settings, own cancel, finished rows leave ---------


def request(engine: Engine, prompt: str, params: SamplingParams, **kwargs) -> PromptRequest:
    return PromptRequest(tuple(engine.tokenizer.encode(prompt)), params, **kwargs)


def test_finished_rows_leave_the_batch_and_the_others_are_unchanged(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    alone_short = engine.generate([PROMPT], greedy(4), n=3)[0]
    alone_long = engine.generate([OTHER_PROMPT], greedy(20))[0]
    rows_per_step: list[int] = []
    engine.logits_tap = lambda logits: rows_per_step.append(logits.shape[0])
    short, long = engine.generate_requests(
        [request(engine, PROMPT, greedy(4), n=3), request(engine, OTHER_PROMPT, greedy(20))]
    )
    engine.logits_tap = None
    assert short == alone_short and long == alone_long
    assert engine.last_stats.dropped_rows == 3
    assert rows_per_step == [4] * 4 + [1] * 16  # one batch; after 4 tokens only the long row is computed


def test_requests_with_different_settings_share_one_batch(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    sampled = SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=5)
    expected = [
        engine.generate([PROMPT], greedy(10), stop=["\x00never"])[0],
        engine.generate([OTHER_PROMPT], sampled, n=2)[0],
    ]
    together = engine.generate_requests(
        [request(engine, PROMPT, greedy(10), stop=("\x00never",)), request(engine, OTHER_PROMPT, sampled, n=2)]
    )
    assert together == expected
    assert engine.last_stats.rows == 3 and engine.last_stats.decode_steps == 11  # one batch, not 9 + 11 steps


def test_a_seeded_samples_draws_do_not_depend_on_its_siblings_ending(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=11)
    [free] = engine.generate([PROMPT], params, n=4)
    texts = [c.text for c in free]
    # A stop string early in one sample's text that another sample never produces.
    stop = next(
        texts[i][a : a + 2]
        for i in range(4)
        for a in range(len(texts[i]) // 2)
        if "\ufffd" not in texts[i][a : a + 2] and any(texts[i][a : a + 2] not in t for t in texts)
    )
    [cut] = engine.generate([PROMPT], params, n=4, stop=[stop])
    assert engine.last_stats.dropped_rows >= 1
    for before, after in zip(free, cut, strict=True):
        if stop in before.text:
            assert after.text == before.text[: before.text.find(stop)] and after.finish_reason == "stop"
        else:
            assert after == before


def test_cancelling_one_request_leaves_the_others_running(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    [[alone]] = engine.generate([OTHER_PROMPT], greedy(24))
    cancel = CancelToken()

    def cancel_after_five_characters(text: str) -> None:
        if len(text) >= 5:
            cancel.cancel()
        return None

    cancelled, other = engine.generate_requests([
        request(engine, PROMPT, greedy(24), finished=cancel_after_five_characters, cancel=cancel),
        request(engine, OTHER_PROMPT, greedy(24)),
    ])
    assert cancelled[0].finish_reason == "cancelled" and cancelled[0].generated_tokens < 24
    assert other == [alone]


def test_stream_requests_reports_each_samples_text_and_one_completion(
    model: CodeGeeXForCausalLM, tokenizer: CodeGeeXTokenizer
) -> None:
    engine = cold_engine(model, tokenizer)
    requests = [request(engine, PROMPT, greedy(6), n=2), request(engine, OTHER_PROMPT, greedy(14))]
    expected = engine.generate_requests(requests)
    text: dict[tuple[int, int], str] = {}
    completions: dict[tuple[int, int], list] = {}
    steps = 0
    for updates in engine.stream_requests(requests):
        steps += 1
        for update in updates:
            key = (update.prompt_index, update.sample_index)
            assert key not in completions  # nothing after a sample's last update
            text[key] = text.get(key, "") + update.delta
            if update.completion is not None:
                completions[key] = [update.completion]
    assert steps > 2
    for (p, k), [completion] in completions.items():
        assert completion == expected[p][k] and text[(p, k)] == completion.text
    assert sorted(completions) == [(0, 0), (0, 1), (1, 0)]


def test_drop_policy_and_batch_planning() -> None:
    assert not should_drop_finished_rows(0, 4)
    assert should_drop_finished_rows(1, 4) and should_drop_finished_rows(1, 2)
    assert not should_drop_finished_rows(1, 8) and should_drop_finished_rows(2, 8)
    requests = [PromptRequest((1,) * 10, greedy(50), n=3), PromptRequest((1,) * 90, greedy(5)),
                PromptRequest((1,) * 40, greedy(60), n=2)]
    jobs = split_into_jobs(requests, max_rows=4, context=100)
    assert [(j.prompt_index, j.count, j.budget) for j in jobs] == [(0, 3, 50), (1, 1, 5), (2, 2, 60)]
    # 90 + 50 > 100: the long prompt may not pad the first; the third does not fit the rows left.
    assert [[j.prompt_index for j in b] for b in plan_batches(jobs, 4, 100)] == [[0], [1], [2]]
    assert [[j.prompt_index for j in b] for b in plan_batches(jobs, 8, 100)] == [[0, 2], [1]]


def test_cache_position_for_a_kernel_advances_after_the_last_layer() -> None:
    cache = StaticKVCache.allocate(CacheShape(layers=2, heads=2, head_dim=4, dtype=torch.float32, device=torch.device("cpu")), batch=1, capacity=2)
    for position in (0, 1):
        keys, values, at = cache.next_position(0)
        assert at == position and cache.length == position and keys is cache.keys[0] and values is cache.values[0]
        assert cache.next_position(1)[2] == position and cache.length == position + 1
    with pytest.raises(ValueError, match="cannot hold 3"):
        cache.next_position(0)
