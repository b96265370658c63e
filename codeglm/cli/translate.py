"""``codeglm translate SRC --to LANG``: translate a file (or stdin) into another language.

The output goes to ``-o OUT`` (``-`` for stdout), else next to the source under the
target's conventional name (``FooBar.java`` -> ``foo_bar.py``); reading stdin
(``SRC = -``) writes to stdout unless ``-o`` says otherwise. An existing file is never
overwritten without ``--force``. Progress goes to stderr, a line per unit and per retry
(``unit 2 of 5: retry 1 of 2 for function add (...)``), and a summary ends the run.
Before the model generates anything, one line says how many units the file split into
and roughly how long they will take; past ``--max-units`` (default 500) the command stops
there, writing nothing.
Exit status: 0 all units translated, 3 the file was written but some units failed (they
are in marked comments in it), 1 an error, 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from codeglm.backends.base import Backend, BackendError, ModelFilesError
from codeglm.backends.options import add_backend_argument, add_max_tokens_argument
from codeglm.languages import UnsupportedLanguageError, get_language, language_for_path
from codeglm.translation.budget import DEFAULT_MAX_UNITS, Estimate, TooManyUnitsError, too_many_units_message
from codeglm.translation.naming import convert_name, output_name
from codeglm.translation.pipeline import resolve_pair, translate
from codeglm.translation.progress import progress_line
from codeglm.translation.types import TranslationError, TranslationRequest, TranslationResult, UnitEvent

EXIT_UNITS_FAILED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the file to translate, or - for stdin")
    parser.add_argument(
        "--to", required=True, dest="target", help="target language (python, java, cpp, javascript, go, rust)"
    )
    parser.add_argument(
        "--from", dest="source_language", help="source language (default: from the file extension)"
    )
    parser.add_argument(
        "-o",
        "--output",
        help="output file, or - for stdout (default: the target's conventional name beside SRC)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_backend_argument(parser)
    parser.add_argument(
        "--retries", type=int, default=2, help="retries per unit whose translation does not parse (default 2)"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="first attempt's temperature (default 0: greedy)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        choices=("auto", "units"),
        default="auto",
        help="auto: one piece when the file fits the model's context; units: always per unit",
    )
    add_max_tokens_argument(
        parser, default=None, help="cap on the tokens generated per unit (default: what the unit needs)"
    )
    parser.add_argument(
        "--max-units",
        type=int,
        default=DEFAULT_MAX_UNITS,
        help=f"refuse a file that splits into more units than this, before any generation "
        f"(default {DEFAULT_MAX_UNITS}; 0: no limit)",
    )
    parser.add_argument(
        "--decode-speed",
        type=float,
        metavar="TOK_PER_S",
        help="the model's decode speed for the up-front time estimate (default: measured, else assumed)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no per-unit progress (the summary is still printed)"
    )


def _fail(message: str, status: int = 1) -> int:
    print(f"codeglm translate: {message}", file=sys.stderr)
    return status


def load_backend(spec: str | None) -> Backend:
    """The backend for ``spec`` (None: the default model) through ``codeglm.backends``."""
    try:
        from codeglm.backends import load_backend as loader  # type: ignore[attr-defined]
    except ImportError as exc:
        raise BackendError(
            "this installation has no backend loader (codeglm.backends.load_backend); update codeglm"
        ) from exc
    return loader(spec)


def progress_printer(stream: TextIO) -> Callable[[UnitEvent], None]:
    """An ``on_unit`` callback writing one line per event to ``stream`` (the language
    server's ``$/progress`` words: ``unit 2 of 5: retry 1 of 2 for function add (...)``)."""

    def on_unit(event: UnitEvent) -> None:
        stream.write(progress_line(event) + "\n")
        stream.flush()

    return on_unit


def _resolve_output(args: argparse.Namespace, target_id: str) -> Path | None:
    """Where to write (None: stdout)."""
    if args.output == "-":
        return None
    if args.output:
        return Path(args.output)
    if args.source == "-":
        return None
    source = Path(args.source)
    return source.with_name(output_name(source.name, target_id))


def _write(path: Path, text: str, force: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # "x" refuses an existing file even if one appeared while the model was working.
    with open(path, "w" if force else "x", encoding="utf-8") as handle:
        handle.write(text)


def translate_file(args: argparse.Namespace, backend: Backend) -> int:
    """The command once the backend is loaded (tests call this with their own backend)."""
    plan = _prepare(args)
    if isinstance(plan, int):
        return plan
    return _translate_and_write(args, plan, backend)


def _translate_and_write(
    args: argparse.Namespace, plan: tuple[TranslationRequest, Path | None], backend: Backend
) -> int:
    request, output = plan
    on_unit = None if args.quiet else progress_printer(sys.stderr)
    name = "stdin" if args.source == "-" else args.source

    def on_plan(estimate: Estimate) -> None:
        print(f"codeglm translate: {name}: {estimate.line()}", file=sys.stderr, flush=True)

    try:
        result = translate(request, backend, on_unit=on_unit, on_plan=on_plan)
    except TooManyUnitsError as exc:
        hint = f"raise the limit with --max-units {exc.estimate.units} (0: no limit)"
        return _fail(f"{name}: {too_many_units_message(exc.estimate, exc.limit, hint)}")
    except (TranslationError, BackendError) as exc:
        return _fail(str(exc))
    return _finish(result, output, args.force)


def _prepare(args: argparse.Namespace) -> tuple[TranslationRequest, Path | None] | int:
    """Checks that need no model: languages, input, the output file. An int is an exit status."""
    try:
        if args.source_language:
            source_language = get_language(args.source_language)
        elif args.source == "-":
            return _fail("reading stdin: pass --from LANG to say what language it is", 2)
        else:
            found = language_for_path(args.source)
            if found is None:
                return _fail(
                    f"cannot tell the language of {args.source} from its extension; pass --from LANG", 2
                )
            source_language = found
        source, target = resolve_pair(source_language.id, args.target)
    except (UnsupportedLanguageError, TranslationError) as exc:
        return _fail(str(exc), 2)
    if args.retries < 0:
        return _fail(f"--retries must be >= 0, got {args.retries}", 2)
    if args.max_units < 0:
        return _fail(f"--max-units must be >= 0 (0: no limit), got {args.max_units}", 2)
    if args.decode_speed is not None and not args.decode_speed > 0:
        return _fail(f"--decode-speed must be > 0 tokens per second, got {args.decode_speed}", 2)
    output = _resolve_output(args, target.id)
    if output is not None and output.exists() and not args.force:
        return _fail(f"{output} exists; pass --force to overwrite it or -o to choose another file")
    if args.source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.source).read_text(encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot read {args.source}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            return _fail(f"{args.source} is not UTF-8 text")
    stem = output.stem if output is not None else (Path(args.source).stem if args.source != "-" else "Main")
    request = TranslationRequest(
        source=text,
        source_language=source.id,
        target_language=target.id,
        class_name=convert_name(stem, "PascalCase"),
        max_retries=args.retries,
        temperature=args.temperature,
        seed=args.seed,
        split=args.split,
        max_new_tokens=args.max_tokens,
        max_units=args.max_units,
        tokens_per_second=args.decode_speed,
    )
    return request, output


def _finish(result: TranslationResult, output: Path | None, force: bool) -> int:
    if output is None:
        sys.stdout.write(result.text)
        sys.stdout.flush()
        where = "stdout"
    else:
        try:
            _write(output, result.text, force)
        except FileExistsError:
            return _fail(f"{output} appeared while translating; not overwritten (pass --force)")
        except OSError as exc:
            return _fail(f"cannot write {output}: {exc.strerror or exc}")
        where = str(output)
    source = get_language(result.source_language).display_name
    target = get_language(result.target_language).display_name
    parses = "parses" if result.parses else "DOES NOT PARSE"
    print(
        f"codeglm translate: {source} -> {target}: {result.summary()}; wrote {where} ({parses})",
        file=sys.stderr,
    )
    return EXIT_UNITS_FAILED if result.failed_units else 0


def run(args: argparse.Namespace) -> int:
    plan = _prepare(args)  # fail fast (bad language, existing output) before loading a model
    if isinstance(plan, int):
        return plan
    try:
        backend = load_backend(args.backend)
    except (BackendError, ValueError, OSError) as exc:
        return _fail(
            str(exc), 2 if isinstance(exc, ModelFilesError) else 1
        )  # a --backend that cannot load is a bad argument
    try:
        return _translate_and_write(args, plan, backend)
    finally:
        backend.close()
