"""HumanEval-style whole-function generation: cut where the function (and anything the prompt
left open) ends."""

from __future__ import annotations

import tree_sitter

from codeglm.completion.brackets import bracket_events
from codeglm.completion.site import CompletionSite, window_start
from codeglm.completion.stops import content_after, find_stop, last_child_closes
from codeglm.languages import Language, get_language
from codeglm.syntax.nodes import char_offset


def truncate_generation(language: str, prompt: str, generation: str) -> str:
    """Cut a raw whole-function generation where the function the prompt opens is complete.

    Parse-tree rule: find the innermost scope the prompt leaves open (the function
    body); cut where the generation closes it (brace languages: its ``}``; Python: the
    first statement after its dedent). Outer scopes the prompt also left open (Java's
    ``class Solution {``) are closed too, by the generation's own braces when it wrote
    them next, else by appended ones, so ``prompt + result`` is a whole program unit.
    If the prompt opens no scope (Rust's prompt is only a doc comment), the first
    complete top-level item of the generation is kept.

    Fallback, only where the tree cannot decide (the scope sits in an ERROR node): the
    reference's rules: Python stops at the first non-indented line (or ``\\ndef``,
    ``\\nclass``, ``\\nif``, ``\\n#``, ``\\nprint``); brace languages stop when one more
    ``}`` than ``{`` has been generated.
    """
    lang = get_language(language)
    generation = generation.replace("\r\n", "\n")
    prompt_bytes = prompt.encode("utf-8")
    text_bytes = prompt_bytes + generation.encode("utf-8")
    cursor = len(prompt_bytes)
    tree = lang.parser().parse(text_bytes)
    open_scopes = _open_scopes(lang, tree, cursor)
    if not open_scopes:
        site = CompletionSite(lang, prompt, "", "", "", True, False, window_start(lang, prompt))
        stop = find_stop(site, generation)
        return (generation if stop is None else generation[:stop]).rstrip()
    innermost = open_scopes[0]
    if innermost.type == "ERROR" or innermost.has_error and innermost.end_byte <= cursor:
        return _reference_truncation(lang, generation)
    if lang.indentation_blocks:
        if innermost.end_byte > cursor and content_after(text_bytes, innermost.end_byte):
            return generation[: char_offset(text_bytes, innermost.end_byte) - len(prompt)].rstrip()
        if content_after(text_bytes, cursor) and innermost.end_byte <= cursor:
            return _reference_truncation(lang, generation)
        return generation.rstrip()
    if not last_child_closes(innermost):
        return _reference_truncation(lang, generation)
    end = char_offset(text_bytes, innermost.end_byte) - len(prompt)
    kept = generation[:end]
    rest = generation[end:]
    for outer in open_scopes[1:]:
        stripped = rest.lstrip()
        if last_child_closes(outer) and stripped.startswith("}"):
            skipped = len(rest) - len(stripped)
            kept += rest[: skipped + 1]
            rest = rest[skipped + 1 :]
        else:
            kept += "\n}"
            rest = ""
    return kept


def _open_scopes(lang: Language, tree: tree_sitter.Tree, cursor: int) -> list[tree_sitter.Node]:
    """Bodies (brace blocks, or Python function/class statements) that start before the end
    of the prompt and contain it, innermost first."""
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(max(0, cursor - 1), cursor)
    scopes: list[tree_sitter.Node] = []
    while node is not None and node.parent is not None:
        if lang.indentation_blocks:
            if node.type in lang.scope_types and node.start_byte < cursor:
                scopes.append(node)
        elif node.children and node.children[0].type == "{" and node.children[0].end_byte <= cursor:
            scopes.append(node)
        elif node.type == "ERROR" and not scopes:
            scopes.append(node)
        node = node.parent
    return scopes


def _reference_truncation(lang: Language, generation: str) -> str:
    if lang.indentation_blocks:
        cut = len(generation)
        for marker in ("\ndef", "\nclass", "\nif", "\n#", "\nprint"):
            found = generation.find(marker)
            if 0 <= found < cut:
                cut = found
        offset = 0
        for line in generation.split("\n"):
            if offset > 0 and line.strip() and not line[0].isspace():
                cut = min(cut, offset - 1)
                break
            offset += len(line) + 1
        return generation[:cut].rstrip()
    depth = 0
    for index, ch in bracket_events(lang, generation):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return generation[: index + 1]
    return generation.rstrip()


__all__ = ["truncate_generation"]
