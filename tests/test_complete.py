"""The whole completion pipeline: ``complete()`` and ``codeglm complete``.

Two backends: the benchmark's oracle (it "generates" a fixed text token by token and
honours the finished callback as the engine does) for the pipeline's plumbing, and a
real native backend over a tiny CodeGeeX model trained here for a few seconds to
memorize three functions, to show that generation really stops early.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codeglm.backends import load_backend
from codeglm.backends.base import CancelToken
from codeglm.cli import main
from codeglm.completion.parse_cache import parse_text
from codeglm.completion.pipeline import CompletionRequest, ContextCache, OpenDocument, complete
from codeglm.languages import UnsupportedLanguageError, get_language
from codeglm.model.codegeex import CodeGeeXForCausalLM
from codeglm.model.config import CodeGeeXConfig
from codeglm.model.tokenizer import load_tokenizer
from evals.completion_bench import OracleBackend


def oracle(continuation: str, context_length: int = 2048) -> OracleBackend:
    backend = OracleBackend(context_length)
    backend.continuation = continuation
    return backend


def test_block_completion_end_to_end() -> None:
    text = "def area(r):\n\n\nprint(area(2))\n"
    backend = oracle("\n    return 3.14 * r * r\n\n\ndef perimeter(r):\n    return 2 * 3.14 * r\n")
    result = complete(CompletionRequest(text, 0, 12, "python", path="geo.py", max_new_tokens=64), backend)
    assert result is not None
    assert result.text == "\n    return 3.14 * r * r"
    assert result.multiline and result.finish_reason == "stop"
    assert result.generated_tokens < 20  # stopped at "def", not at 64
    assert (result.line, result.character, result.replace_end_character) == (0, 12, 12)
    assert 0 < result.prompt_tokens <= 2048 - 64


def test_windows_line_endings_come_back_as_crlf() -> None:
    text = "int f(int x) {\r\n    if (x > 0) {\r\n    return 0;\r\n}\r\n"
    backend = oracle("\n        return 1;\n    }\n    return 0;\n}\n")
    result = complete(CompletionRequest(text, 1, 16, "c"), backend)
    assert result is not None
    assert result.text == "\r\n        return 1;\r\n    }"


def test_auto_closed_brace_is_reported_as_replaced() -> None:
    text = "function f(a) {}\n"
    result = complete(CompletionRequest(text, 0, 15, "javascriptreact"), oracle("\n  return a;\n}\n\nf(1);\n"))
    assert result is not None
    assert result.text == "\n  return a;\n}"
    assert (result.character, result.replace_end_character) == (15, 16)


def test_single_line_in_the_middle_of_a_line() -> None:
    text = "values = [abs(x) for x in range(10)]\ntotal = sum()\n"
    result = complete(CompletionRequest(text, 1, 12, "python"), oracle("values)\nprint(total)\n"))
    assert result is not None and not result.multiline
    assert result.text == "values"


def test_definitions_from_open_documents_reach_the_prompt() -> None:
    seen: list[str] = []

    class Recording(OracleBackend):
        def generate(self, request, cancel=None):
            seen.append(request.prompt)
            return super().generate(request, cancel)

    backend = Recording()
    backend.continuation = "scale(v, 2)\n"
    request = CompletionRequest(
        "from vec import scale\n\nv = [1, 2]\nw = \n",
        3,
        4,
        "python",
        path="main.py",
        open_documents=(
            OpenDocument("vec.py", "python", "def scale(v, k):\n    return [k * x for x in v]\n"),
            OpenDocument("notes.md", "markdown", "# not code"),
        ),
    )
    result = complete(request, backend)
    assert result is not None and result.text == "scale(v, 2)"
    assert "# Compare this snippet from vec.py:\n# def scale(v, k):\n" in seen[0]
    assert seen[0].startswith("# language: Python\n# path: main.py\n")


def test_cancelled_gives_none_and_empty_says_why() -> None:
    cancel = CancelToken()
    cancel.cancel()
    request = CompletionRequest("x = \n", 0, 4, "python")
    assert complete(request, oracle("1\n"), cancel) is None
    result = complete(request, oracle("   \n"))
    assert result is not None and result.text == "" and result.dropped == "the model wrote nothing but whitespace"
    assert result.prompt == "# language: Python\nx = "


def test_unsupported_language_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedLanguageError, match="supported"):
        complete(CompletionRequest("x", 0, 0, "cobol"), oracle("y"))
    # ... unless the path tells.
    result = complete(CompletionRequest("x = \n", 0, 4, "plaintext", path="a.py"), oracle("1\n"))
    assert result is not None and result.text == "1"


def test_context_cache_follows_document_versions() -> None:
    cache = ContextCache()
    texts = ["def f(x):\n    return \n", "def f(x, y):\n    return \n", "def f(x, y):\n    return \n"]
    for version, text in enumerate(texts, 1):
        request = CompletionRequest(text, 1, 11, "python", document_key="file:///f.py", version=version)
        assert complete(request, oracle("x\n"), cache=cache) is not None
    assert cache.full_parses == 1
    assert cache.incremental_parses == 1
    assert cache.hits == 1


def test_junk_never_reaches_the_user() -> None:
    """The tiny default model answers a Python body with lines of ``//``: nothing is
    shown, and generation stops a few lines in instead of at the token limit."""
    text = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    \n'
    backend = oracle("//\n    " * 40)
    request = CompletionRequest(text, 2, 4, "python", path="fib.py", max_new_tokens=64)
    dropped = complete(request, backend)
    assert dropped is not None and dropped.text == ""
    assert dropped.dropped is not None and dropped.dropped.startswith("not valid Python from its first line")
    backend.continuation = "a, b = 0, 1\n    " + "//\n    " * 40
    result = complete(request, backend)
    assert result is not None and result.text == "a, b = 0, 1"
    assert result.finish_reason == "stop" and result.generated_tokens < 25


def test_text_without_a_document_key_stays_out_of_the_cache() -> None:
    """The server sends a window of the document (``contextLines``) without a key: it
    must not be cached under the document's path, where the whole text belongs."""
    cache = ContextCache()
    request = CompletionRequest("def f(x):\n    return \n", 1, 11, "python", path="f.py", version=4)
    for _ in range(2):
        assert complete(request, oracle("x\n"), cache=cache) is not None
    assert (cache.full_parses, cache.hits) == (2, 0)


