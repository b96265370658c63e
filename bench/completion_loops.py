"""What the loop rule (``codeglm.completion.loops``) changes: completions with and without it.

HumanEval-X prompts (40 Python, 20 each of JavaScript, Java, C++), the cursor where the
function body starts, greedy, up to 96 new tokens, the default model unless ``--backend``.
Each prompt is completed twice, with the rule and with it turned off; the script prints
how many completions differ, the generated tokens of both runs, and a few examples.

    .venv/bin/python bench/completion_loops.py [--backend SPEC] [--examples N]
"""

from __future__ import annotations

import argparse
import gzip
import json
from unittest import mock

import torch

import codeglm.completion.postprocess as postprocess
from codeglm.backends import load_backend
from codeglm.completion.pipeline import CompletionRequest, complete
from codeglm.paths import humaneval_dir

LANGUAGES = (("python", "python", 40), ("js", "javascript", 20), ("java", "java", 20), ("cpp", "cpp", 20))


def requests() -> list[tuple[str, CompletionRequest]]:
    made = []
    for name, language_id, count in LANGUAGES:
        with gzip.open(humaneval_dir() / f"humaneval_{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle][:count]
        for record in records:
            text = record["prompt"]
            if name == "python":
                text = text.rstrip("\n") + "\n    "  # on the body's first line, indented
            lines = text.split("\n")
            request = CompletionRequest(
                text=text, line=len(lines) - 1, character=len(lines[-1]), language_id=language_id, max_new_tokens=96
            )
            made.append((record["task_id"], request))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="backend spec (default: the default model)")
    parser.add_argument("--examples", type=int, default=3, help="changed completions to print")
    args = parser.parse_args()
    torch.set_num_threads(2)
    backend = load_backend(args.backend)
    changed, tokens_with, tokens_without = [], 0, 0
    cases = requests()
    for task_id, request in cases:
        with_rule = complete(request, backend)
        with mock.patch.object(postprocess, "loop_stop", lambda *args, **kwargs: None):
            without_rule = complete(request, backend)
        tokens_with += 0 if with_rule is None else with_rule.generated_tokens
        tokens_without += 0 if without_rule is None else without_rule.generated_tokens
        texts = (None if without_rule is None else without_rule.text, None if with_rule is None else with_rule.text)
        if texts[0] != texts[1]:
            changed.append((task_id, *texts))
    for task_id, without_text, with_text in changed[: args.examples]:
        print(f"== {task_id}\n-- without the rule:\n{without_text}\n-- with it:\n{with_text}\n")
    print(json.dumps({
        "requests": len(cases), "changed": len(changed),
        "generated_tokens_without_rule": tokens_without, "generated_tokens_with_rule": tokens_with,
    }))


if __name__ == "__main__":
    main()
