"""From a raw generation to the text worth showing: where to stop and what to drop.

The rules, in the order they apply:

* **Single-line or multi-line** (``completion_site``): single-line when the cursor has
  text after it on its line (other than auto-closed brackets and quotes); multi-line
  when the cursor ends a line that opens a block, or stands on an empty line. Whether
  the line opens a block is read from the parse tree of the window around the cursor
  (a ``:`` of a compound statement, not of a slice or a dict; a ``{`` of a body, or of
  a literal that does not close on the same line); only where the line's last token
  sits in an ERROR node does the text decide (ends in ``{``, or in ``:`` outside
  brackets).
* **Stop where the block is complete** (``find_stop``), from the parse tree of the
  text before the cursor plus the generation: after a line that opens a block, the
  statement (Python) or brace block whose opener ends that line; on an empty line, the
  block holding the cursor (its end is reached when the generation leaves it); at the
  top level, the first complete top-level item. Only where the tree has no usable node
  (the opener sits in an ERROR node) does indentation decide.
* **Balance brackets** on a single line: cut at a closer with no opener, close
  brackets the generation opened and left open.
* **Drop text duplicating what follows the cursor**: the rest of the line
  (auto-closed brackets, quotes, semicolons), a closing brace the editor already
  inserted, lines repeating the suffix's first lines.
* **Never junk** (``added_errors``, ``codeglm.syntax.guard``): keep the longest run of
  whole lines whose insertion adds no syntax error (ERROR or MISSING node in the
  inserted region that the document without it did not have); a completion cut short
  inside a block or a call is checked with what it left open closed. A single-line
  completion is kept whole or dropped.
* **No loops** (``loop_cuts``): a multi-line generation that starts repeating itself -
  the same line LOOP_LINE_TIMES times in a row, or the same block of up to
  LOOP_BLOCK_LINES lines LOOP_BLOCK_TIMES times - keeps the first copy only. Small models
  do this when unsure; the copies parse, so the rule above keeps them.
* **Never only whitespace**: such results become None.

``make_finished_callback`` applies ``find_stop`` while tokens arrive so generation
stops as soon as the block is complete, and ends a multi-line generation after
JUNK_LINES finished lines in a row that add syntax errors, or once it loops;
``truncate_generation`` is the same idea for HumanEval-style whole-function generation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import tree_sitter

from codeglm.backends.base import FinishedCallback
from codeglm.languages import Language, get_language
from codeglm.syntax.guard import ERROR, ErrorSpan, SyntaxBaseline, clean_lines, new_errors, syntax_baseline
from codeglm.syntax.nodes import char_offset

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
# Characters an editor inserts after the cursor by itself: they do not make the cursor "mid-line".
AUTO_CLOSED = set(")]}\"'`;,")
# A dedented line starting with one of these continues the statement (Python).
CONTINUATION_KEYWORDS = (b"else", b"elif", b"except", b"finally", b"case")
# The parse window for stop checks: from the top-level item holding the cursor, at most this many lines.
WINDOW_LINES = 200
# Finished lines in a row that add a syntax error before generation is given up as junk.
JUNK_LINES = 3
# A loop: one line this many times in a row (identical, indentation included), or a block
# of 2 to LOOP_BLOCK_LINES lines LOOP_BLOCK_TIMES times. Code rarely does either; three
# equal lines in a row (``x.pop()``) can be meant, four hardly.
LOOP_LINE_TIMES = 4
LOOP_BLOCK_LINES = 4
LOOP_BLOCK_TIMES = 3


@dataclass(frozen=True)
class CompletionSite:
    """Where the cursor stands, in "\\n"-normalised text.

    ``window_start``: index in ``prefix`` from which stop checks parse (the top-level
    item around the cursor), so a check costs the same on a 10-line and a 10k-line file.
    """

    language: Language
    prefix: str
    suffix: str
    line_prefix: str
    line_suffix: str
    multiline: bool
    opens_block: bool
    window_start: int
    # The first non-blank line after the cursor's line (right-stripped), "" if none.
    next_code_line: str = ""
    # The parse window without the completion (for junk rejection); None: made when needed.
    syntax: SyntaxBaseline | None = None


@dataclass(frozen=True)
class Processed:
    """The text to insert at the cursor.

    ``replace_suffix_chars``: how many characters after the cursor on its line the
    insertion replaces (the editor's auto-closed text that the completion supplies
    again), so the client can replace instead of insert.
    """

    text: str
    multiline: bool
    replace_suffix_chars: int = 0


def _without_line_comment(language: Language, line: str) -> str:
    """``line`` without a trailing line comment (a comment marker inside a string stays)."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif line.startswith(language.line_comment, i):
            return line[:i]
        i += 1
    return line


