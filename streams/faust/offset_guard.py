"""Records a partition's stream never delivered: found by their gap in offsets, never acked.

Its own module because the rule is the worker's defence against one library bug
(faust-streaming 0.15 dropping fetched records of partitions it believes paused), not part of
any stage: both reading agents (`agents.Pipeline`: resolve_usage, charge_budgets) check every
event with it before processing, and a fix upstream removes it whole.
"""

from __future__ import annotations

from collections.abc import Callable

from faust.types import EventT

from schemas.errors import AllotmentError


class SkippedRecords(AllotmentError):
    """Records of a partition never reached the agent (a gap in its offsets).

    faust-streaming 0.15 can leave a fetched record out of a stream without a word (its
    fetcher filters records of partitions it believes paused) and then counts the hole as
    acknowledged once a later offset is. Usage and charges are written without transactions,
    so their offsets have no holes: a gap means a lost record. The worker exits before acking
    anything after it, so the record is read again after the restart.
    """

    def __init__(self, topic: str, partition: int, expected: int, got: int) -> None:
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.got = got
        super().__init__(
            f"offset: {topic}[{partition}] skipped offsets {expected}..{got - 1} (got {got})"
        )


class OffsetGuard:
    """Per partition, the offset the agent must see next; reset at every (re)assignment.

    The first record after an assignment is checked against the group's committed offset
    (`committed(topic, partition)`, the next offset to read, None for a new group): records
    fetched while the partitions were paused for recovery are the ones Faust drops.
    """

    def __init__(self, committed: Callable[[str, int], int | None] = lambda t, p: None) -> None:
        self.expected: dict[tuple[str, int], int] = {}
        self.committed = committed

    def reset(self) -> None:
        self.expected.clear()

    def check(self, events: list[EventT]) -> None:
        for event in events:
            message = event.message
            tp = (message.topic, message.partition)
            expected = self.expected.get(tp)
            if expected is None:
                expected = self.committed(message.topic, message.partition)
            if expected is not None and message.offset > expected:
                raise SkippedRecords(message.topic, message.partition, expected, message.offset)
            self.expected[tp] = message.offset + 1