# --- a real model ---------------------------------------------------------------------------------

MEMORIZED = (
    "# language: Python\n# path: ops.py\n"
    "def add(a, b):\n    return a + b\n\n\n"
    "def sub(a, b):\n    return a - b\n\n\n"
    "def mul(a, b):\n    return a * b\n"
)


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CodeGeeX model that has memorized MEMORIZED (its embeddings stay random)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        tokenizer = load_tokenizer()
        ids = torch.tensor([tokenizer.encode(MEMORIZED)])
        config = CodeGeeXConfig(
            vocab_size=50400, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=128,
        )
        model = CodeGeeXForCausalLM(config)
        model.get_input_embeddings().weight.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(200):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if loss.item() < 0.01:
                break
        directory = tmp_path_factory.mktemp("memorized")
        model.save_pretrained(directory)
        tokenizer.save(directory)
        return directory
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_real_model_stops_early_through_the_finished_callback(trained_model_dir: Path) -> None:
    backend = load_backend(f"native:{trained_model_dir}")
    try:
        # The model would go on with "def sub..."; the block closes before that.
        request = CompletionRequest("def add(a, b):\n", 0, 14, "python", path="ops.py", max_new_tokens=40)
        result = complete(request, backend)
    finally:
        backend.close()
    assert result is not None
    assert result.text == "\n    return a + b"
    assert result.finish_reason == "stop"
    assert result.generated_tokens < 40
    assert "def sub" in result.raw_text or len(result.raw_text) < len(MEMORIZED)


