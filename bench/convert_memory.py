"""Peak memory of `codeglm convert` against the checkpoint's size.

Writes a synthetic original-format CodeGeeX checkpoint (random fp16 weights, nested
keys, CodeGeeX shapes) of about ``--gb`` GB, converts it in a child process, and
prints the child's peak resident memory divided by the checkpoint's size. Also runs a
baseline child that only imports torch and codeglm, so the interpreter's own share is
visible. Target: at most about 1.3x, so CodeGeeX-13B (26 GB) converts on a 32 GB box.

    .venv/bin/python bench/convert_memory.py --gb 2
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def synthetic_checkpoint(path: Path, hidden: int, layers: int, vocab: int, positions: int) -> int:
    """Save a nested-format checkpoint; return its size in bytes."""
    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float16) * 0.02

    def block() -> dict[str, torch.Tensor]:
        params = {}
        for ln in ("input_layernorm", "post_attention_layernorm"):
            params[f"{ln}.weight"], params[f"{ln}.bias"] = torch.ones(hidden, dtype=torch.float16), t(hidden)
        for proj in ("query", "key", "value", "dense"):
            params[f"attention.{proj}.weight"], params[f"attention.{proj}.bias"] = t(hidden, hidden), t(hidden)
        params["mlp.dense_h_to_4h.weight"], params["mlp.dense_h_to_4h.bias"] = t(4 * hidden, hidden), t(4 * hidden)
        params["mlp.dense_4h_to_h.weight"], params["mlp.dense_4h_to_h.bias"] = t(hidden, 4 * hidden), t(hidden)
        return params

    transformer: dict[str, torch.Tensor] = {}
    for i in range(layers):
        transformer.update({f"layers.{i}.{k}": v for k, v in block().items()})
    transformer.update({f"topQueryLayer.{k}": v for k, v in block().items()})
    transformer["final_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
    transformer["final_layernorm.bias"] = t(hidden)
    state = {
        "module": {
            "language_model": {
                "embedding": {
                    "word_embeddings": {"weight": t(vocab, hidden)},
                    "position_embeddings": {"weight": t(positions, hidden)},
                },
                "topQueryEmbedding": {"top_query_embeddings": {"weight": t(positions, hidden)}},
                "transformer": transformer,
            }
        }
    }
    torch.save(state, path)
    return path.stat().st_size


def child_peak_rss(cmd: list[str]) -> tuple[int, float]:
    """Run ``cmd`` in a fresh process; return (peak RSS in bytes, seconds)."""
    probe = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="approximate checkpoint size in GB")
    parser.add_argument("--hidden", type=int, default=2048)
    args = parser.parse_args()
    per_layer = 12 * args.hidden * args.hidden * 2
    layers = max(1, int(args.gb * 1e9 / per_layer) - 1)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        ckpt = Path(tmp) / "codegeex.pt"
        size = synthetic_checkpoint(ckpt, args.hidden, layers, vocab=52224, positions=2048)
        baseline, _ = child_peak_rss([sys.executable, "-c", "import torch, codeglm.model.convert, codeglm.model.config"])
        peak, seconds = child_peak_rss(
            [sys.executable, "-m", "codeglm.cli", "convert", str(ckpt), str(Path(tmp) / "out"), "--dtype", "fp16",
             "--num-attention-heads", str(args.hidden // 128)]
        )
    result = {
        "checkpoint_gb": round(size / 1e9, 3),
        "layers": layers,
        "hidden": args.hidden,
        "peak_rss_gb": round(peak / 1e9, 3),
        "baseline_rss_gb": round(baseline / 1e9, 3),
        "peak_over_checkpoint": round(peak / size, 3),
        "peak_minus_baseline_over_checkpoint": round((peak - baseline) / size, 3),
        "seconds": round(seconds, 1),
    }
    print(f"checkpoint {result['checkpoint_gb']} GB ({layers} layers of h={args.hidden}); "
          f"peak RSS {result['peak_rss_gb']} GB = {result['peak_over_checkpoint']}x "
          f"(interpreter + torch alone: {result['baseline_rss_gb']} GB); {result['seconds']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
