"""The conventional name of a translated file (``MathUtil.java`` -> ``math_util.py``)."""

from __future__ import annotations

import re

from codeglm.languages import get_language


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


__all__ = ["convert_name", "output_name"]
