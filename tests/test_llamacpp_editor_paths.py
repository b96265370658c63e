"""The editor's paths over a server that is not ours: the language server's inline
completion (with a suffix, so fill-in-the-middle) and ``codeglm translate``, each with
``--backend openai:URL#MODEL`` pointed at llama.cpp's server, give what the project's own
engine gives on the same weights (tests/_llamacpp_fixtures.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _llamacpp_fixtures import LlamaCppServer, as_llama_cpp_python_decodes, llamacpp_missing, make_llama_dir
from lsprotocol import types
from test_lsp_server import (
    close_document,
    expected,
    inline_params,
    open_document,
    start_client,
    wait_for_state,
)

from codeglm.backends import load_backend
from codeglm.cli.translate import EXIT_UNITS_FAILED

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(llamacpp_missing() is not None, reason=str(llamacpp_missing())),
]

PROJECT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 24
JAVA = """public class Geometry {
    public static int square(int x) {
        return x * x;
    }
}
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from codeglm.model.gguf_export import write_gguf

    directory = make_llama_dir(tmp_path_factory.mktemp("tiny-llama-editor") / "model")
    gguf = directory.parent / "model-f32.gguf"
    write_gguf(directory, gguf)
    return directory, gguf


@pytest.fixture(scope="module")
def server(model_files: tuple[Path, Path]) -> Iterator[LlamaCppServer]:
    running = LlamaCppServer(model_files[1], model_files[1].parent / "server.log")
    yield running
    running.stop()


@pytest.mark.asyncio
async def test_inline_completion_with_a_suffix_over_llama_cpp(
    server: LlamaCppServer, model_files: tuple[Path, Path], tmp_path: Path
) -> None:
    text = "def add(a, b):\n    # \n    return a + b\n\n\nprint(add(1, 2))\n"
    line, character = 1, 6
    native = load_backend(f"native:{model_files[0]}")
    try:
        want = expected(native, text, line, character, "python", tmp_path / "add.py", MAX_TOKENS)
    finally:
        native.close()
    assert want is not None and want.text  # random weights still write words in a comment
    client, recorder = await start_client(server.backend_spec(), options={"codeglm": {"maxTokens": MAX_TOKENS}})
    try:
        await wait_for_state(recorder, "ready")
        uri = open_document(client, tmp_path / "add.py", "python", text)
        result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
        assert isinstance(result, types.InlineCompletionList) and len(result.items) == 1
        assert result.items[0].insert_text == as_llama_cpp_python_decodes(want.text)
        close_document(client, uri)
    finally:
        await client.shutdown_session()


def _translate(source: Path, backend: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeglm.cli", "translate", str(source), "--to", "python", "--backend", backend,
         "--max-tokens", "24", "--retries", "0"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )


def test_translate_a_java_file_over_llama_cpp(server: LlamaCppServer, model_files: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    outputs: dict[str, Any] = {}
    for name, backend in (("native", f"native:{model_files[0]}"), ("llamacpp", server.backend_spec())):
        (tmp_path / name).mkdir()
        source = tmp_path / name / "Geometry.java"
        source.write_text(JAVA, encoding="utf-8")
        run = _translate(source, backend)
        output = tmp_path / name / "geometry.py"
        assert run.returncode in (0, EXIT_UNITS_FAILED), run.stderr  # random weights: a unit may fail
        assert "Java -> Python:" in run.stderr and f"wrote {output}" in run.stderr
        outputs[name] = (run.returncode, output.read_text(encoding="utf-8"))
    returncode, text = outputs["native"]
    assert outputs["llamacpp"] == (returncode, as_llama_cpp_python_decodes(text))
