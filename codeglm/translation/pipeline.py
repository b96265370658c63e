"""Translate source code from one language to another, unit by unit.

The pipeline (plain data in, plain data out; the model only through a ``Backend``):

1. **Split.** A file whose prompt and translation fit the model's context is one unit;
   otherwise it is split into top-level units with tree-sitter
   (``codeglm.translation.units``): the import block, constants, classes (a class too long
   for the context as its head and one unit per method), functions, statements.
2. **Prompt.** Each unit gets the CodeGeeX translation prompt
   ``code translation\\n{Src}:\\n{source}\\n{Tgt}:\\n{target prefix}``. The source side
   carries the file's imports (and, for a method, its class header); the target side
   starts with the imports already translated and, as comments, the signatures of the
   units already translated, so names and types stay consistent across units.
3. **Validate.** The translation is parsed with the target's tree-sitter grammar. Text
   after a complete item that does not parse (the model going on into junk) is dropped;
   a translation that still does not parse, or holds no code of the kind expected, is
   retried with different sampling (temperature up, another seed), up to
   ``max_retries`` times; then it is kept inside a clearly marked comment and reported.
4. **Join.** The pieces become one file following the target's conventions: imports
   gathered at the top (one Go import block, ``package main`` when Go has none), the
   methods of a split class put back into one class, free functions and constants
   wrapped in a class named after the file when the target is Java.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from codeglm.backends.base import (
    Backend,
    CancelledError,
    CancelToken,
    FinishedCallback,
    GenerationRequest,
    SamplingParams,
)
from codeglm.completion.context import definitions_in, header_text, parse_text
from codeglm.languages import ALL_UNIT_NODES, TRANSLATION_LANGUAGES, Language, get_language
from codeglm.syntax.nodes import char_offset
from codeglm.translation.units import (
    FUNCTION_NODES,
    LEADING_NODES,
    TYPE_NODES,
    Unit,
    kind_of,
    split_units,
    whole_file_unit,
)

# Output budget per unit: a translation is rarely more than twice its source.
OUTPUT_FACTOR = 2
OUTPUT_SLACK = 64
# At most this many signatures of earlier units go into a prompt.
MAX_SIGNATURES = 24
# Containers that hold methods (where a split class's methods go back in).
METHOD_HOLDERS = ALL_UNIT_NODES.method_holders
JAVA_TYPES = frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"})

ProgressCallback = Callable[["UnitEvent"], None]


class TranslationError(ValueError):
    """A request that cannot be translated (unsupported language pair, empty source)."""


@dataclass(frozen=True)
class TranslationRequest:
    """What to translate and how.

    ``class_name``: the class that wraps free functions when the target is Java (by
    convention the output file's name). ``split``: "auto" translates a file that fits
    the context in one piece and splits it otherwise; "units" always splits.
    ``max_new_tokens``: an upper bound per unit (None: from the unit's size).
    """

    source: str
    source_language: str
    target_language: str
    class_name: str | None = None
    max_retries: int = 2
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int = 0
    split: str = "auto"
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class UnitResult:
    """One unit's outcome. ``text`` is the translation, or the marked comment when it failed."""

    index: int
    unit: Unit
    text: str
    ok: bool
    attempts: int
    problem: str = ""
    prompt_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class UnitEvent:
    """Progress of one unit. ``status`` is "start", "retry", "done" or "failed".

    ``index`` (0-based) and ``total`` count units, never attempts: a retry is another
    attempt at unit ``index``. ``attempt`` is the 0-based attempt the event is about
    (for "retry", which retry this is: 1 to ``max_retries``; for "done"/"failed", the
    retries used). ``message``: why the last attempt was rejected ("retry", "failed").
    ``codeglm.translation.progress`` turns events into progress lines.
    """

    index: int
    total: int
    label: str
    status: str
    attempt: int = 0
    message: str = ""
    max_retries: int = 0


@dataclass(frozen=True)
class TranslationResult:
    """The translated file and what happened on the way.

    ``retries``: attempts beyond the first, over all units. ``parses``: whether the
    joined file parses with the target's grammar.
    """

    text: str
    units: tuple[UnitResult, ...]
    failed_units: tuple[UnitResult, ...]
    retries: int
    seconds: float
    parses: bool
    source_language: str
    target_language: str

    def summary(self) -> str:
        """One line: units, retries, failures, time."""
        failed = len(self.failed_units)
        line = (
            f"{len(self.units)} unit(s), {self.retries} retr{'y' if self.retries == 1 else 'ies'}, "
            f"{failed} failed, {self.seconds:.1f}s"
        )
        if failed:
            line += "; failed: " + ", ".join(
                f"{r.unit.label} (lines {r.unit.start_line + 1}-{r.unit.end_line + 1}: {r.problem})"
                for r in self.failed_units
            )
        return line


# --- prompts ---------------------------------------------------------------------------


def translation_prompt(source_name: str, source_code: str, target_name: str, target_prefix: str = "") -> str:
    """The CodeGeeX translation prompt: ``code translation\\n{Src}:\\n{source}\\n{Tgt}:\\n{prefix}``."""
    return f"code translation\n{source_name}:\n{source_code}\n{target_name}:\n{target_prefix}"


def stop_strings(source: Language, target: Language) -> tuple[str, ...]:
    """Where a translation is over: the model starting another section of the prompt format."""
    return ("\ncode translation", f"\n{source.display_name}:\n", f"\n{target.display_name}:\n")


def _unit_source(unit: Unit, source_imports: str) -> str:
    if unit.kind == "member":
        body = "\n".join(x for x in (unit.container_header.rstrip(), unit.text, unit.container_footer) if x)
    else:
        body = unit.text
    if source_imports and unit.kind not in ("imports", "file"):
        return source_imports.rstrip() + "\n\n" + body
    return body


def _target_prefix(target: Language, imports: list[str], signatures: list[str]) -> str:
    parts: list[str] = []
    if imports:
        parts.append("\n".join(imports).rstrip() + "\n")
    if signatures:
        parts.append(target.comment("Already translated:\n" + "\n".join(signatures[-MAX_SIGNATURES:])))
    return "\n".join(parts)


@dataclass(frozen=True)
class _Plan:
    prompt: str
    prompt_tokens: int
    max_new_tokens: int


def plan_prompt(
    unit: Unit,
    source: Language,
    target: Language,
    backend: Backend,
    source_imports: str,
    target_imports: list[str],
    signatures: list[str],
    max_new_tokens: int | None = None,
) -> _Plan | None:
    """The richest prompt that leaves room for the translation, or None when even the
    bare unit does not fit the model's context."""
    unit_tokens = backend.count_tokens(unit.text)
    wanted = unit_tokens * OUTPUT_FACTOR + OUTPUT_SLACK
    if max_new_tokens is not None:
        wanted = min(wanted, max_new_tokens)
    # Richest first: drop the signatures, then the imports, when the context is tight.
    choices = (
        (source_imports, target_imports, signatures),
        (source_imports, target_imports, []),
        ("", [], []),
    )
    for src_imports, tgt_imports, sigs in choices:
        prompt = translation_prompt(
            source.display_name,
            _unit_source(unit, src_imports),
            target.display_name,
            _target_prefix(target, tgt_imports, sigs),
        )
        tokens = backend.count_tokens(prompt)
        room = backend.context_length - tokens
        if room >= wanted:
            return _Plan(prompt, tokens, wanted)
        if not sigs and not tgt_imports and room >= max(unit_tokens, 16):
            # A translation about as long as its source still fits: go with less room.
            return _Plan(prompt, tokens, room)
    return None


def sampling_for_attempt(request: TranslationRequest, attempt: int, max_new_tokens: int) -> SamplingParams:
    """First attempt as requested; each retry samples hotter (up to 1.0) with another seed."""
    temperature = request.temperature if attempt == 0 else min(1.0, max(request.temperature, 0.2) + 0.2 * attempt)
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=request.top_p,
        seed=request.seed + attempt,
    )


# --- validation ------------------------------------------------------------------------


def _code_items(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    return [c for c in root.children if c.is_named and c.type not in LEADING_NODES]


def _first_error(node: tree_sitter.Node) -> tree_sitter.Node | None:
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing or child.type == "ERROR":
            found = _first_error(child)
            if found is not None:
                return found
    return None


def _has_definition(node: tree_sitter.Node, depth: int = 3) -> bool:
    if node.type in TYPE_NODES or node.type in FUNCTION_NODES:
        return True
    if node.type in ("lexical_declaration", "variable_declaration"):
        return any(
            (v := d.child_by_field_name("value")) is not None and v.type in ("arrow_function", "function_expression", "class")
            for d in node.named_children
        )
    return depth > 0 and any(_has_definition(c, depth - 1) for c in node.named_children)


def check_translation(target: Language, unit_kind: str, text: str) -> str | None:
    """None when ``text`` is an acceptable translation of a unit of ``unit_kind``, else the problem."""
    # Parsed as it will stand in a file: ending in a newline (Go's grammar wants one).
    data = (text.rstrip() + "\n").encode("utf-8")
    tree = target.parser().parse(data)
    root = tree.root_node
    if root.has_error:
        error = _first_error(root)
        where = f" near line {error.start_point[0] + 1}" if error is not None else ""
        return f"does not parse as {target.display_name}{where}"
    items = _code_items(root)
    if unit_kind == "imports":
        return None  # an import may have no counterpart: nothing (or a comment) is fine
    if not items:
        return "no code in the translation"
    if unit_kind in ("type", "function", "head", "member") and not any(_has_definition(i) for i in items):
        return f"no {'class' if unit_kind in ('type', 'head') else 'function'} in the translation"
    return None


def trim_translation(target: Language, unit_kind: str, text: str) -> str:
    """Drop trailing text that does not parse after complete items (the model wandering on).

    Kept only when what remains still holds the kind of code the unit needs; otherwise
    ``text`` comes back unchanged and validation reports it.
    """
    text = text.rstrip()
    data = text.encode("utf-8")
    root = parse_text(target, text + "\n").root_node
    if not root.has_error:
        return text
    good: list[tree_sitter.Node] = []
    for child in root.children:
        if child.has_error or child.is_missing or child.type == "ERROR":
            break
        good.append(child)
    if not good:
        return text
    # Cut only where a new line starts at column 0 (a new top-level item), never inside
    # an item the grammar happened to accept a prefix of (a Go function without a body).
    cut = char_offset(data, good[-1].end_byte)
    following = text[cut:]
    if not re.match(r"[ \t]*\n(\s*\n)*\S", following):
        return text
    kept = text[:cut].rstrip()
    return kept if check_translation(target, unit_kind, kept) is None else text


def make_finished(target: Language, unit_kind: str) -> FinishedCallback:
    """Stop once the unit's translation is complete and the model starts something else.

    Checked at line ends: an import unit ends where code starts; for a unit that is one
    function or constant, the first complete definition followed by the start of another
    top-level item ends it; for every unit, an item that repeats the name of a complete
    one (a small model looping) ends it.
    """
    single = unit_kind in ("function", "constant", "member")

    def finished(text: str) -> int | None:
        if not text.endswith("\n"):
            return None
        data = text.encode("utf-8")
        items = _code_items(parse_text(target, text).root_node)
        complete, growing = items[:-1], items[-1:] if items else []
        if not growing or any(i.has_error for i in complete):
            return None
        names: set[str] = set()
        seen_code = False
        for index, item in enumerate(items):
            name = header_text(item, data).split("(", 1)[0].strip()
            is_import = item.type in target.import_types or kind_of(item, data, target) == "imports"
            if unit_kind == "imports" and not is_import:
                # The imports are done once code starts: that code belongs to later units.
                return char_offset(data, items[index - 1].end_byte) if index > 0 else 0
            if index > 0 and not is_import and ((single and seen_code) or (name and name in names)):
                return char_offset(data, items[index - 1].end_byte)
            names.add(name)
            seen_code = seen_code or not is_import
        return None

    return finished


# --- failure marking -------------------------------------------------------------------


def failure_comment(target: Language, source: Language, result_unit: Unit, attempts: int, problem: str, last: str) -> str:
    """A failed unit as a clearly marked comment: what failed, why, the source and the last attempt."""
    lines = [
        f"codeglm: FAILED to translate {result_unit.label} "
        f"(source lines {result_unit.start_line + 1}-{result_unit.end_line + 1}) after {attempts} attempt(s): {problem}.",
        "Translate this part by hand. The source:",
        "",
        *result_unit.text.split("\n"),
    ]
    if last.strip():
        lines += ["", f"The last attempt ({target.display_name}):", "", *last.rstrip().split("\n")]
    if target.block_comment is not None:
        opener, closer = target.block_comment
        # Break up comment markers inside (Rust's block comments even nest).
        body = "\n".join(lines).replace(closer, closer[0] + " " + closer[1:]).replace(opener, opener[0] + " " + opener[1:])
        return f"{opener} {body}\n{closer}"
    return target.comment("\n".join(lines)).rstrip("\n") + f"\n{target.line_comment} codeglm: end of failed unit"


# --- joining ---------------------------------------------------------------------------


def _span_lines(text: str, data: bytes, node: tree_sitter.Node) -> tuple[int, int]:
    """Char range of the whole lines a node covers."""
    start = data.rfind(b"\n", 0, node.start_byte) + 1
    end = data.find(b"\n", node.end_byte)
    end = len(data) if end < 0 else end + 1
    return char_offset(data, start), char_offset(data, end)


def split_imports(target: Language, text: str) -> tuple[list[str], list[str], str]:
    """(package clauses, top-level imports, the rest of the text) of a translated piece."""
    data = text.encode("utf-8")
    root = parse_text(target, text).root_node
    packages: list[str] = []
    imports: list[str] = []
    cuts: list[tuple[int, int]] = []
    for child in root.children:
        if child.type in ("package_clause", "package_declaration"):
            packages.append(data[child.start_byte : child.end_byte].decode("utf-8", errors="replace").strip())
        elif kind_of(child, data, target) == "imports":
            imports.append(data[child.start_byte : child.end_byte].decode("utf-8", errors="replace").strip())
        else:
            continue
        cuts.append(_span_lines(text, data, child))
    rest = text
    for start, end in reversed(cuts):
        rest = rest[:start] + rest[end:]
    return packages, imports, rest.strip("\n")


def _go_import_block(imports: list[str]) -> list[str]:
    """Go imports as one block of unique specs."""
    specs: list[str] = []
    for item in imports:
        for spec in re.findall(r'(?:^|\s)((?:[\w.]+\s+)?"[^"]+")', item.replace("import", " ", 1)):
            if spec.strip() not in specs:
                specs.append(spec.strip())
    if not specs:
        return []
    return ["import (\n" + "".join(f"\t{s}\n" for s in specs) + ")"]


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else line for line in text.split("\n"))


def _containers(target: Language, text: str) -> tuple[bytes, list[tree_sitter.Node]]:
    data = text.encode("utf-8")
    root = parse_text(target, text).root_node
    found = []
    for child in root.children:
        node = child
        while node.type in ("decorated_definition", "template_declaration", "export_statement") and node.named_children:
            node = node.named_children[-1]
        if node.type in TYPE_NODES and node.child_by_field_name("body") is not None:
            found.append(node)
    return data, found


def merge_class(target: Language, head: str, members: list[str]) -> str:
    """Put the translated methods of a split class back into the translated class head.

    A member translated as a whole class (the usual case: the prompt showed the method
    inside its class) gives its class body; a member translated as a bare method goes in
    as it is, indented. Members that are neither (e.g. Go methods, which live outside
    their struct) follow the class.
    """
    head_data, head_containers = _containers(target, head)
    holders = [c for c in head_containers if c.type in METHOD_HOLDERS]
    if not holders:
        return "\n\n".join([head.rstrip(), *(m.strip("\n") for m in members)])
    holder = holders[-1]
    body = holder.child_by_field_name("body")
    assert body is not None
    if target.indentation_blocks:
        insert_at = char_offset(head_data, body.end_byte)
        indent = " " * body.start_point[1]
    else:
        closer = body.children[-1]
        insert_at = char_offset(head_data, closer.start_byte)
        indent = "    "
    inner_parts: list[str] = []
    after: list[str] = []
    for member in members:
        data, containers = _containers(target, member)
        same = [c for c in containers if c.type == holder.type]
        if same:
            member_body = same[0].child_by_field_name("body")
            assert member_body is not None
            if target.indentation_blocks:
                start = data.rfind(b"\n", 0, member_body.start_byte) + 1
                inner = data[start : member_body.end_byte]
            else:
                inner = data[member_body.children[0].end_byte : member_body.children[-1].start_byte]
            inner_parts.append(inner.decode("utf-8", errors="replace").strip("\n"))
            outside = member[: char_offset(data, same[0].start_byte)] + member[char_offset(data, same[0].end_byte) :]
            if outside.strip().strip(";"):
                after.append(outside.strip())
        elif target.id != "go" and any(_has_definition(i, 0) for i in _code_items(parse_text(target, member).root_node)):
            stripped = member.strip("\n")
            inner_parts.append(stripped if stripped.startswith((" ", "\t")) else _indent(stripped, indent))
        else:
            after.append(member.strip("\n"))
    before = head[:insert_at].rstrip()
    rest = head[insert_at:]
    if target.indentation_blocks:
        merged = before + "\n\n" + "\n\n".join(inner_parts) + rest
    else:
        merged = before + "\n\n" + "\n\n".join(inner_parts) + "\n" + rest.lstrip(" \t")
    return "\n\n".join([merged.rstrip(), *after])


def _java_wrap(pieces: list[str], class_name: str) -> list[str]:
    """Java has no free functions or constants: wrap such pieces in a class."""
    target = get_language("java")
    types: list[str] = []
    members: list[str] = []
    for piece in pieces:
        items = _code_items(parse_text(target, piece).root_node)
        if items and all(i.type in JAVA_TYPES for i in items):
            types.append(piece)
        else:
            members.append(piece)
    if not any(_code_items(parse_text(target, m).root_node) for m in members):
        return pieces  # only comments (or nothing) outside classes: no wrapper needed
    wrapper = f"public class {class_name} {{\n" + "\n\n".join(_indent(m, "    ") for m in members) + "\n}"
    return [*types, wrapper]


def join_translations(target: Language, results: list[UnitResult], class_name: str = "Main") -> str:
    """One target file from the translated units, in the target's conventions."""
    packages: list[str] = []
    imports: list[str] = []
    pieces: list[str] = []
    index = 0
    while index < len(results):
        result = results[index]
        if not result.ok:
            pieces.append(result.text)
            index += 1
            continue
        pkgs, imps, rest = split_imports(target, result.text)
        packages.extend(p for p in pkgs if p not in packages)
        imports.extend(i for i in imps if i not in imports)
        container = result.unit.container if result.unit.kind == "head" else None
        if container is not None:
            members: list[str] = []
            index += 1
            while index < len(results) and results[index].unit.kind == "member" and results[index].unit.container == container:
                member = results[index]
                if member.ok:
                    pk, im, member_rest = split_imports(target, member.text)
                    packages.extend(p for p in pk if p not in packages)
                    imports.extend(i for i in im if i not in imports)
                    members.append(member_rest)
                else:
                    members.append(member.text)
                index += 1
            rest = merge_class(target, rest, members)
        else:
            index += 1
        if rest.strip():
            pieces.append(rest)
    if target.id == "go":
        imports = _go_import_block(imports)
        if not packages:
            packages = ["package main"]
    if target.id == "java":
        pieces = _java_wrap(pieces, class_name)
    header = "\n\n".join(x for x in ("\n".join(packages), "\n".join(imports)) if x)
    # PEP 8 puts two blank lines between top-level definitions; brace languages one.
    separator = "\n\n\n" if target.indentation_blocks else "\n\n"
    body = separator.join(p.strip("\n") for p in pieces)
    return "\n\n".join(x for x in (header, body) if x).rstrip() + "\n"


# --- signatures for context ------------------------------------------------------------


def signatures_of(target: Language, text: str) -> list[str]:
    """First lines of the definitions in a translated piece (what later units may call)."""
    data = text.encode("utf-8")
    tree = parse_text(target, text)
    found = []
    for _, node in definitions_in(tree, data, target):
        line = header_text(node, data).split("\n", 1)[0].rstrip(" {:")
        if line and line not in found:
            found.append(line)
    return found


# --- the pipeline ----------------------------------------------------------------------


def resolve_pair(source_language: str, target_language: str) -> tuple[Language, Language]:
    """The two languages, checked: both among the six, and different."""
    source, target = get_language(source_language), get_language(target_language)
    for lang in (source, target):
        if lang.id not in TRANSLATION_LANGUAGES:
            names = ", ".join(get_language(x).display_name for x in TRANSLATION_LANGUAGES)
            raise TranslationError(f"translation supports {names}; {lang.display_name} is not one of them")
    if source.id == target.id:
        raise TranslationError(f"source and target are both {source.display_name}: nothing to translate")
    return source, target


def plan_units(request: TranslationRequest, source: Language, target: Language, backend: Backend) -> list[Unit]:
    """The whole file as one unit when it fits (``split="auto"``), else its top-level units."""
    if request.split not in ("auto", "units"):
        raise TranslationError(f"split must be 'auto' or 'units', got {request.split!r}")
    if request.split == "auto":
        whole = whole_file_unit(request.source)
        if plan_prompt(whole, source, target, backend, "", [], [], request.max_new_tokens) is not None:
            tokens = backend.count_tokens(whole.text)
            if tokens * (OUTPUT_FACTOR + 1) + OUTPUT_SLACK + 16 <= backend.context_length:
                return [whole]
    # A unit, its prompt and its translation must fit together.
    max_unit_tokens = max(16, (backend.context_length - OUTPUT_SLACK - 32) // (OUTPUT_FACTOR + 1))
    return split_units(source, request.source, max_unit_tokens, backend.count_tokens)


def _emit(on_unit: ProgressCallback | None, event: UnitEvent) -> None:
    if on_unit is not None:
        on_unit(event)


def translate(
    request: TranslationRequest,
    backend: Backend,
    cancel: CancelToken | None = None,
    on_unit: ProgressCallback | None = None,
) -> TranslationResult:
    """Translate ``request.source``; see the module docstring for the steps."""
    started = time.monotonic()
    source, target = resolve_pair(request.source_language, request.target_language)
    if not request.source.strip():
        raise TranslationError("the source is empty: nothing to translate")
    if request.max_retries < 0:
        raise TranslationError(f"max_retries must be >= 0, got {request.max_retries}")
    units = plan_units(request, source, target, backend)
    source_imports = "\n".join(u.text for u in units if u.kind == "imports")
    target_imports: list[str] = []
    signatures: list[str] = []
    results: list[UnitResult] = []
    retries = 0
    stop = stop_strings(source, target)
    for index, unit in enumerate(units):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("translation cancelled")
        unit_started = time.monotonic()
        _emit(on_unit, UnitEvent(index, len(units), unit.label, "start", max_retries=request.max_retries))
        plan = plan_prompt(
            unit, source, target, backend, source_imports, target_imports, signatures, request.max_new_tokens
        )
        if plan is None:
            problem = f"too long for the model's context ({backend.context_length} tokens)"
            text = failure_comment(target, source, unit, 0, problem, "")
            result = UnitResult(index, unit, text, False, 0, problem, 0, time.monotonic() - unit_started)
            results.append(result)
            _emit(on_unit, UnitEvent(index, len(units), unit.label, "failed", 0, problem, request.max_retries))
            continue
        attempt_text, problem, attempts = "", "", 0
        for attempt in range(request.max_retries + 1):
            attempts = attempt + 1
            if attempt > 0:
                retries += 1
                _emit(on_unit, UnitEvent(index, len(units), unit.label, "retry", attempt, problem, request.max_retries))
            generation = backend.generate(
                GenerationRequest(
                    prompt=plan.prompt,
                    params=sampling_for_attempt(request, attempt, plan.max_new_tokens),
                    stop=stop,
                    finished=make_finished(target, unit.kind),
                ),
                cancel,
            )[0]
            if generation.finish_reason == "cancelled":
                raise CancelledError("translation cancelled")
            attempt_text = trim_translation(target, unit.kind, generation.text)
            problem = check_translation(target, unit.kind, attempt_text) or ""
            if not problem:
                break
        seconds = time.monotonic() - unit_started
        if problem:
            text = failure_comment(target, source, unit, attempts, problem, attempt_text)
            results.append(UnitResult(index, unit, text, False, attempts, problem, plan.prompt_tokens, seconds))
            _emit(on_unit, UnitEvent(index, len(units), unit.label, "failed", attempts - 1, problem, request.max_retries))
            continue
        results.append(UnitResult(index, unit, attempt_text, True, attempts, "", plan.prompt_tokens, seconds))
        _, imports, rest = split_imports(target, attempt_text)
        target_imports.extend(i for i in imports if i not in target_imports)
        signatures.extend(s for s in signatures_of(target, rest) if s not in signatures)
        _emit(on_unit, UnitEvent(index, len(units), unit.label, "done", attempts - 1, "", request.max_retries))
    text = join_translations(target, results, request.class_name or "Main")
    return TranslationResult(
        text=text,
        units=tuple(results),
        failed_units=tuple(r for r in results if not r.ok),
        retries=retries,
        seconds=time.monotonic() - started,
        parses=not parse_text(target, text).root_node.has_error,
        source_language=source.id,
        target_language=target.id,
    )


# --- output naming ---------------------------------------------------------------------


def _words(stem: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", stem)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return [w.lower() for w in re.split(r"[\s_\-.]+", spaced) if w]


def convert_name(stem: str, convention: str) -> str:
    """``stem`` in a naming convention: snake_case, PascalCase, camelCase or kebab-case."""
    words = _words(stem) or ["translated"]
    if convention == "PascalCase":
        return "".join(w.capitalize() for w in words)
    if convention == "camelCase":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if convention == "kebab-case":
        return "-".join(words)
    return "_".join(words)


def output_name(source_name: str, target_language: str) -> str:
    """The conventional file name for the translation: ``FooBar.java`` -> ``foo_bar.py``."""
    target = get_language(target_language)
    stem = source_name.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return convert_name(stem, target.file_naming) + target.extensions[0]


__all__ = [
    "TRANSLATION_LANGUAGES",
    "TranslationError",
    "TranslationRequest",
    "TranslationResult",
    "UnitEvent",
    "UnitResult",
    "check_translation",
    "convert_name",
    "failure_comment",
    "join_translations",
    "make_finished",
    "merge_class",
    "output_name",
    "plan_units",
    "resolve_pair",
    "sampling_for_attempt",
    "signatures_of",
    "split_imports",
    "translate",
    "translation_prompt",
    "trim_translation",
]
