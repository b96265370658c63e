"""Generate HumanEval-X samples with any ``Backend``: n per problem, in batches, resumable.

The prompt is the CodeGeeX language tag line followed by the text ``assemble`` puts
before the generation (``evals.assemble.generation_prompt``). Each raw generation is cut
where the prompt's function is complete by ``evals.truncation.truncate_generation``
(the completion pipeline's rule; ``reference_cut`` below is the reference harness's simpler cut).

A sample line is ``{"task_id", "completion_id", "prompt", "generation"}``: the reference
harness's field names, so files are interchangeable. A request's lines are appended
together and flushed as it is answered, by one writer (the calling thread), so a crash
tears at most the last line. A rerun reads the completion ids already there per task
(a torn last line from a crash is dropped) and asks only for the grid batches that miss
some (``evals.batches``): every completion id keeps the seed of its position.

``settings.concurrency`` requests are kept in flight at once (for servers: vLLM, TGI,
llama.cpp's server, ``codeglm serve-api``); the samples a task gets do not depend on it,
only the order of the file's lines does (``execute`` keys by task id and completion id).
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
from evals.batches import Batch, batch_seed, plan_batches, run_batches
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
    concurrency: int = 1  # backend requests in flight at once


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


def existing_ids(path: Path) -> dict[str, set[int]]:
    """The completion ids per task already in ``path``; rewrites it without a torn last line.

    A line without an integer ``completion_id`` has the id ``execute`` gives it: its index
    among its task's lines.
    """
    found: dict[str, set[int]] = {}
    if not path.exists():
        return found
    kept: list[str] = []
    lines_per_task: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                task_id = record["task_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if not isinstance(task_id, str):
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
            index = lines_per_task.get(task_id, 0)
            lines_per_task[task_id] = index + 1
            given = record.get("completion_id")
            valid = isinstance(given, int) and not isinstance(given, bool)
            found.setdefault(task_id, set()).add(given if valid else index)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)
    return found


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


def sampling_params(settings: GenerateSettings, seed: int | None) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        seed=seed,
    )


Answer = tuple[list[Completion], str | None]


def ask_batch(
    backend: object, batch: Batch, prompt: str, settings: GenerateSettings, label: str | None = None
) -> Answer:
    """The completions of one grid batch (``batch.count`` of them), or empty ones and the reason
    (said on stderr with ``label``, by default the task id)."""
    params = sampling_params(settings, batch_seed(settings.seed, batch.number, batch.start))
    request = GenerationRequest(prompt=prompt, params=params, n=batch.count)
    completions, error = generate_or_error(backend, request, label or batch.key)
    if len(completions) < batch.count:
        raise RuntimeError(f"the backend returned {len(completions)} of the {batch.count} completions asked for "
                           f"{label or batch.key}")
    return completions, error


def batch_lines(batch: Batch, answer: Answer, line: Callable[[int, Completion], dict]) -> list[str]:
    """The JSON lines of the ids ``batch`` still wants, ``line(completion_id, completion)`` each."""
    completions, error = answer
    lines = []
    for offset, completion in enumerate(completions[: batch.count]):
        completion_id = batch.start + offset
        if completion_id not in batch.wanted:
            continue
        record = line(completion_id, completion)
        if error is not None:
            record["error"] = error
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return lines


def generate_samples(
    backend: object,
    tasks: list[Task],
    settings: GenerateSettings,
    output: Path,
    truncate: Truncate | None = None,
    progress: bool = True,
) -> int:
    """Append samples until each task has ids ``0..settings.n-1`` in ``output``; returns how many were made."""

    cut = truncate or load_truncate()
    present = existing_ids(output)
    by_id = {task.task_id: task for task in tasks}
    prompts = {task.task_id: model_prompt(task) for task in tasks}
    batches = [
        batch
        for task in tasks
        for batch in plan_batches(
            task.task_id, task.number, settings.n, settings.batch_size, present.get(task.task_id, set())
        )
    ]
    total = sum(len(batch.wanted) for batch in batches)
    bar = None
    if progress and total:
        bar = tqdm(total=total, unit="sample", desc="generate", file=sys.stderr, smoothing=0.1)
    made = 0
    output.parent.mkdir(parents=True, exist_ok=True)

    def ask(batch: Batch) -> Answer:
        return ask_batch(backend, batch, prompts[batch.key], settings)

    try:
        with open(output, "a", encoding="utf-8") as handle:
            for batch, answer in run_batches(batches, ask, settings.concurrency):
                task = by_id[batch.key]

                def line(completion_id: int, completion: Completion, task: Task = task) -> dict:
                    text = cut(task.language, generation_prompt(task), completion.text)
                    return {"task_id": task.task_id, "completion_id": completion_id, "prompt": task.prompt,
                            "generation": text}

                lines = batch_lines(batch, answer, line)
                handle.write("".join(lines))
                handle.flush()
                made += len(lines)
                if bar is not None:
                    bar.update(len(lines))
    finally:
        if bar is not None:
            bar.close()
    return made