def _opens_block_by_text(language: Language, line_prefix: str, window_prefix: str) -> bool:
    """The fallback rule, for a line the parser could not place: the code ends in ``{``,
    or in ``:`` outside brackets (inside them it is a slice, a dict, a lambda)."""
    code = _without_line_comment(language, line_prefix).rstrip()
    if not language.indentation_blocks:
        return code.endswith("{")
    return code.endswith(":") and not _open_stack(language, window_prefix)


def _opens_block_by_tree(
    language: Language, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int, line_start: int
) -> bool | None:
    """Whether the last token of the cursor's line opens a block, by the parse tree of
    the document; None when the tree cannot say (no token there, or it sits in an ERROR).

    Python: a ``:`` that belongs to a compound statement (not a slice, dict, lambda or
    annotation). Brace languages: a ``{`` that starts a statement or declaration body,
    or a literal that does not close on the same line (``{█}`` of an initializer is
    completed in place).
    """
    token = _opener_node(tree, text_bytes, cursor)
    if token is None or token.end_byte <= line_start:
        return None
    node: tree_sitter.Node | None = token
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return None
        node = node.parent
    parent = token.parent
    if parent is None:
        return None
    if language.indentation_blocks:
        return token.type == ":" and parent.type in language.block_types
    if token.type != "{":
        return False
    if parent.type in language.block_types:
        return True
    closing = parent.children[-1]
    closes_on_this_line = (
        closing.type == "}" and not closing.is_missing and b"\n" not in text_bytes[cursor : closing.start_byte]
    )
    return not closes_on_this_line


def completion_site(language: Language, prefix: str, suffix: str, multiline: bool | None = None) -> CompletionSite:
    """Classify the cursor: ``multiline`` forces a mode (None decides from the text).

    Parses the window around the cursor once: the tree decides whether the line opens a
    block, and the same parse is the baseline that junk rejection compares against.
    """
    prefix = prefix.replace("\r\n", "\n")
    suffix = suffix.replace("\r\n", "\n")
    line_prefix = prefix[prefix.rfind("\n") + 1 :]
    newline = suffix.find("\n")
    line_suffix = suffix if newline < 0 else suffix[:newline]
    window_start = _window_start(language, prefix)
    before, after = prefix[window_start:], _suffix_window(suffix)
    before_bytes = before.encode("utf-8")
    text_bytes = before_bytes + after.encode("utf-8")
    tree = language.parser().parse(text_bytes)
    cursor = len(before_bytes)
    opens = _opens_block_by_tree(language, tree, text_bytes, cursor, cursor - len(line_prefix.encode("utf-8")))
    if opens is None:
        opens = _opens_block_by_text(language, line_prefix, before)
    rest = line_suffix.strip()
    if multiline is None:
        # Right after a block opener the body is wanted, whatever follows on the line;
        # otherwise real code after the cursor (not just auto-closed characters) means
        # finishing this line only.
        only_auto_closed = all(ch in AUTO_CLOSED or ch.isspace() for ch in rest)
        multiline = opens or (not line_prefix.strip() and (not rest or only_auto_closed))
    return CompletionSite(
        language=language,
        prefix=prefix,
        suffix=suffix,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        multiline=multiline,
        opens_block=opens,
        window_start=window_start,
        next_code_line=_next_code_line(suffix),
        syntax=syntax_baseline(language, before, after, tree),
    )