@pytest.mark.slow
def test_cli_prints_the_completion(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("ops.py").write_text("def add(a, b):\n")
    code = main(["complete", "ops.py", "--line", "0", "--col", "14", "--backend", f"native:{trained_model_dir}",
                 "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["text"] == "\n    return a + b"
    assert payload["generated_tokens"] < 64


@pytest.mark.slow
def test_cli_with_the_default_model_shows_no_junk(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's first command. The tiny default model wrote lines of ``//`` into the
    Python body here; whatever it writes, what the CLI prints is Python that fits, or
    nothing and a note saying so."""
    example = Path(__file__).parent.parent / "examples" / "fib.py"
    assert main(["complete", str(example), "--line", "2", "--col", "4"]) == 0
    captured = capsys.readouterr()
    if captured.out.strip():
        lines = example.read_text().split("\n")
        lines[2] = lines[2][:4] + captured.out.rstrip("\n") + lines[2][4:]
        assert not parse_text(get_language("python"), "\n".join(lines)).root_node.has_error, captured.out
    else:
        assert "no completion at line 2, column 4" in captured.err and "not valid Python" in captured.err


def test_cli_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["complete", str(notes), "--line", "0", "--col", "0", "--backend", "native:/nowhere"]) == 2
    assert "pass --language" in capsys.readouterr().err
    code = tmp_path / "a.py"
    code.write_text("x = 1\n")
    assert main(["complete", str(code), "--line", "0", "--col", "0", "--backend", "native:/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("codeglm complete:") and "Traceback" not in err


def test_fill_in_the_middle_backend_gets_the_suffix_aside() -> None:
    requests = []

    class FimOracle(OracleBackend):
        supports_fim = True

        def generate(self, request, cancel=None):
            requests.append(request)
            return super().generate(request, cancel)

    backend = FimOracle()
    backend.continuation = "x * 2\n"
    text = "def f(x):\n    y = \n    return y\n"
    result = complete(CompletionRequest(text, 1, 8, "python"), backend)
    assert result is not None and result.text == "x * 2"
    assert requests[0].suffix == "\n    return y\n"
    assert requests[0].prompt.endswith("def f(x):\n    y = ")


@pytest.mark.slow
def test_readme_command_completes_with_code_that_parses(capsys: pytest.CaptureFixture[str]) -> None:
    """README's first command (the default model on examples/MathUtil.java) prints a
    completion, and the file with it inserted parses as Java."""
    example = Path(__file__).parent.parent / "examples" / "MathUtil.java"
    assert main(["complete", str(example), "--line", "5", "--col", "8"]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out.strip()
    lines = example.read_text().split("\n")
    lines[5] = lines[5][:8] + out + lines[5][8:]
    assert not parse_text(get_language("java"), "\n".join(lines)).root_node.has_error, out


def test_cli_json_shows_prompt_snippets_and_why_nothing_was_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--json`` always prints an object: the prompt, its snippets with source and path (a
    definition from a file that is not open, found through the workspace), and ``dropped``."""
    project = tmp_path / "shop"
    (project / ".git").mkdir(parents=True)
    (project / "orders.py").write_text("def parse_order(raw: str, strict: bool) -> dict:\n    return {}\n")
    (project / "app.py").write_text("from orders import parse_order\n\nx = parse_order(\n")
    backend = oracle("   \n")
    monkeypatch.setattr("codeglm.cli.complete.load_backend", lambda spec: backend)
    assert main(["complete", str(project / "app.py"), "--line", "2", "--col", "16", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == "" and payload["dropped"] == "the model wrote nothing but whitespace"
    assert "# def parse_order(raw: str, strict: bool) -> dict: ..." in payload["prompt"]
    assert payload["prompt"].endswith("x = parse_order(")
    assert {"source": "import", "path": "orders.py", "name": "parse_order"}.items() <= payload["snippets"][0].items()
    # --workspace elsewhere: nothing to import from there.
    other = tmp_path / "empty"
    other.mkdir()
    assert main(["complete", str(project / "app.py"), "--line", "2", "--col", "16", "--json",
                 "--workspace", str(other)]) == 0
    assert json.loads(capsys.readouterr().out)["snippets"] == []
    backend.continuation = "raw, True)\n"
    assert main(["complete", str(project / "app.py"), "--line", "2", "--col", "16", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == "raw, True)" and payload["dropped"] is None


class SeededOracle(OracleBackend):
    """Writes a continuation chosen by the request's seed (None: greedy), as sampling would."""

    def __init__(self, by_seed: dict[int | None, str]) -> None:
        super().__init__(2048)
        self.by_seed = by_seed
        self.asked: list[tuple[int | None, float]] = []

    def generate(self, request, cancel=None):
        self.asked.append((request.params.seed, request.params.temperature))
        self.continuation = self.by_seed[request.params.seed]
        return super().generate(request, cancel)


def test_several_candidates_are_distinct_after_post_processing() -> None:
    text = "def area(r):\n    return \n"
    backend = SeededOracle({None: "3.14 * r * r\n", 1: "3.14 * r * r\n\nprint(1)\n", 2: "r ** 2 * 3.14159\n",
                            3: "))) junk\n"})
    request = CompletionRequest(text, 1, 11, "python", max_new_tokens=32, candidates=4)
    result = complete(request, backend)
    assert result is not None and result.text == "3.14 * r * r"
    # Seed 1 post-processes to the same text as the first; seed 3 is junk: neither is offered again.
    assert [r.text for r in result.alternatives] == ["r ** 2 * 3.14159"]
    assert backend.asked == [(None, 0.0), (1, 0.8), (2, 0.8), (3, 0.8)]
    # One candidate (typing): one generation.
    backend.asked.clear()
    assert complete(CompletionRequest(text, 1, 11, "python"), backend).alternatives == ()
    assert backend.asked == [(None, 0.0)]
    # When the first is junk, a later one leads.
    backend.by_seed[None] = "))) junk\n"
    result = complete(request, backend)
    assert result.text == "3.14 * r * r" and [r.text for r in result.alternatives] == ["r ** 2 * 3.14159"]
