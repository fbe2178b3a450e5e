"""`add_lines` tells its caller when nothing changed by returning the very state it was given."""

from __future__ import annotations

from streams.forecast.usage_days import UsageDays, add_lines
from streams.ledger import ChargeLine

NOON = 1_763_035_200_000  # 2025-11-13T12:00:00Z


def _line(offset: int, tokens: int) -> ChargeLine:
    return ChargeLine.from_wire([offset, 0, NOON, tokens, 1])


def test_a_fully_redelivered_charge_returns_the_same_state() -> None:
    lines = [_line(5, 10), _line(6, 20)]
    once = add_lines(UsageDays("b"), "UTC", 0, lines)
    assert add_lines(once, "UTC", 0, lines) is once
    assert add_lines(once, "UTC", 0, lines[:1]) is once
    assert add_lines(once, "UTC", 0, []) is once


def test_a_charge_with_nothing_for_a_new_partition_returns_the_same_state() -> None:
    state = add_lines(UsageDays("b"), "UTC", 0, [_line(5, 10)])
    assert add_lines(state, "UTC", 3, []) is state


def test_a_partly_redelivered_charge_adds_only_the_lines_past_the_watermark() -> None:
    once = add_lines(UsageDays("b"), "UTC", 0, [_line(5, 10)])
    again = add_lines(once, "UTC", 0, [_line(5, 10), _line(7, 30)])
    assert again is not once
    assert again.days == {"2025-11-13": (40, 2)}
    assert again.watermarks[0] == _line(7, 30).position
