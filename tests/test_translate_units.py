"""Splitting real multi-unit files (tests/fixtures/translate/) into translation units."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeglm.completion.parse_cache import parse_text
from codeglm.languages import language_for_path
from codeglm.translation.units import split_units, whole_file_unit

FIXTURES = Path(__file__).parent / "fixtures" / "translate"

# file -> the (kind, name) of its units, in order.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "inventory_report.py": [
        ("imports", "2 line(s)"),
        ("constant", "MAX_ITEMS"),
        ("type", "Inventory"),
        ("function", "pages"),
        ("function", "describe"),
        ("statement", "__name__"),
    ],
    "StockLedger.java": [
        ("imports", "3 line(s)"),
        ("type", "StockLedger"),
        ("type", "Report"),
        ("type", "Unit"),
    ],
    "stock_ledger.cpp": [
        ("imports", "4 line(s)"),
        ("constant", "MAX_ITEMS"),
        ("type", "StockLedger"),
        ("type", "Point"),
        ("function", "clamp_value"),
        ("function", "pages"),
    ],
    "stockLedger.js": [
        ("imports", "2 line(s)"),
        ("constant", "MAX_ITEMS"),
        ("type", "StockLedger"),
        ("function", "pages"),
        ("function", "describe"),
        ("statement", "StockLedger"),
    ],
    "stock_ledger.go": [
        ("imports", "2 line(s)"),
        ("constant", "MaxItems"),
        ("type", "Ledger"),
        ("function", "NewLedger"),
        ("function", "Add"),
        ("function", "Pages"),
        ("function", "Describe"),
    ],
    "stock_ledger.rs": [
        ("imports", "2 line(s)"),
        ("constant", "MAX_ITEMS"),
        ("type", "Ledger"),
        ("type", "Ledger"),
        ("type", "Ledger"),
        ("function", "pages"),
    ],
}

# file -> (class that is split when long, its methods in order)
SPLIT: dict[str, tuple[str, list[str]]] = {
    "inventory_report.py": ("Inventory", ["__init__", "add", "total"]),
    "StockLedger.java": ("StockLedger", ["add", "total"]),
    "stock_ledger.cpp": ("StockLedger", ["add", "total"]),
    "stockLedger.js": ("StockLedger", ["constructor", "add", "total"]),
    "stock_ledger.rs": ("Ledger", ["add", "total"]),
}


def _load(name: str):
    path = FIXTURES / name
    language = language_for_path(path)
    assert language is not None
    return language, path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_units_of_each_language(name: str) -> None:
    language, source = _load(name)
    units = split_units(language, source)
    assert [(u.kind, u.name) for u in units] == EXPECTED[name]
    lines = source.split("\n")
    covered: set[int] = set()
    for unit in units:
        # A unit is whole lines of the source, in order, never overlapping another.
        assert unit.text == "\n".join(lines[unit.start_line : unit.end_line + 1])
        span = set(range(unit.start_line, unit.end_line + 1))
        assert not span & covered
        covered |= span
    # Every line with code is in some unit.
    assert {i for i, line in enumerate(lines) if line.strip()} <= covered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_definition_units_parse_on_their_own(name: str) -> None:
    language, source = _load(name)
    for unit in split_units(language, source):
        if unit.kind in ("type", "function", "constant", "imports"):
            assert not parse_text(language, unit.text + "\n").root_node.has_error, unit.label


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_a_long_class_is_split_into_head_and_methods(name: str) -> None:
    language, source = _load(name)
    container, methods = SPLIT[name]
    # Everything longer than 40 characters counts as "too long" here.
    units = split_units(language, source, max_unit_tokens=40, count_tokens=len)
    parts = [u for u in units if u.container == container]
    assert [u.kind for u in parts] == ["head"] + ["member"] * len(methods)
    assert [u.name for u in parts[1:]] == methods
    head = parts[0]
    # The head keeps the class header and its fields but none of the methods, and parses.
    assert head.text.startswith(head.container_header.split("\n")[0])
    for member in parts[1:]:
        first_line = member.text.strip().split("\n")[0]
        assert first_line not in head.text
        assert member.container_header == head.container_header
    assert not parse_text(language, head.text + "\n").root_node.has_error
    # Short classes stay whole.
    whole = split_units(language, source, max_unit_tokens=10_000, count_tokens=len)
    assert not any(u.kind in ("head", "member") for u in whole)


def test_split_class_head_keeps_fields() -> None:
    language, source = _load("StockLedger.java")
    head = next(u for u in split_units(language, source, 40, len) if u.kind == "head")
    assert "private final Map<String, Integer> counts" in head.text
    assert head.text.rstrip().endswith("}")
    language, source = _load("inventory_report.py")
    head = next(u for u in split_units(language, source, 40, len) if u.kind == "head")
    assert head.text == 'class Inventory:\n    """Counts items by name."""'


def test_whole_file_unit() -> None:
    unit = whole_file_unit("a = 1\nb = 2\n")
    assert (unit.kind, unit.text, unit.start_line) == ("file", "a = 1\nb = 2", 0)