def _next_code_line(suffix: str) -> str:
    start = suffix.find("\n")
    while start >= 0:
        end = suffix.find("\n", start + 1)
        line = suffix[start + 1 : end if end >= 0 else len(suffix)]
        if line.strip():
            return line.rstrip()
        start = end
    return ""


def _window_start(language: Language, prefix: str) -> int:
    """Start of the top-level item holding the end of ``prefix``: the last line before the
    cursor that starts at column 0 with code (not a comment, not a closer), at most
    WINDOW_LINES back. A textual rule on purpose: the prefix of a half-typed file
    rarely parses into a tree whose top-level nodes can be trusted."""
    end = len(prefix)
    line_end = prefix.rfind("\n")
    for _ in range(WINDOW_LINES):
        if line_end < 0:
            return 0
        line_start = prefix.rfind("\n", 0, line_end) + 1
        line = prefix[line_start:line_end]
        if line[:1] and not line[0].isspace() and not line.startswith(_NOT_ITEM_STARTS):
            if not line.startswith(language.line_comment):
                return line_start
        end = line_start
        line_end = line_start - 1
    return max(0, end)


_NOT_ITEM_STARTS = ("}", ")", "]", "*", "/*", "#include", '"' * 3, "'" * 3)


# --- stop detection -----------------------------------------------------------------


def _indent_width(line: str) -> int:
    """Indentation in columns (a tab counts 4: the data mixes tabs and spaces)."""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    return len(indent.expandtabs(4))


def _last_child_closes(node: tree_sitter.Node) -> bool:
    last = node.children[-1] if node.children else None
    return last is not None and last.type == "}" and not last.is_missing


def _content_after(text_bytes: bytes, offset: int) -> bool:
    return bool(text_bytes[offset:].strip())


def _dedented_after(text_bytes: bytes, offset: int, max_indent: int) -> bool:
    """Code follows ``offset`` on a later line indented at most ``max_indent``: the block
    before it really ended (and was not cut short by error recovery around a half-typed line)."""
    rest = text_bytes[offset:]
    stripped = rest.lstrip()
    if not stripped:
        return False
    gap = rest[: len(rest) - len(stripped)]
    if b"\n" not in gap:
        return False
    indent = len(gap) - gap.rfind(b"\n") - 1
    if indent > max_indent:
        return False
    line = stripped.split(b"\n", 1)
    word = re.match(rb"\w*", line[0]).group(0)  # type: ignore[union-attr]
    if len(line) == 1 and any(keyword.startswith(word) for keyword in CONTINUATION_KEYWORDS):
        return False  # "el..." may become "else:", which belongs to the block: wait for the line
    return True


def _suffix_duplicate_cut(site: CompletionSite, generation: str) -> int | None:
    """Cut before a generated line that repeats the first non-blank line after the cursor's line."""
    target = site.next_code_line  # with its indentation: the same code elsewhere is not a repeat
    if len(target.strip()) < 2:
        return None
    start = 0
    for line in generation.split("\n")[:-1]:
        if start > 0 and line.rstrip() == target:
            return start - 1
        start += len(line) + 1
    return None


def _indentation_fallback(site: CompletionSite, generation: str) -> int | None:
    """Where indentation says the block ended; used only when the tree cannot say (the
    opener sits in an ERROR node, as Go's grammar does with unclosed blocks).

    Python: the first whole line indented less than the block (not ``else``/``elif``/...).
    Brace languages: a line starting with ``}`` at the opener's indentation (kept) or, on
    an empty line, left of the cursor (the document's own brace: cut before it).
    """
    base = _indent_width(site.line_prefix)
    offset = 0
    lines = generation.split("\n")
    for number, line in enumerate(lines):
        stripped = line.strip()
        if number > 0 and stripped:
            width = _indent_width(line)
            leaves = width <= base if site.opens_block else width < base
            if site.language.indentation_blocks:
                whole = number < len(lines) - 1
                continues = stripped.encode().startswith(CONTINUATION_KEYWORDS)
                if leaves and whole and not continues:
                    return max(0, offset - 1)
            elif leaves and stripped.startswith("}"):
                if site.opens_block:
                    return offset + len(line) - len(line.lstrip()) + 1
                return max(0, offset - 1)
        offset += len(line) + 1
    return None


