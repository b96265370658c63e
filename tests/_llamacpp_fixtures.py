"""A real llama.cpp server (llama-cpp-python's ``python -m llama_cpp.server``) on a
loopback port, over a small random Llama model that this project's engine runs too.

The model's tokenizer is the GPT-2 byte-level BPE (the CodeGeeX vocabulary without
CodeGeeX's whitespace-run normalizer, which llama.cpp cannot express) plus Qwen's three
FIM tokens, so llama.cpp's ``gpt2`` tokenizer splits every text exactly as
transformers' does (test_backends_llamacpp.py checks it). The weights are written to
an f32 GGUF by ``codeglm.model.gguf_export``. Used by the tests and by
bench/llamacpp_latency.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from codeglm.paths import tokenizer_dir

QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
EOS = "<|endoftext|>"
MODEL_ALIAS = "tiny-llama"
START_TIMEOUT = 120.0


def llamacpp_missing() -> str | None:
    """Why the llama.cpp tests cannot run here (None: they can). Named in the skip."""
    for module, package in (("llama_cpp", "llama-cpp-python[server]"), ("sse_starlette", "llama-cpp-python[server]"),
                            ("gguf", "gguf")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (scripts/setup.sh installs the llamacpp extra: pip install -e '.[llamacpp]')"
    return None


def save_plain_bpe_tokenizer(directory: Path) -> None:
    """GPT-2 byte-level BPE from the CodeGeeX vocabulary files, with Qwen's FIM tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    source = tokenizer_dir()
    tokenizer = Tokenizer(BPE.from_file(str(source / "vocab.json"), str(source / "merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (EOS, *QWEN_FIM)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, clean_up_tokenization_spaces=False, model_max_length=4096,
    ).save_pretrained(str(directory))


def make_llama_dir(directory: Path, context: int = 2048, hidden: int = 64, layers: int = 2) -> Path:
    """A random Llama (grouped-query attention, untied output) with the plain BPE tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    save_plain_bpe_tokenizer(directory)
    vocab = 50257 + len(QWEN_FIM)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=context, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=50256, pad_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # larger than the init's, so logits differ clearly
            parameter.normal_(0.0, 0.15)
    model.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """``python -m llama_cpp.server`` for real, on a loopback port; ``kill()`` to make it die."""

    def __init__(self, gguf: Path, log: Path, n_ctx: int = 2048, threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (open for the process's life)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
             "--n_threads", str(threads), "--n_threads_batch", str(threads), "--verbose", "false"],
            stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {START_TIMEOUT:.0f} s: {self.log()[-2000:]}")

    def backend_spec(self, options: str = "retries=0&timeout=60") -> str:
        return f"openai:{self.url}/v1#{MODEL_ALIAS}" + (f"?{options}" if options else "")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Die at once, as a crashed server does (no clean shutdown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
