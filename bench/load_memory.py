"""Peak memory of loading a model into the engine, against the size of its weights.

For each real shape of ``bench/real_models.py`` (Qwen2.5-Coder-0.5B, StarCoderBase-1B;
``--quick``: their small versions), random weights are saved as transformers saves them
(``save_pretrained``: config.json and safetensors), then a fresh child process loads the
directory as ``native:`` does (``codeglm.inference.loading.load_model``, fp32 and int8)
and reports its resident memory after the imports, its peak while loading (VmHWM),
what stays resident after, and after a first forward pass (tensors used as stored stay
memory-mapped from the file: their pages count once read, and are shared with any other
process that maps the same file). A baseline child only imports, so the interpreter's and
torch's share is visible. Figure: (peak - after imports) / the safetensors bytes.
Before timing anything the child checks that the load gives the same logits as
transformers' own class on the same directory (fp32) for a short prompt.

Target (issue #18): at most 1.3x the weights while loading.

    .venv/bin/python bench/load_memory.py [--quick] [--only qwen2_0_5b]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 1.3

CHILD = r"""
import json, sys

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

import torch
from codeglm.inference.loading import load_model
directory, dtype, check = sys.argv[1], sys.argv[2], sys.argv[3] == "check"
torch.set_num_threads(2)
before = status("VmRSS")
model = load_model(directory, dtype=dtype)
peak = status("VmHWM")
after = status("VmRSS")
with torch.inference_mode():
    model.prefill(torch.tensor([[1, 2, 3]]), None)  # every weight read once
result = {"before": before, "peak": peak, "after": after, "after_first_use": status("VmRSS")}
if check:
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.inference_mode():
        ours = model.prefill(ids, None)  # (1, V): the last position's logits
        theirs = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)(ids).logits[:, -1]
    result["max_logit_difference"] = float((ours.float() - theirs).abs().max())
print(json.dumps(result))
"""


def child(directory: Path | None, dtype: str, check: bool) -> dict[str, float]:
    if directory is None:  # baseline: imports only
        code = "import torch, codeglm.inference.loading, json; print(json.dumps({'rss': int([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1]) * 1024}))"
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    else:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(directory), dtype, "check" if check else "-"],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"load_memory: loading {directory} ({dtype}) failed:\n{done.stderr[-3000:]}")
        output = done.stdout
    return json.loads(output.strip().splitlines()[-1])


def save_shape(config: object, directory: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_models import hf_model

    model = hf_model(config)
    model.save_pretrained(directory)
    del model
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small shapes (smoke run)")
    parser.add_argument("--only", help="one shape: qwen2_0_5b or starcoder_1b")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_models import shapes

    baseline = child(None, "fp32", False)["rss"]
    print(f"baseline: {baseline / 2**20:.0f} MiB resident after importing torch and codeglm")
    summary: dict[str, object] = {"baseline_rss_mib": round(baseline / 2**20)}
    ok = True
    for name, config in shapes(args.quick).items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            weights = save_shape(config, directory)
            figures: dict[str, object] = {"weights_mib": round(weights / 2**20)}
            for dtype in ("fp32", "int8"):
                result = child(directory, dtype, check=dtype == "fp32")
                if dtype == "fp32" and result["max_logit_difference"] > 1e-3:
                    print(f"ERROR: {name}: the loaded model's logits differ from transformers' by "
                          f"{result['max_logit_difference']:.2e}; no figure is reported")
                    return 1
                ratio = (result["peak"] - result["before"]) / weights
                figures[f"{dtype}_peak_over_weights"] = round(ratio, 3)
                figures[f"{dtype}_peak_mib"] = round((result["peak"] - result["before"]) / 2**20)
                figures[f"{dtype}_resident_after_mib"] = round((result["after"] - result["before"]) / 2**20)
                figures[f"{dtype}_resident_after_first_use_mib"] = round(
                    (result["after_first_use"] - result["before"]) / 2**20)
                verdict = "met" if ratio <= TARGET else "MISSED"
                ok &= ratio <= TARGET
                print(f"{name} {dtype}: weights {weights / 2**20:.0f} MiB, peak while loading "
                      f"+{(result['peak'] - result['before']) / 2**20:.0f} MiB = {ratio:.2f}x "
                      f"(target <= {TARGET}: {verdict}), resident after +{(result['after'] - result['before']) / 2**20:.0f} MiB, "
                      f"after a first forward pass +{(result['after_first_use'] - result['before']) / 2**20:.0f} MiB")
            summary[name] = figures
    summary["all_met"] = ok
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