def find_stop(site: CompletionSite, generation: str) -> int | None:
    """Characters of ``generation`` to keep when the completion is complete, else None."""
    if not site.multiline:
        return _single_line_stop(site, generation)
    duplicate = _suffix_duplicate_cut(site, generation)
    if not generation.strip():
        return None
    window = site.prefix[site.window_start :]
    window_bytes = window.encode("utf-8")
    text_bytes = window_bytes + generation.encode("utf-8")
    cursor = len(window_bytes)
    parse_end = len(text_bytes)
    if site.language.indentation_blocks:
        # A half-written last line makes error recovery end blocks early ("else: return (");
        # the tree of whole lines decides, the last line only shows whether code dedented.
        parse_end = text_bytes.rfind(b"\n") + 1 if text_bytes.rfind(b"\n") >= cursor else cursor
    tree = site.language.parser().parse(text_bytes[:parse_end])
    cut_byte = _tree_stop(site, tree, text_bytes, cursor)
    if cut_byte is None:
        cut = _indentation_fallback(site, generation) if _opener_in_error(site, tree, text_bytes, cursor) else None
    else:
        cut = char_offset(text_bytes, cut_byte) - len(window)
    if duplicate is not None and (cut is None or duplicate < cut):
        return duplicate
    return cut


def _single_line_stop(site: CompletionSite, generation: str) -> int | None:
    start = 0
    if not site.line_suffix.strip() and site.line_prefix.strip():
        # At the end of a finished line the model may go on with the next one: allow it.
        start = len(generation) - len(generation.lstrip("\n"))
    newline = generation.find("\n", start)
    if newline < 0:
        return None
    return newline if generation[:newline].strip() else 0


