"""First sighting wins."""

from __future__ import annotations

from streams.dedupe import classify


def test_unseen_event_is_new() -> None:
    assert classify(None, (10, 0)) == "new"


def test_same_position_is_a_redelivery() -> None:
    assert classify((10, 3), (10, 3)) == "redelivery"


def test_other_position_is_a_duplicate() -> None:
    assert classify((10, 3), (10, 4)) == "duplicate"
    assert classify((10, 3), (11, 3)) == "duplicate"
    assert classify((12, 0), (10, 0)) == "duplicate"
