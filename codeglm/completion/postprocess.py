"""From a raw generation to the text worth showing: where to stop and what to drop.

Each rule lives in a module of its own in this package; this module chains them, in
the order they apply:

* **Single-line or multi-line** (``site.completion_site``): single-line when the cursor has
  text after it on its line (other than auto-closed brackets and quotes); multi-line
  when the cursor ends a line that opens a block, or stands on an empty line. Whether
  the line opens a block is read from the parse tree of the window around the cursor
  (a ``:`` of a compound statement, not of a slice or a dict; a ``{`` of a body, or of
  a literal that does not close on the same line); only where the line's last token
  sits in an ERROR node does the text decide (ends in ``{``, or in ``:`` outside
  brackets).
* **Stop where the block is complete** (``stops.find_stop``), from the parse tree of the
  text before the cursor plus the generation: after a line that opens a block, the
  statement (Python) or brace block whose opener ends that line; on an empty line, the
  block holding the cursor (its end is reached when the generation leaves it); at the
  top level, the first complete top-level item. Only where the tree has no usable node
  (the opener sits in an ERROR node) does indentation decide.
* **Balance brackets** on a single line (``balance.balance_line``): cut at a closer with no opener, close
  brackets the generation opened and left open.
* **Drop text duplicating what follows the cursor** (``brackets.drop_overlap``, ``stops``): the rest of the line
  (auto-closed brackets, quotes, semicolons), a closing brace the editor already
  inserted, lines repeating the suffix's first lines.
* **Never junk** (``junk.added_errors``, ``codeglm.syntax.guard``): keep the longest run of
  whole lines whose insertion adds no syntax error (ERROR or MISSING node in the
  inserted region that the document without it did not have); a completion cut short
  inside a block or a call is checked with what it left open closed. A single-line
  completion is kept whole or dropped.
* **No loops** (``loops.loop_cuts``): a multi-line generation that starts repeating itself -
  the same line LOOP_LINE_TIMES times in a row, or the same block of up to
  LOOP_BLOCK_LINES lines LOOP_BLOCK_TIMES times - keeps the first copy only. Small models
  do this when unsure; the copies parse, so the rule above keeps them.
* **Never only whitespace**: such results become None.

``make_finished_callback`` applies ``find_stop`` while tokens arrive so generation
stops as soon as the block is complete, and ends a multi-line generation after
JUNK_LINES finished lines in a row that add syntax errors, or once it loops;
``evals.truncation.truncate_generation`` is the same idea for HumanEval-style whole-function generation.
"""

from __future__ import annotations

from dataclasses import dataclass

from codeglm.completion.balance import balance_line
from codeglm.completion.brackets import drop_overlap
from codeglm.completion.junk import JunkWatch, added_errors
from codeglm.completion.loops import loop_stop
from codeglm.completion.site import CompletionSite
from codeglm.completion.stops import find_stop, indent_width
from codeglm.syntax.guard import clean_lines


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


class FinishedWatch:
    """The engine's finished callback (``make_finished_callback``), remembering why it
    ended generation early: ``stopped_by`` is None, "block" (complete), "junk" (lines
    that are not code) or "loop" (repeating itself), for the reason a dropped completion gives."""

    def __init__(self, site: CompletionSite) -> None:
        self.site = site
        self.checked = 0
        self.junk = JunkWatch(site)
        self.stopped_by: str | None = None

    def __call__(self, text: str) -> int | None:
        site = self.site
        fresh = text[self.checked :]
        self.checked = len(text)
        stop = None
        # Completion can only become decidable when something visible arrives.
        if fresh.strip() or (not site.multiline and "\n" in fresh):
            stop = find_stop(site, text)
            self.stopped_by = "block" if stop is not None else None
        if stop is None and site.multiline and "\n" in fresh:
            stop = self.junk.line_ended(text)
            self.stopped_by = "junk" if stop is not None else None
            if stop is None:
                stop = loop_stop(site, text, complete=False)
                self.stopped_by = "loop" if stop is not None else None
        return stop


def make_finished_callback(site: CompletionSite) -> FinishedWatch:
    """A callback for the engine: the length to keep once the completion is complete,
    or once a multi-line generation has gone on writing lines that are not code."""
    return FinishedWatch(site)


@dataclass(frozen=True)
class Dropped:
    """Why nothing of a generation is shown, in words for the user ("not valid Java from
    its first line", "repeats the text after the cursor")."""

    reason: str


def postprocess(site: CompletionSite, generation: str, truncated: bool = False) -> Processed | None:
    """The text to insert (``"\\n"`` line endings), or None when nothing useful is left.

    ``truncated``: generation hit its token limit (its last line may be cut mid-way).
    """
    processed = postprocess_explained(site, generation, truncated)
    return processed if isinstance(processed, Processed) else None


def postprocess_explained(
    site: CompletionSite, generation: str, truncated: bool = False, stopped_by: str | None = None
) -> Processed | Dropped:
    """As ``postprocess``, with the reason when nothing is left (``stopped_by``: the
    ``FinishedWatch``'s, when it ended the generation)."""
    text = generation.replace("\r\n", "\n")
    if not text.strip():
        if stopped_by == "junk":
            return Dropped(f"not valid {site.language.display_name} from its first line (generation stopped early)")
        return Dropped("the model wrote nothing but whitespace")
    stop = find_stop(site, text)
    if stop is not None:
        text = text[:stop]
    if not text.strip():
        return Dropped("the model wrote nothing before the block's end")
    replace = 0
    if site.multiline:
        loop = loop_stop(site, text)
        if loop is not None:
            text, stop = text[:loop], loop
        before = text
        text, replace = _finish_block(site, text, cut_short=truncated and stop is None)
        if not text.strip():
            return Dropped("repeats the text after the cursor" if before.strip() else "nothing left after the cut")
    else:
        lead = ""
        if not site.line_suffix.strip() and site.line_prefix.strip():
            lead = text[: len(text) - len(text.lstrip("\n"))]  # going on with the next line
        line = text[len(lead) :].split("\n", 1)[0]
        cut_short = truncated and stop is None and "\n" not in text[len(lead) :]
        text = lead + balance_line(site, line, cut_short).rstrip()
        if not text.strip():
            return Dropped("the model's line only closed brackets or repeated the text after the cursor")
    # Never show what is not code: keep the longest run of whole lines that adds no syntax error.
    lines = text.count("\n") + 1
    text, replace = clean_lines(text, replace, lambda kept, replacing: not added_errors(site, kept, replacing))
    if not text.strip():
        where = "on the cursor's line" if lines == 1 else f"from its first line ({lines} lines written)"
        return Dropped(f"not valid {site.language.display_name} {where}")
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
        trimmed = drop_overlap(text, site.line_suffix)
        text = trimmed
    return text, replace


def _next_line_closes_opener(site: CompletionSite) -> bool:
    """The first non-blank line after the cursor is a ``}`` at the opener's indentation."""
    for line in site.suffix.split("\n")[1:]:
        if line.strip():
            return line.lstrip().startswith("}") and indent_width(line) == indent_width(site.line_prefix)
    return False


__all__ = ["Dropped", "FinishedWatch", "Processed", "make_finished_callback", "postprocess", "postprocess_explained"]
