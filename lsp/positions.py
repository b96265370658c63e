"""LSP positions count UTF-16 code units; Python strings count code points.

A character outside the Basic Multilingual Plane (an emoji, some CJK) is one Python
character but two UTF-16 units, so every position crossing the LSP boundary goes
through these functions.
"""

from __future__ import annotations


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def utf16_to_index(line: str, utf16_character: int) -> int:
    """The str index in ``line`` of the LSP character offset ``utf16_character``.

    An offset past the end of the line clamps to the line's end (as the LSP spec asks);
    one that falls inside a surrogate pair rounds up to the next character.
    """
    units = 0
    for index, char in enumerate(line):
        if units >= utf16_character:
            return index
        units += _utf16_units(char)
    return len(line)


def index_to_utf16(line: str, index: int) -> int:
    """The LSP character offset of str index ``index`` in ``line`` (clamped to the line)."""
    return sum(_utf16_units(char) for char in line[: max(0, index)])


def line_at(text: str, line: int) -> str:
    """Line ``line`` of ``text`` without its line ending ("" past the end)."""
    # Split on "\n" only, as ``codeglm.completion.context.offset_of`` counts lines.
    lines = text.split("\n")
    return lines[line].removesuffix("\r") if 0 <= line < len(lines) else ""
