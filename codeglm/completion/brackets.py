"""Brackets, strings and comments as a lexer sees them: which brackets a text opens and closes."""

from __future__ import annotations

from codeglm.languages import Language

OPENERS = {"(": ")", "[": "]", "{": "}"}


CLOSERS = {")": "(", "]": "[", "}": "{"}


def lex(language: Language, text: str) -> tuple[list[tuple[int, str]], str | None]:
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


def bracket_events(language: Language, text: str) -> list[tuple[int, str]]:
    """(index, bracket) outside strings and comments, by a small lexer (not a parser: the
    text is one line or a prefix that may not parse)."""
    return lex(language, text)[0]


def open_stack(language: Language, text: str) -> list[str]:
    stack: list[str] = []
    for _, ch in bracket_events(language, text):
        if ch in OPENERS:
            stack.append(ch)
        elif stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
    return stack


def unmatched_closers(language: Language, text: str) -> list[str]:
    """Closers in ``text`` with no opener in ``text``, in order."""
    depth: list[str] = []
    unmatched: list[str] = []
    for _, ch in bracket_events(language, text):
        if ch in OPENERS:
            depth.append(ch)
        elif depth and depth[-1] == CLOSERS[ch]:
            depth.pop()
        elif not depth:
            unmatched.append(ch)
    return unmatched


def drop_overlap(text: str, following: str) -> str:
    """Remove the longest tail of ``text`` that the text after the cursor begins with."""
    following = following.lstrip()
    stripped = text.rstrip()
    for k in range(min(len(stripped), len(following)), 0, -1):
        if stripped.endswith(following[:k]):
            return stripped[:-k]
    return text


__all__ = ["CLOSERS", "OPENERS", "bracket_events", "drop_overlap", "lex", "open_stack", "unmatched_closers"]
