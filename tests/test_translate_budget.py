"""The up-front size of a translation: the estimate's arithmetic, its words, the limit."""

from __future__ import annotations

import pytest

from codeglm.translation.budget import (
    ASSUMED_TOKENS_PER_SECOND,
    Estimate,
    TooManyUnitsError,
    check_unit_limit,
    decode_speed,
    estimate_translation,
    format_duration,
    too_many_units_message,
)
from codeglm.translation.types import TranslationError
from codeglm.translation.units import Unit


def _unit(text: str) -> Unit:
    return Unit("function", "f", text, 0, 0)


def test_expected_tokens_are_the_units_own_counts_capped_per_unit() -> None:
    units = [_unit("a" * 40), _unit("b" * 400), _unit("")]
    estimate = estimate_translation(units, lambda text: len(text) // 4, 10.0, "configured")
    assert (estimate.units, estimate.tokens) == (3, 10 + 100 + 1)
    capped = estimate_translation(units, lambda text: len(text) // 4, 10.0, "configured", max_new_tokens=20)
    assert capped.tokens == 10 + 20 + 1 and capped.seconds == pytest.approx(3.1)


def test_decode_speed_is_configured_else_measured_else_assumed() -> None:
    assert decode_speed(12.5, {"decode_steps": 100, "decode_seconds": 1.0}) == (12.5, "configured")
    assert decode_speed(None, {"decode_steps": 100, "decode_seconds": 2.0}) == (
        50.0,
        "measured on this model",
    )
    # Too few steps to mean anything, or no measurement at all.
    assert decode_speed(None, {"decode_steps": 2, "decode_seconds": 0.01}) == (
        ASSUMED_TOKENS_PER_SECOND,
        "assumed",
    )
    assert decode_speed(None, None) == (ASSUMED_TOKENS_PER_SECOND, "assumed")
    with pytest.raises(TranslationError, match="> 0"):
        decode_speed(0.0, None)


def test_durations_are_as_precise_as_a_rough_guess() -> None:
    assert [format_duration(s) for s in (0.2, 45, 89, 600, 5340, 5400, 32_700)] == [
        "1 s",
        "45 s",
        "89 s",
        "10 min",
        "89 min",
        "1 h 30 min",
        "9 h 05 min",
    ]


def test_the_limit_refuses_past_it_only_and_zero_means_none() -> None:
    big = Estimate(units=13_755, tokens=700_000, tokens_per_second=20.0, speed_source="assumed")
    check_unit_limit(big, None)
    check_unit_limit(big, 0)
    check_unit_limit(big, 13_755)
    with pytest.raises(TooManyUnitsError) as caught:
        check_unit_limit(big, 500)
    assert caught.value.estimate is big and caught.value.limit == 500
    with pytest.raises(TranslationError, match=">= 0"):
        check_unit_limit(big, -1)
    message = too_many_units_message(big, 500, "pass --max-units 13755")
    assert message.startswith("13,755 units to translate, more than the limit of 500 (roughly 9 h 43 min")
    assert message.endswith("Translate a part of the file, or pass --max-units 13755")
    assert big.line() == (
        "13,755 units to translate, roughly 9 h 43 min (about 700,000 tokens to generate at 20 tok/s, "
        "assumed; a rough guess: retries and long prompts add more)"
    )
