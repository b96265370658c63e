"""``codeglm complete FILE --line L --col C``: print the completion at a position.

Line and column are 0-based, as in LSP (column in characters of the line). Context comes
from the workspace (``--workspace``, default: the enclosing git work tree, else the file's
directory), indexed before the completion, and from ``--open`` files. ``--json`` prints one
object: the text (empty when nothing is shown, with ``dropped`` saying why), the exact
prompt and its context snippets with their source and path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codeglm.backends import BackendError, ModelFilesError, load_backend
from codeglm.backends.options import add_backend_argument, add_max_tokens_argument
from codeglm.completion.pipeline import (
    CompletionRequest,
    CompletionResult,
    OpenDocument,
    WorkspaceContext,
    complete,
)
from codeglm.completion.workspace_files import find_workspace_root
from codeglm.completion.workspace_index import WorkspaceIndex
from codeglm.languages import UnsupportedLanguageError, get_language, language_for_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the source file")
    parser.add_argument("--line", type=int, required=True, help="0-based line of the cursor")
    parser.add_argument("--col", type=int, required=True, help="0-based column (character) of the cursor")
    add_backend_argument(parser)
    parser.add_argument("--open", action="append", default=[], type=Path, metavar="OTHER_FILE",
                        help="another open document to draw definitions from (repeatable)")
    parser.add_argument("--workspace", type=Path, metavar="DIR",
                        help="the project to draw definitions from (default: the enclosing git work tree, "
                             "else the file's directory)")
    parser.add_argument("--no-workspace", action="store_true", help="use no workspace index (open files only)")
    parser.add_argument("--language", help="language id (default: from the file extension)")
    add_max_tokens_argument(parser, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"codeglm complete: cannot read {path}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    text = _read(args.file)
    try:
        language = get_language(args.language) if args.language else language_for_path(args.file)
    except UnsupportedLanguageError as exc:
        print(f"codeglm complete: {exc}", file=sys.stderr)
        return 2
    if language is None:
        print(f"codeglm complete: cannot tell the language of {args.file}; pass --language", file=sys.stderr)
        return 2
    others = []
    for other in args.open:
        other_language = language_for_path(other)
        if other_language is not None:
            others.append(OpenDocument(str(other), other_language.id, _read(other)))
    request = CompletionRequest(
        text=text,
        line=args.line,
        character=args.col,
        language_id=language.id,
        path=str(args.file),
        open_documents=tuple(others),
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    workspace = None
    if not args.no_workspace:
        root = args.workspace or find_workspace_root(args.file)
        if not root.is_dir():
            print(f"codeglm complete: --workspace {root} is not a directory", file=sys.stderr)
            return 2
        index = WorkspaceIndex(root)
        index.build()
        workspace = WorkspaceContext(index)
    try:
        backend = load_backend(args.backend)
        try:
            result = complete(request, backend, workspace=workspace)
        finally:
            backend.close()
    except (BackendError, ValueError) as exc:
        print(f"codeglm complete: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ModelFilesError) else 1  # a --backend that cannot load is a bad argument
    if args.json:
        print(json.dumps(result_json(result)))
    elif result is not None and result.text:
        sys.stdout.write(result.text + "\n")
    else:
        # Not an error: the model wrote nothing that fits there as code (junk is never shown).
        why = result.dropped if result is not None and result.dropped else "the model's text was empty"
        print(f"codeglm complete: no completion at line {args.line}, column {args.col}: {why}", file=sys.stderr)
    return 0


def result_json(result: CompletionResult | None) -> dict[str, object]:
    """The ``--json`` object: always one, ``text`` possibly empty, ``dropped`` the reason."""
    if result is None:
        return {"text": "", "dropped": "cancelled", "prompt": None, "snippets": []}
    return {
        "text": result.text,
        "dropped": result.dropped,
        "multiline": result.multiline,
        "line": result.line,
        "character": result.character,
        "replace_end_character": result.replace_end_character,
        "prompt_tokens": result.prompt_tokens,
        "generated_tokens": result.generated_tokens,
        "finish_reason": result.finish_reason,
        "latency_ms": round(result.latency_ms, 1),
        "raw_text": result.raw_text,
        "prompt": result.prompt,
        "prompt_suffix": result.prompt_suffix,
        "snippets": [
            {"source": s.source, "kind": s.kind, "name": s.name, "path": s.path, "text": s.text} for s in result.snippets
        ],
    }
