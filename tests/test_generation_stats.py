"""What the engine's last generation did, as the servers report it: serve-api's
``GET /stats`` (``last_generation``) and the language server's ``codeglm/stats``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from _backends_fixtures import ServeApi, shared_tiny_model_dir
from test_lsp_server import inline_params, open_document, start_client, wait_for_state

from codeglm.backends import last_generation, load_backend

STATS_KEYS = {"prompt_tokens", "reused_prefix_tokens", "prefill_seconds", "decode_steps", "decode_seconds",
              "speculative_steps", "drafted_tokens", "accepted_draft_tokens", "rows",
              "dropped_rows"}


def test_serve_api_stats_report_the_last_generation(tmp_path_factory: pytest.TempPathFactory) -> None:
    api = ServeApi(f"native:{shared_tiny_model_dir(tmp_path_factory)}")
    try:
        body = {"prompt": "def f(x):\n    ", "max_tokens": 9, "temperature": 0}
        usage = httpx.post(f"{api.url}/v1/completions", json=body, timeout=60).json()["usage"]
        last = api.stats()["last_generation"]
        assert set(last) == STATS_KEYS
        assert last["prompt_tokens"] == usage["prompt_tokens"]
        assert last["decode_steps"] == usage["completion_tokens"] - 1 and last["decode_seconds"] > 0
    finally:
        api.stop()


def test_backends_that_do_not_measure_report_none(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert last_generation(load_backend("openai:http://127.0.0.1:9/v1#m")) is None
    native = load_backend(f"native:{shared_tiny_model_dir(tmp_path_factory)}")
    assert set(last_generation(native) or {}) == STATS_KEYS


@pytest.mark.asyncio(loop_scope="function")
async def test_the_language_server_reports_the_last_generation(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client, recorder = await start_client(f"native:{shared_tiny_model_dir(tmp_path_factory)}",
                                          options={"codeglm": {"maxTokens": 12}})
    try:
        await wait_for_state(recorder, "ready")
        uri = open_document(client, tmp_path / "a.py", "python", "def add(a, b):\n    ")
        await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
        stats = await client.protocol.send_request_async("codeglm/stats", None)
        last = stats["lastGeneration"] if isinstance(stats, dict) else stats.lastGeneration
        last = last if isinstance(last, dict) else last._asdict()
        assert set(last) == STATS_KEYS
        assert last["prompt_tokens"] > 0 and 0 <= last["decode_steps"] <= 11
    finally:
        await client.shutdown_session()
