"""First sighting wins: how the resolve stage tells a redelivery from a duplicate.

Resolve records, per event_id, the position where it first saw the event. Seeing it again at
that same position means Kafka redelivered the message (after a crash or a rebalance): the event
is emitted again and the ledger's watermark skips what it already applied. Seeing it at another
position means a producer sent it twice: it is dropped, so it is never charged twice.
"""

from __future__ import annotations

from typing import Literal

from streams.ledger import Position

Sighting = Literal["new", "redelivery", "duplicate"]


def classify(first_seen: Position | None, position: Position) -> Sighting:
    """`new` if unseen, `redelivery` at the same position, `duplicate` at any other."""
    if first_seen is None:
        return "new"
    if first_seen == position:
        return "redelivery"
    return "duplicate"
