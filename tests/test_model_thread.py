"""The one thread that runs a process's model math (``codeglm.inference.model_thread``):
results and errors come back to the caller, generators advance in lockstep with their
readers, nested calls do not deadlock, and the engine's steps run there whichever
thread asks."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

import pytest
from _backends_fixtures import shared_tiny_model_dir

from codeglm.backends import GenerationRequest, SamplingParams, load_backend
from codeglm.inference import model_thread


def test_run_returns_results_and_raises_errors_from_the_model_thread() -> None:
    assert model_thread.run(lambda: threading.current_thread().name) == "codeglm-model"
    assert not model_thread.on_model_thread()
    with pytest.raises(ZeroDivisionError):
        model_thread.run(lambda: 1 / 0)
    # Nested: work already on the model thread runs there directly.
    assert model_thread.run(lambda: model_thread.run(lambda: 7) + 1) == 8


def test_relay_computes_nothing_ahead_of_its_reader_and_closes_on_the_model_thread() -> None:
    made: list[int] = []
    closed_on: list[str] = []

    def numbers() -> Generator[int, None, None]:
        try:
            for i in range(100):
                made.append(i)
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    reader = model_thread.relay(numbers())
    assert made == []  # nothing runs before the first next()
    assert [next(reader), next(reader), next(reader)] == [0, 1, 2]
    assert made == [0, 1, 2]
    reader.close()
    model_thread.run(lambda: None)  # the model thread has finished with the generator
    assert closed_on == ["codeglm-model"] and made == [0, 1, 2]


def test_relay_hands_the_generators_error_to_its_reader() -> None:
    def failing() -> Generator[int, None, None]:
        yield 1
        raise ValueError("broken step")

    reader = model_thread.relay(failing())
    assert next(reader) == 1
    with pytest.raises(ValueError, match="broken step"):
        next(reader)
    assert model_thread.run(lambda: 3) == 3  # the model thread goes on


def test_readers_on_several_threads_each_get_their_own_items() -> None:
    def count(start: int) -> Generator[int, None, None]:
        yield from range(start, start + 50)

    results: dict[int, list[int]] = {}

    def read(start: int) -> None:
        results[start] = list(model_thread.relay(count(start)))

    threads = [threading.Thread(target=read, args=(s,)) for s in (0, 100, 200, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {s: list(range(s, s + 50)) for s in (0, 100, 200, 300)}


def test_the_engine_runs_every_step_on_the_model_thread_whoever_asks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model_dir: Path = shared_tiny_model_dir(tmp_path_factory)
    backend = load_backend(f"native:{model_dir}")
    engine = backend.engine  # type: ignore[attr-defined]
    seen: set[str] = set()
    engine.logits_tap = lambda logits: seen.add(threading.current_thread().name)
    request = GenerationRequest("def f(x):\n    ", SamplingParams(max_new_tokens=8, temperature=0.0))
    [on_main] = backend.generate(request)
    out: dict[str, str] = {}
    worker = threading.Thread(target=lambda: out.update(text=backend.generate(request)[0].text), name="a-worker")
    worker.start()
    worker.join(timeout=60)
    engine.logits_tap = None
    assert seen == {"codeglm-model"}
    assert out["text"] == on_main.text
