"""Shared by the backend, serve-api and generate tests: a tiny random CodeGeeX model
directory with the real CodeGeeX tokenizer beside it, and a real serve-api process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from tokenizers import AddedToken
from transformers import GPT2Config, GPT2LMHeadModel

from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.config import CodeGeeXConfig
from codeglm.model.tokenizer import load_tokenizer
from codeglm.paths import tokenizer_dir

PROJECT = Path(__file__).resolve().parent.parent
CONTEXT = 512


def make_tiny_model_dir(directory: Path, context: int = CONTEXT, seed: int = 0) -> Path:
    """A random CodeGeeX model small enough to generate hundreds of tokens a second."""
    torch.manual_seed(seed)
    config = CodeGeeXConfig(
        vocab_size=50400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=context,
    )
    CodeGeeXForCausalLM(config).save_pretrained(directory)
    load_tokenizer(tokenizer_dir()).save(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(process: subprocess.Popen, url: str, seconds: float, timeout: float = 1) -> str | None:
    """Poll ``url`` until it answers 200: None then, ``"exited"`` if ``process`` ended
    first, ``"timed out"`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "exited"
        try:
            if httpx.get(url, timeout=timeout).status_code == 200:
                return None
        except httpx.TransportError:
            time.sleep(0.2)
    return "timed out"


class ServeApi:
    """``codeglm serve-api`` running for real in a subprocess on a loopback port."""

    def __init__(self, backend: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codeglm.cli", "serve-api", "--backend", backend, "--port", str(self.port), *extra],
            cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        failure = wait_until_answering(self.process, f"{self.url}/health", 60)
        if failure == "exited":
            raise RuntimeError(f"serve-api exited: {self.process.stderr.read() if self.process.stderr else ''}")
        if failure is not None:
            self.stop()
            raise RuntimeError("serve-api did not start within 60 s")

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_MODEL_DIRS: dict[int, Path] = {}


def shared_tiny_model_dir(tmp_path_factory, context: int = CONTEXT) -> Path:  # noqa: ANN001
    """One tiny model directory per test session and context length."""
    if context not in _MODEL_DIRS:
        _MODEL_DIRS[context] = make_tiny_model_dir(tmp_path_factory.mktemp(f"tiny-codegeex-{context}"), context)
    return _MODEL_DIRS[context]


FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def save_gpt2(directory: Path, fim: bool = False) -> Path:
    """A random GPT-2 with the CodeGeeX tokenizer (plus StarCoder FIM tokens if ``fim``)."""
    tokenizer = load_tokenizer()
    if fim:
        tokenizer.backend.add_special_tokens([AddedToken(t, special=True) for t in FIM])
    vocab = tokenizer.backend.get_vocab_size(with_added_tokens=True)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=128,
                        bos_token_id=50256, eos_token_id=50256)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save(directory)
    return directory
