"""``codeglm train``: data gathering, the tokenizer it trains, the loop, exact resume, DDP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codeglm.cli import main
from codeglm.train.data import block_order, gather, looks_generated, split_big, train_tokenizer
from codeglm.train.settings import TrainSettings
from codeglm.train.trainer import STATE_DIR, lr_factor, train

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(root: Path) -> Path:
    """A small multi-language tree with plenty of repetition, so a tiny model can learn it."""
    source = root / "src"
    (source / "py").mkdir(parents=True)
    (source / "go").mkdir()
    (source / "node_modules").mkdir()
    for i in range(40):
        (source / "py" / f"mod{i}.py").write_text(
            f"def add_{i}(a, b):\n    return a + b + {i}\n\n\n"
            f"class Box{i}:\n    def __init__(self, value):\n        self.value = value\n\n"
            f"    def get(self):\n        return self.value\n"
        )
        (source / "go" / f"f{i}.go").write_text(
            f"package main\n\nfunc Add{i}(a int, b int) int {{\n\treturn a + b + {i}\n}}\n"
        )
    (source / "node_modules" / "skip.js").write_text("function skipped() {}\n")
    (source / "py" / "bundle.min.js").write_text("var a=1;" * 50)
    (source / "notes.txt").write_text("not code")
    return source


def tiny_settings(source: Path, output: Path, **overrides) -> TrainSettings:
    base = TrainSettings(
        data_dirs=(str(source),),
        output=str(output),
        config="tiny",
        vocab_size=384,
        context_length=32,
        batch_size=4,
        max_steps=12,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=6,
        eval_blocks=4,
        save_every=100,
        validation_fraction=0.2,
        threads=1,
        progress=False,
    )
    return replace(base, **overrides)


def test_gather_skips_vendored_minified_and_unknown_files(tmp_path: Path) -> None:
    corpus = gather([write_corpus(tmp_path)], max_bytes_per_language=10**6, validation_fraction=0.2, seed=0)
    documents = corpus.train + corpus.validation
    assert {d.language for d in documents} == {"python", "go"}
    assert not any("node_modules" in d.path or ".min." in d.path for d in documents)
    assert len(documents) == 80 and corpus.validation  # every file once, some held out
    capped = gather([tmp_path / "src"], max_bytes_per_language=500, validation_fraction=0.0, seed=0)
    assert 0 < sum(d.language == "python" for d in capped.train) < 40


def test_split_big_and_generated_detection() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    pieces = split_big(text, limit=100)
    assert "".join(pieces) == text and all(len(p) <= 100 for p in pieces)
    assert looks_generated("x" * 5000) and not looks_generated("def f():\n    return 1\n")


def test_trained_tokenizer_has_codegeex_whitespace_tokens_and_round_trips() -> None:
    texts = ["def f(x):\n    return x\n", "if (a) {\n        b();\n}\n"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=320)
    assert tokenizer.eos_token_id == 0
    assert [tokenizer.backend.token_to_id(f"<|extratoken_{i}|>") for i in range(10, 19)] == list(range(1, 10))
    # Merges are learned from the code between space runs, never inside the added tokens.
    assert not any("extratoken" in t for t in tokenizer.backend.get_vocab() if not t.startswith("<|"))
    sample = "class A:\n          x  =  1\n"  # a 10-space run and 2-space runs
    ids = tokenizer.encode(sample)
    assert tokenizer.backend.token_to_id("<|extratoken_18|>") in ids
    assert tokenizer.decode(ids) == sample


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    settings = TrainSettings(data_dirs=(), output="", max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(step, settings) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[100] == pytest.approx(0.1)


def test_block_order_is_a_fixed_permutation_per_epoch() -> None:
    first = block_order(50, epoch=0, seed=1)
    assert sorted(first.tolist()) == list(range(50))
    assert (block_order(50, epoch=0, seed=1) == first).all()
    assert not (block_order(50, epoch=1, seed=1) == first).all()


def test_a_few_steps_lower_the_loss_and_write_a_loadable_model(tmp_path: Path) -> None:
    settings = tiny_settings(write_corpus(tmp_path), tmp_path / "out")
    summary = train(settings)
    history = summary["history"]
    first, last = history[0]["validation"], history[-1]["validation"]
    assert set(first) == {"python", "go", "all"}
    assert last["all"] < first["all"] - 0.3, history
    assert summary["final_train_loss"] < 5.0  # from ln(384) = 5.95 at the start

    from codeglm.model.codegeex import CodeGeeXForCausalLM
    from codeglm.model.tokenizer import load_tokenizer

    model = CodeGeeXForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    tokenizer = load_tokenizer(tmp_path / "out")
    assert model.config.num_hidden_layers == 2 and model.transformer.top_query_layer is not None
    assert model.config.eos_token_id == tokenizer.eos_token_id
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}


def test_resumed_run_reaches_the_same_state_as_an_uninterrupted_one(tmp_path: Path) -> None:
    source = write_corpus(tmp_path)
    straight = tiny_settings(source, tmp_path / "straight", max_steps=8, save_every=3)
    train(straight)
    interrupted = tiny_settings(source, tmp_path / "resumed", max_steps=8, save_every=3, stop_at_step=5)
    first_leg = train(interrupted)
    assert first_leg["steps"] == 5
    train(replace(interrupted, stop_at_step=None, resume=True))

    def state(run: str) -> dict[str, torch.Tensor]:
        return torch.load(tmp_path / run / STATE_DIR / "checkpoint.pt", weights_only=False)

    a, b = state("straight"), state("resumed")
    assert a["step"] == b["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for slot_a, slot_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(slot_a["exp_avg"], slot_b["exp_avg"]) and torch.equal(slot_a["exp_avg_sq"], slot_b["exp_avg_sq"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_cli_refuses_to_overwrite_a_run_and_names_missing_data(tmp_path: Path, capsys) -> None:
    source = write_corpus(tmp_path)
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / "checkpoint.pt").write_bytes(b"")
    assert main(["train", str(source), "-o", str(out), "--config", "tiny"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o2"), "--config", "tiny"]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_data_parallel_under_torchrun(tmp_path: Path) -> None:
    source = write_corpus(tmp_path)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        torchrun, "--standalone", "--nproc_per_node", "2", "-m", "codeglm.cli", "train", str(source),
        "-o", str(tmp_path / "ddp"), "--config", "tiny", "--vocab-size", "384", "--context-length", "32",
        "--batch-size", "2", "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2",
        "--validation-fraction", "0.2", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    summary = json.loads((tmp_path / "ddp" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["tokens_per_step"] == 2 * 2 * 32
    assert [h["step"] for h in summary["history"]] == [2, 4]
    assert 0 < summary["validation"]["all"] < 10


def test_reuses_a_given_tokenizer(tmp_path: Path) -> None:
    from codeglm.paths import tokenizer_dir

    codegeex = tokenizer_dir()  # tests always have the shared data (CODEGLM_DATA or ../shared/data)
    settings = tiny_settings(
        write_corpus(tmp_path), tmp_path / "out", tokenizer=str(codegeex), max_steps=2, eval_every=2
    )
    summary = train(settings)
    assert summary["vocab_size"] == 50400  # GPT-2's 50257 + CodeGeeX's 143 extra tokens
    from codeglm.model.tokenizer import load_tokenizer

    assert load_tokenizer(tmp_path / "out").encode("    x") == load_tokenizer(codegeex).encode("    x")