def _opener_node(tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> tree_sitter.Node | None:
    """The ``:`` or ``{`` that ends the line before the cursor."""
    position = len(text_bytes[:cursor].rstrip())
    while position > 0:
        node = tree.root_node.descendant_for_byte_range(position - 1, position)
        if node is None or not node.is_extra:
            return node
        position = len(text_bytes[: node.start_byte].rstrip())  # skip a trailing comment
    return None


def _opener_in_error(site: CompletionSite, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> bool:
    node = _opener_node(tree, text_bytes, cursor) if site.opens_block else (
        tree.root_node.descendant_for_byte_range(cursor, cursor)
    )
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return True
        node = node.parent
    return False


def _tree_stop(site: CompletionSite, tree: tree_sitter.Tree, text_bytes: bytes, cursor: int) -> int | None:
    language = site.language
    if site.opens_block:
        opener = _opener_node(tree, text_bytes, cursor)
        if opener is None or opener.type not in (":", "{") or opener.parent is None:
            return None
        anchor = opener.parent
        if anchor.type == "ERROR":
            return None
        if language.indentation_blocks:
            opener_indent = _indent_width(site.line_prefix)
            if anchor.end_byte > cursor and _dedented_after(text_bytes, anchor.end_byte, opener_indent):
                return anchor.end_byte
            return None
        if anchor.end_byte > cursor and _last_child_closes(anchor):
            return anchor.end_byte
        return None
    # Empty line: the block holding the cursor, or the top level.
    first = len(text_bytes) - len(text_bytes[cursor:].lstrip())
    if first >= len(text_bytes):
        return None
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(first, first)
    statement = None
    while node is not None and node.parent is not None:
        if node.start_byte >= cursor and (node.parent.start_byte < cursor or node.parent.parent is None):
            statement = node
            break
        node = node.parent
    if statement is None or statement.parent is None:
        return None
    block = statement.parent
    if block.type == "ERROR":
        return None
    if block.parent is None:  # top level: the first item, once complete
        return _item_stop(site, statement, text_bytes)
    if statement.type in language.scope_types or statement.type == "decorated_definition":
        # A method written on an empty line of a class: one definition at a time.
        stop = _item_stop(site, statement, text_bytes)
        if stop is not None:
            return stop
    if language.indentation_blocks:
        if _dedented_after(text_bytes, block.end_byte, _indent_width(site.line_prefix) - 1):
            return block.end_byte
        return None
    if _last_child_closes(block):
        closing = block.children[-1]
        # The block's "}" is the document's own (it follows the cursor): stop before its line.
        line_start = text_bytes.rfind(b"\n", cursor, closing.start_byte)
        return line_start if line_start >= cursor else cursor
    return None


def _item_stop(site: CompletionSite, item: tree_sitter.Node, text_bytes: bytes) -> int | None:
    """The end of ``item`` (the first thing generated on an empty line), once it is complete."""
    if item.has_error or item.type == "ERROR":
        return None
    if site.language.indentation_blocks:
        indent = _indent_width(site.line_prefix)
        return item.end_byte if _dedented_after(text_bytes, item.end_byte, indent) else None
    last = item
    while last.children:
        last = last.children[-1]
    if last.is_missing:
        return None
    if last.type in ("}", ";") or _content_after(text_bytes, item.end_byte):
        return item.end_byte
    return None


def loop_cuts(text: str, complete: bool = True) -> Iterator[int]:
    """For each loop in ``text`` (see LOOP_LINE_TIMES), in order of where it starts, the
    end of its first copy. ``complete=False``: the last line may still grow, so it is
    not compared."""
    lines = text.split("\n")
    if not complete:
        lines = lines[:-1]
    ends = []  # ends[i]: index in text just after line i (before its newline)
    position = 0
    for line in lines:
        position += len(line)
        ends.append(position)
        position += 1
    for start in range(len(lines)):
        for size in range(1, LOOP_BLOCK_LINES + 1):
            times = LOOP_LINE_TIMES if size == 1 else LOOP_BLOCK_TIMES
            if start + size * times > len(lines):
                break
            block = lines[start : start + size]
            if not "".join(block).strip():
                continue  # blank lines may repeat
            if all(lines[start + copy * size : start + (copy + 1) * size] == block for copy in range(1, times)):
                yield ends[start + size - 1]
                break


def _loop_stop(site: CompletionSite, generation: str, complete: bool = True) -> int | None:
    """Where a looping generation should end: the first of its ``loop_cuts`` (its first
    line read with the cursor line's text before it, the indentation later copies
    repeat) that no bracket the generation opened spans. Inside brackets, equal lines
    are data (``[\n    0,\n    0,\n ...]``), not a loop."""
    lead = site.line_prefix
    for cut in loop_cuts(lead + generation, complete):
        stop = max(cut - len(lead), 0)
        if _settled(site.language, generation[:stop]):
            return stop
    return None


def make_finished_callback(site: CompletionSite) -> FinishedCallback:
    """A callback for the engine: the length to keep once the completion is complete,
    or once a multi-line generation has gone on writing lines that are not code."""
    checked = [0]
    junk = _JunkWatch(site)

    def finished(text: str) -> int | None:
        fresh = text[checked[0] :]
        checked[0] = len(text)
        stop = None
        # Completion can only become decidable when something visible arrives.
        if fresh.strip() or (not site.multiline and "\n" in fresh):
            stop = find_stop(site, text)
        if stop is None and site.multiline and "\n" in fresh:
            stop = junk.line_ended(text)
            if stop is None:
                stop = _loop_stop(site, text, complete=False)
        return stop

    return finished


class _JunkWatch:
    """Ends a multi-line generation that keeps writing lines that are not code.

    Checked once per finished line (one parse of the window), and only where no bracket
    or string the generation opened is still open: inside one, later lines may still
    close what looks broken now. JUNK_LINES such line ends in a row whose text adds a
    syntax ERROR (a MISSING ``;`` of a call chain that goes on below does not count)
    stop generation at the last clean line end: the post-processing would cut there
    anyway, and the tokens after it are wasted time.
    """

    def __init__(self, site: CompletionSite) -> None:
        self.site = site
        self.checked_end = 0
        self.clean_end = 0
        self.streak = 0

    def line_ended(self, text: str) -> int | None:
        end = text.rfind("\n")
        if end <= self.checked_end:
            return None
        self.checked_end = end
        lines = text[:end]
        if not lines.strip() or not _settled(self.site.language, lines):
            return None
        errors = added_errors(self.site, lines)
        if not errors:
            self.clean_end, self.streak = end, 0
        elif any(error.kind == ERROR for error in errors):
            self.streak += 1
            if self.streak >= JUNK_LINES:
                return self.clean_end
        return None


def _settled(language: Language, text: str) -> bool:
    """No parenthesis, square bracket or string that ``text`` opened is still open, nor
    does it end in a line continuation: its last line can be judged. (An open ``{``
    block is fine: ``added_errors`` closes it for the check.)"""
    events, quote = _lex(language, text)
    if quote is not None or text.rstrip(" \t").endswith("\\"):
        return False
    return all(ch == "{" for _, ch in _generated_open(events))


def _generated_open(events: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Openers among ``events`` that nothing after them closes, in order."""
    stack: list[tuple[int, str]] = []
    for index, ch in events:
        if ch in OPENERS:
            stack.append((index, ch))
        elif stack and stack[-1][1] == CLOSERS[ch]:
            stack.pop()
    return stack


def added_errors(site: CompletionSite, text: str, replaced: int = 0) -> list[ErrorSpan]:
    """Syntax errors that inserting ``text`` at the cursor adds where it goes (see
    ``codeglm.syntax.guard``), forgiving what it leaves open: a completion cut short
    inside a block or a call is unfinished, not wrong, so it is checked again with its
    brackets closed (a block's ``}`` on a line of its own); an open string is not.

    A ``{`` left open alone on its line after a line that ends a statement or a block
    (or opens one) heads nothing: lines of bare ``{`` are a model stuck in a loop, and
    each would pass, taking a ``}`` from the code below. Such a brace is an error.
    """
    baseline = _baseline(site)
    events, quote = _lex(site.language, text)
    opened = _generated_open(events)
    for index, ch in opened:
        line_start = text.rfind("\n", 0, index) + 1
        if ch == "{" and not text[line_start:index].strip():
            above = (site.prefix + text[:line_start]).rstrip()
            if not above or above.endswith(("{", "}", ";")):
                start = baseline.cursor + len(text[:index].encode("utf-8"))
                return [ErrorSpan(ERROR, start, start + 1)]
    errors = new_errors(baseline, text, replaced)
    if errors and opened and not quote:
        # (a string left open is not forgiven: the user would get an unterminated
        # string, e.g. a lone docstring opener that swallows the code below)
        closing = "".join("\n}" if ch == "{" else OPENERS[ch] for _, ch in reversed(opened))
        errors = new_errors(baseline, text, replaced, closing)
    return errors


def _baseline(site: CompletionSite) -> SyntaxBaseline:
    if site.syntax is not None:
        return site.syntax
    return syntax_baseline(site.language, site.prefix[site.window_start :], _suffix_window(site.suffix))


# --- brackets and overlap ---------------------------------------------------------------


def _bracket_events(language: Language, text: str) -> list[tuple[int, str]]:
    """(index, bracket) outside strings and comments, by a small lexer (not a parser: the
    text is one line or a prefix that may not parse)."""
    return _lex(language, text)[0]


def _lex(language: Language, text: str) -> tuple[list[tuple[int, str]], str | None]:
    """Bracket events, and the quote of a string still open at the end of ``text``."""
    events: list[tuple[int, str]] = []
    comment = language.line_comment
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            if ch == "\n" and len(quote) == 1 and quote != "`":
                quote = None
            i += 1
            continue
        if text.startswith(comment, i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if language.block_comment and text.startswith(language.block_comment[0], i):
            end = text.find(language.block_comment[1], i + 2)
            i = n if end < 0 else end + len(language.block_comment[1])
            continue
        if ch in "\"'`":
            if language.indentation_blocks and text.startswith(ch * 3, i):
                quote = ch * 3
                i += 3
                continue
            if ch == "'" and not language.indentation_blocks and language.id in ("rust",):
                # Rust lifetimes ('a) are not quotes; char literals are at most a few chars.
                close = text.find("'", i + 1)
                if close < 0 or close - i > 4:
                    i += 1
                    continue
            quote = ch
        elif ch in OPENERS or ch in CLOSERS:
            events.append((i, ch))
        i += 1
    return events, quote


def _open_stack(language: Language, text: str) -> list[str]:
    stack: list[str] = []
    for _, ch in _bracket_events(language, text):
        if ch in OPENERS:
            stack.append(ch)
        elif stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
    return stack


def balance_line(site: CompletionSite, line: str, cut_short: bool = False) -> str:
    """Cut at a closer that matches nothing; drop a closer the rest of the line supplies;
    when generation was cut short mid-line, close what the line opened and left open."""
    window = site.prefix[site.window_start :]
    stack: list[tuple[str, bool]] = [(ch, False) for ch in _open_stack(site.language, window)]
    # Closers after the cursor that close brackets opened before it (auto-closed ")" on
    # the line, the "}" of the enclosing blocks below): generating them again doubles them.
    closed_after = len(_unmatched_closers(site.language, _suffix_window(site.suffix)))
    # Brackets opened before the cursor that nothing after it closes: the line may close these.
    allowed = max(0, len(stack) - closed_after)
    pops: list[int] = []  # where the line closes a bracket opened before the cursor
    for index, ch in _bracket_events(site.language, line):
        if ch in OPENERS:
            stack.append((ch, True))
            continue
        if not stack or stack[-1][0] != CLOSERS[ch]:
            line = line[:index]
            break
        _, generated = stack.pop()
        if not generated:
            pops.append(index)
    reopened = sum(1 for _, generated in stack if generated)
    excess = len(pops) - reopened - allowed
    if excess > 0:
        # "} else {" closes and reopens: fine. "x);" before an existing ")" is not.
        line = line[: pops[len(pops) - excess]]
    line = _drop_overlap(line, site.line_suffix)
    if not cut_short:
        return line  # a line the model ended itself: open brackets go on over the next lines
    missing = [OPENERS[ch] for ch, generated in reversed(_line_stack(site, line)) if generated]
    return line + "".join(missing)


def _suffix_window(suffix: str) -> str:
    end = 0
    for _ in range(WINDOW_LINES):
        end = suffix.find("\n", end) + 1
        if end == 0:
            return suffix
    return suffix[:end]


def _unmatched_closers(language: Language, text: str) -> list[str]:
    """Closers in ``text`` with no opener in ``text``, in order."""
    depth: list[str] = []
    unmatched: list[str] = []
    for _, ch in _bracket_events(language, text):
        if ch in OPENERS:
            depth.append(ch)
        elif depth and depth[-1] == CLOSERS[ch]:
            depth.pop()
        elif not depth:
            unmatched.append(ch)
    return unmatched


def _line_stack(site: CompletionSite, line: str) -> list[tuple[str, bool]]:
    stack: list[tuple[str, bool]] = []
    for _, ch in _bracket_events(site.language, line):
        if ch in OPENERS:
            stack.append((ch, True))
        elif stack and stack[-1][0] == CLOSERS[ch]:
            stack.pop()
    return stack


def _drop_overlap(text: str, following: str) -> str:
    """Remove the longest tail of ``text`` that the text after the cursor begins with."""
    following = following.lstrip()
    stripped = text.rstrip()
    for k in range(min(len(stripped), len(following)), 0, -1):
        if stripped.endswith(following[:k]):
            return stripped[:-k]
    return text


# --- the whole post-processing ------------------------------------------------------------


def postprocess(site: CompletionSite, generation: str, truncated: bool = False) -> Processed | None:
    """The text to insert (``"\\n"`` line endings), or None when nothing useful is left.

    ``truncated``: generation hit its token limit (its last line may be cut mid-way).
    """
    text = generation.replace("\r\n", "\n")
    stop = find_stop(site, text)
    if stop is not None:
        text = text[:stop]
    replace = 0
    if site.multiline:
        loop = _loop_stop(site, text)
        if loop is not None:
            text, stop = text[:loop], loop
        text, replace = _finish_block(site, text, cut_short=truncated and stop is None)
    else:
        lead = ""
        if not site.line_suffix.strip() and site.line_prefix.strip():
            lead = text[: len(text) - len(text.lstrip("\n"))]  # going on with the next line
        line = text[len(lead) :].split("\n", 1)[0]
        cut_short = truncated and stop is None and "\n" not in text[len(lead) :]
        text = lead + balance_line(site, line, cut_short).rstrip()
    if not text.strip():
        return None
    # Never show what is not code: keep the longest run of whole lines that adds no syntax error.
    text, replace = clean_lines(text, replace, lambda kept, replacing: not added_errors(site, kept, replacing))
    if not text.strip():
        return None
    return Processed(text=text, multiline=site.multiline, replace_suffix_chars=replace)


def _finish_block(site: CompletionSite, text: str, cut_short: bool) -> tuple[str, int]:
    """(text, characters of the cursor's line it replaces) for a multi-line completion."""
    if cut_short and "\n" in text.strip("\n"):
        # Ran out of tokens mid-block: keep whole lines only.
        last_newline = text.rstrip().rfind("\n")
        if last_newline > 0 and not text.endswith("\n"):
            text = text[:last_newline]
    text = text.rstrip()
    replace = 0
    if site.opens_block and not site.language.indentation_blocks and text.endswith("}"):
        rest = site.line_suffix.lstrip()
        if rest.startswith("}"):
            # ``{|}``: the editor auto-closed the block on the cursor's line. Our brace sits
            # on its own, properly indented line: replace the editor's instead of doubling it.
            replace = len(site.line_suffix) - len(rest) + 1
        elif _next_line_closes_opener(site):
            text = text[:-1].rstrip()
    if replace == 0 and site.line_suffix.strip():
        trimmed = _drop_overlap(text, site.line_suffix)
        text = trimmed
    return text, replace


def _next_line_closes_opener(site: CompletionSite) -> bool:
    """The first non-blank line after the cursor is a ``}`` at the opener's indentation."""
    for line in site.suffix.split("\n")[1:]:
        if line.strip():
            return line.lstrip().startswith("}") and _indent_width(line) == _indent_width(site.line_prefix)
    return False


# --- HumanEval-style whole-function generation -----------------------------------------


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
        site = CompletionSite(lang, prompt, "", "", "", True, False, _window_start(lang, prompt))
        stop = find_stop(site, generation)
        return (generation if stop is None else generation[:stop]).rstrip()
    innermost = open_scopes[0]
    if innermost.type == "ERROR" or innermost.has_error and innermost.end_byte <= cursor:
        return _reference_truncation(lang, generation)
    if lang.indentation_blocks:
        if innermost.end_byte > cursor and _content_after(text_bytes, innermost.end_byte):
            return generation[: char_offset(text_bytes, innermost.end_byte) - len(prompt)].rstrip()
        if _content_after(text_bytes, cursor) and innermost.end_byte <= cursor:
            return _reference_truncation(lang, generation)
        return generation.rstrip()
    if not _last_child_closes(innermost):
        return _reference_truncation(lang, generation)
    end = char_offset(text_bytes, innermost.end_byte) - len(prompt)
    kept = generation[:end]
    rest = generation[end:]
    for outer in open_scopes[1:]:
        stripped = rest.lstrip()
        if _last_child_closes(outer) and stripped.startswith("}"):
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
    for index, ch in _bracket_events(lang, generation):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return generation[: index + 1]
    return generation.rstrip()
