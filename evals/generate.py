"""Generate HumanEval-X samples with any ``Backend``: n per problem, in batches, resumable.

The prompt is the CodeGeeX language tag line followed by the text ``assemble`` puts
before the generation (``evals.assemble.generation_prompt``). Each raw generation is cut
where the prompt's function is complete by ``evals.truncation.truncate_generation``
(the completion pipeline's rule; ``reference_cut`` below is the reference harness's simpler cut).

A sample line is ``{"task_id", "completion_id", "prompt", "generation"}``: the reference
harness's field names, so files are interchangeable. Lines are appended and flushed as
samples arrive; a rerun counts the lines already there per task and generates only the
rest (a torn last line from a crash is dropped).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from codeglm.backends.base import BackendError, Completion, GenerationRequest, SamplingParams
from evals.assemble import generation_prompt
from evals.dataset import Task
from evals.truncation import truncate_generation

TAGS = {
    "python": "# language: Python",
    "cpp": "// language: C++",
    "java": "// language: Java",
    "javascript": "// language: JavaScript",
    "go": "// language: Go",
    "rust": "// language: Rust",
}

Truncate = Callable[[str, str, str], str]


@dataclass(frozen=True)
class GenerateSettings:
    n: int = 200
    batch_size: int = 20
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    seed: int | None = None


def model_prompt(task: Task) -> str:
    """What the model sees: the CodeGeeX language tag, then the task's prompt text."""
    return TAGS[task.language] + "\n" + generation_prompt(task)


def reference_cut(language: str, prompt: str, generation: str) -> str:
    """The reference's stop rules: Python at a new top-level statement, brace languages
    when the generation closes one more ``}`` than it opened (plus the class for Java)."""
    if language == "python":
        cut = len(generation)
        for marker in ("\ndef", "\nclass", "\nif", "\n#", "\nprint"):
            found = generation.find(marker)
            if 0 <= found < cut:
                cut = found
        return generation[:cut].rstrip()
    depth = 0
    for i, ch in enumerate(generation):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return generation[: i + 1] + ("\n}" if language == "java" else "")
    return generation


def load_truncate() -> Truncate:
    return truncate_generation


def existing_counts(path: Path) -> dict[str, int]:
    """Samples per task already in ``path``; rewrites it without a torn last line."""
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    kept: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                task_id = record["task_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
            counts[task_id] = counts.get(task_id, 0) + 1
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)
    return counts


def generate_or_error(backend: object, request: object, label: str) -> tuple[list, str | None]:
    """The backend's completions for ``request``, or ``n`` empty ones and the reason.

    One task the backend cannot take (a prompt over the model's context) fails its
    samples, not the run: the sample lines carry ``"error"`` and execute scores them
    ``failed`` with that reason.
    """

    try:
        return backend.generate(request), None  # type: ignore[attr-defined]
    except (BackendError, ValueError) as exc:
        error = f"generation error: {exc}"
        print(f"generate: {label}: {error}", file=sys.stderr)
        return [Completion("", "error", 0)] * request.n, error  # type: ignore[attr-defined]


def generate_samples(
    backend: object,
    tasks: list[Task],
    settings: GenerateSettings,
    output: Path,
    truncate: Truncate | None = None,
    progress: bool = True,
) -> int:
    """Append samples until each task has ``settings.n`` in ``output``; returns how many were made."""

    cut = truncate or load_truncate()
    done = existing_counts(output)
    todo = [(task, max(0, settings.n - done.get(task.task_id, 0))) for task in tasks]
    total = sum(missing for _, missing in todo)
    bar = None
    if progress and total:

        bar = tqdm(total=total, unit="sample", desc="generate", file=sys.stderr, smoothing=0.1)
    made = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(output, "a", encoding="utf-8") as handle:
            for task, missing in todo:
                prompt = model_prompt(task)
                start = settings.n - missing
                while start < settings.n:
                    count = min(settings.batch_size, settings.n - start)
                    seed = None if settings.seed is None else settings.seed + 100_003 * task.number + start
                    params = SamplingParams(
                        max_new_tokens=settings.max_new_tokens,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        top_k=settings.top_k,
                        seed=seed,
                    )
                    completions, error = generate_or_error(
                        backend, GenerationRequest(prompt=prompt, params=params, n=count), task.task_id
                    )
                    got = completions[:count]
                    if not got:
                        raise RuntimeError(f"the backend returned no completion for {task.task_id}")
                    for offset, completion in enumerate(got):
                        text = cut(task.language, generation_prompt(task), completion.text)
                        line = {
                            "task_id": task.task_id,
                            "completion_id": start + offset,
                            "prompt": task.prompt,
                            "generation": text,
                        }
                        if error is not None:
                            line["error"] = error
                        handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    handle.flush()
                    made += len(got)
                    start += len(got)
                    if bar is not None:
                        bar.update(len(got))
    finally:
        if bar is not None:
            bar.close()
    return made
