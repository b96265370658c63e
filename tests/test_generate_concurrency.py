"""``codeglm eval generate --concurrency N`` through the ``openai:`` backend, over real HTTP.

Against ``codeglm serve-api`` (the tiny model): seeded samples are the same with 1 and 4
requests in flight. Against a small recording server (a real HTTP server implementing ``/v1/completions``):
exactly N requests are in flight at once (the first N wait for each other at a barrier, so
the count does not depend on timing), the server's kind is probed once however many
threads start together, and resume asks for exactly the grid batches a file is missing,
with the seeds of their positions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends_fixtures import PROJECT, ServeApi, shared_tiny_model_dir

from codeglm.backends import load_backend
from codeglm.cli import main
from evals.batches import batch_seed, plan_batches, run_batches
from evals.dataset import load_tasks
from evals.generate import GenerateSettings, generate_samples
from evals.openai_stub import StubCompletionsServer

GENERATE = ["eval", "generate", "--language", "python", "--limit", "3", "--n", "8", "--batch-size", "2",
            "--max-tokens", "12", "--temperature", "0.8", "--seed", "7", "--no-progress"]


def sample_set(path: Path) -> set[tuple[str, int, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(r["task_id"], r["completion_id"]) for r in records]
    assert len(keys) == len(set(keys)), "a (task_id, completion_id) written twice"
    return {(r["task_id"], r["completion_id"], r["generation"]) for r in records}


# --- against codeglm serve-api ------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeApi]:
    # Each request computed alone and whole, the same way every time: no batching with other
    # requests, no prefix cache. Both change a row's arithmetic slightly (padding, a cached
    # prefix), which can flip a sampled token (docs/humaneval-x.md: "A full pass@k table on a
    # cluster"); what this test checks is the harness: it asks the same requests whatever N.
    model = shared_tiny_model_dir(tmp_path_factory)
    api = ServeApi(f"native:{model}?prefix_cache=0", "--max-batch-requests", "1")
    yield api
    api.stop()


def test_samples_do_not_depend_on_concurrency(serve_api: ServeApi, tmp_path: Path) -> None:
    backend = f"openai:{serve_api.url}/v1?retries=0"
    one, four = tmp_path / "one.jsonl", tmp_path / "four.jsonl"
    assert main([*GENERATE, "--backend", backend, "--concurrency", "1", "-o", str(one)]) == 0
    assert main([*GENERATE, "--backend", backend, "--concurrency", "4", "-o", str(four)]) == 0
    samples = sample_set(one)
    assert len(samples) == 3 * 8 and samples == sample_set(four)
    assert not any('"error"' in line for line in four.read_text().splitlines())
    assert len({generation for _, _, generation in samples}) > 3  # sampled, not all alike
    assert serve_api.stats()["batching"]["requests"] == 2 * 3 * 4


# --- against a recording server -----------------------------------------------------------


class RecordingServer(StubCompletionsServer):
    """``/v1/models`` and ``/v1/completions`` on a loopback port. Choice ``i`` of a request
    seeded ``s`` is ``return s+i``; each request's (seed, n) is recorded, and the most
    requests in flight at once. The first ``wave`` completions wait at a barrier until all
    ``wave`` are in flight (20 s at most, then the barrier breaks and they are 500s)."""

    def __init__(self, wave: int = 1, hang_after: int | None = None) -> None:
        self.hang_after = hang_after  # completions after this many never answer (until stop)
        self.stopping = threading.Event()
        self.requests: list[tuple[int, int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.wave = wave
        self.barrier = threading.Barrier(wave, timeout=20)
        self.broken = False
        super().__init__("recorder")

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            waits = len(self.requests) < self.wave
            hangs = self.hang_after is not None and len(self.requests) >= self.hang_after
            self.requests.append((body["seed"], body["n"]))
        try:
            if hangs:
                self.stopping.wait()
                return 503, {"error": {"message": "stopped"}}
            if waits and self.wave > 1:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    self.broken = True
                    return 500, {"error": {"message": "fewer requests in flight than the test wants"}}
            choices = [{"index": i, "text": f"    return {body['seed'] + i}\n", "finish_reason": "stop"}
                       for i in range(body["n"])]
            return 200, {"object": "text_completion", "choices": choices}
        finally:
            with self.lock:
                self.in_flight -= 1

    def stop(self) -> None:
        self.stopping.set()
        super().stop()


@pytest.fixture()
def python_tasks() -> list:
    found, _ = load_tasks(["python"])
    return [task for task in found.values() if task.number < 3]


def test_n_requests_are_in_flight_at_once_and_the_server_is_probed_once(tmp_path: Path) -> None:
    server = RecordingServer(wave=4)
    try:
        out = tmp_path / "samples.jsonl"
        status = main(["eval", "generate", "--backend", f"openai:{server.url}/v1?retries=0", "--language", "python",
                       "--limit", "3", "--n", "8", "--batch-size", "2", "--seed", "5", "--concurrency", "4",
                       "--no-progress", "-o", str(out)])
    finally:
        server.stop()
    assert status == 0 and not server.broken
    assert server.most_in_flight == 4  # never more than asked, and that many did overlap
    assert len(server.requests) == 3 * 4
    assert server.paths.count("POST /extras/tokenize/count") == 1  # one probe, not one per thread
    assert server.paths.count("GET /v1/models") == 2  # the model, then its context length: once each
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 * 8
    for line in lines:  # every completion id is the position its seed was computed for
        number = int(line["task_id"].split("/")[1])
        assert line["generation"] == f"    return {batch_seed(5, number, 0) + line['completion_id']}"


def test_resume_generates_exactly_the_missing_batches_with_their_seeds(python_tasks: list, tmp_path: Path) -> None:
    settings = GenerateSettings(n=12, batch_size=4, seed=3, max_new_tokens=8, concurrency=4)
    server = RecordingServer()
    backend = load_backend(f"openai:{server.url}/v1?retries=0")
    try:
        whole = tmp_path / "whole.jsonl"
        assert generate_samples(backend, python_tasks, settings, whole, progress=False) == 3 * 12
        reference = whole.read_text().splitlines()

        # Python/0: a later batch (8..11) written, an earlier one (4..7) lost; Python/1: a batch
        # torn by a crash (ids 0..2 of 0..3 written); Python/2 complete. Lines out of order.
        def kept(line: str) -> bool:
            record = json.loads(line)
            task, cid = record["task_id"], record["completion_id"]
            return not ((task == "Python/0" and 4 <= cid <= 7) or (task == "Python/1" and cid == 3))

        partial = [line for line in reference if kept(line)]
        random.Random(0).shuffle(partial)
        resumed = tmp_path / "resumed.jsonl"
        resumed.write_text("\n".join(partial) + "\n" + '{"task_id": "Python/1", "gen')  # and a torn last line
        server.requests.clear()
        made = generate_samples(backend, python_tasks, settings, resumed, progress=False)
    finally:
        backend.close()
        server.stop()
    assert made == 4 + 1
    # Python/0's batch from 4, and Python/1's torn batch asked for whole (its own seed) with only id 3 written.
    assert sorted(server.requests) == sorted([(batch_seed(3, 0, 4), 4), (batch_seed(3, 1, 0), 4)])
    assert sample_set(resumed) == sample_set(whole)


def test_plan_batches_follow_the_grid() -> None:
    batches = plan_batches("Python/0", 0, 10, 4, {0, 1, 2, 3, 5, 9})
    assert [(b.start, b.count, sorted(b.wanted)) for b in batches] == [(4, 4, [4, 6, 7]), (8, 2, [8])]
    assert plan_batches("Python/0", 0, 3, 4, set()) == plan_batches("Python/0", 0, 3, 4, {7})


def test_run_batches_in_order_alone_and_raises_what_a_request_raises() -> None:
    assert list(run_batches(range(5), lambda b: b * b, 1)) == [(b, b * b) for b in range(5)]
    assert sorted(run_batches(range(9), lambda b: -b, 3)) == [(b, -b) for b in range(9)]

    def fail(b: int) -> int:
        if b == 4:
            raise RuntimeError("boom")
        return b

    with pytest.raises(RuntimeError, match="boom"):
        list(run_batches(range(9), fail, 3))


# --- in-process backends ------------------------------------------------------------------


@pytest.mark.parametrize("command", [["eval", "generate"], ["eval", "translate", "generate", "--pairs", "python-to-go"]])
def test_in_process_backends_refuse_concurrency(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for backend in ("native:/no/such/model", "hf:/no/such/model"):
        status = main([*command, "--backend", backend, "--concurrency", "2", "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 2
        assert "--concurrency 2 needs a backend that serves requests concurrently (openai:URL)" in err
        assert backend in err and "serve-api" in err
    assert not (tmp_path / "out").exists()


def test_concurrency_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "generate", "--concurrency", "0", "-o", "x"])
    assert "--concurrency: must be >= 1, got 0" in capsys.readouterr().err


def test_translate_generate_shares_concurrency_and_seeds(tmp_path: Path) -> None:
    runs = {}
    for level in (1, 3):
        server = RecordingServer(wave=level)  # with 3: the first three requests wait for each other
        try:
            run_dir = tmp_path / f"run-{level}"
            status = main(["eval", "translate", "generate", "--backend", f"openai:{server.url}/v1?retries=0",
                           "--pairs", "python-to-go", "--limit", "3", "--n", "4", "--batch-size", "2", "--seed", "9",
                           "--concurrency", str(level), "--no-progress", "-o", str(run_dir)])
        finally:
            server.stop()
        assert status == 0 and not server.broken and server.most_in_flight == level
        runs[level] = sample_set(run_dir / "python-to-go" / "samples.jsonl")
    assert len(runs[1]) == 3 * 4 and runs[1] == runs[3]
    for task_id, completion_id, generation in runs[3]:
        number = int(task_id.split("/")[1])
        assert f"return {batch_seed(9, number, 0) + completion_id}" in generation


def test_ctrl_c_with_requests_in_flight_exits_at_once_and_the_rerun_completes(tmp_path: Path) -> None:
    server = RecordingServer(hang_after=2)  # two requests answered, the next ones never
    out = tmp_path / "samples.jsonl"
    command = [sys.executable, "-m", "codeglm.cli", "eval", "generate", "--language", "python", "--limit", "3",
               "--n", "8", "--batch-size", "2", "--seed", "4", "--concurrency", "4", "--no-progress", "-o", str(out)]
    try:
        process = subprocess.Popen([*command, "--backend", f"openai:{server.url}/v1?retries=0&timeout=300"],
                                   cwd=PROJECT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(server.requests) >= 5 and out.exists()
                                                   and len(out.read_text().splitlines()) == 4):
            time.sleep(0.1)
        assert len(out.read_text().splitlines()) == 4  # two batches written; four requests hang
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        process.wait(timeout=20)
        assert time.monotonic() - started < 10  # did not wait for the hanging requests
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    assert process.returncode != 0
    written = [json.loads(line) for line in out.read_text().splitlines()]  # whole lines only
    assert len(written) == 4
    second = RecordingServer()
    try:
        rerun = subprocess.run([*command, "--backend", f"openai:{second.url}/v1?retries=0"], cwd=PROJECT,
                               capture_output=True, text=True, timeout=120)
    finally:
        second.stop()
    assert rerun.returncode == 0, rerun.stderr
    assert len(second.requests) == 3 * 4 - 2  # only the batches not written before
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["task_id"], r["completion_id"]) for r in records) == sorted(
        (f"Python/{number}", cid) for number in range(3) for cid in range(8))
    for record in records:
        number = int(record["task_id"].split("/")[1])
        assert record["generation"] == f"    return {batch_seed(4, number, 0) + record['completion_id']}"
