"""The Kafka topics of Allotment: names under one prefix, keys, partitions, cleanup.

Topics are part of the contract. The project creates them itself (broker auto-creation is off),
so each one's partition count and cleanup policy live here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PREFIX = "allotment"


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    key: str
    partitions: int
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"


FOREVER = {"retention.ms": "-1"}
"""Facts: Kafka is their source of truth, so a projection rebuilt from offset zero finds them all
(charges are derived from usage and may expire with the default retention)."""

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Records carry the broker's clock, not the producer's: the topics whose record times are
compared with each other (usage and budget-events) share one clock, and a producer's skew or a
re-publication with old timestamps cannot move a record in time."""

USAGE_MAX_MESSAGE_BYTES = 1_048_576
"""The largest record batch the usage topic takes (its `max.message.bytes`) and the usage
producer's `max_request_size`: one number, so the producer never builds a message the topic
refuses. Envelope producers stay a margin below it (`services.common.usage_producer`)."""

USAGE = TopicSpec(
    "usage",
    key="event_id",
    partitions=6,
    config={
        **FOREVER,
        **APPEND_TIME,
        "max.message.bytes": str(USAGE_MAX_MESSAGE_BYTES),
    },
)
"""Usage records carry the broker's append time, not the producer's: the worker's dedupe window
runs on record time, and history re-published with its original (old) timestamps would
otherwise leave that window at once and be charged again. Event time is each event's
`occurred_at`, never the record timestamp. Replays read the stored append time, so they stay
deterministic."""

ALIGNED_CONFIGS = ("message.timestamp.type", "max.message.bytes")
"""Config keys that `ensure_topics` also sets on a topic that already exists (created before the
key joined its spec): keys the code's correctness depends on. A usage topic made before its
`max.message.bytes` was set has the broker's default, which may differ from what the producer
builds to. Every other key applies only when a topic is created: retention and the like stay as
the topic was made or as an operator has since changed them."""

BUDGETS = TopicSpec("budgets", key="budget_id", partitions=1, compacted=True)
CHARGES = TopicSpec("charges", key="budget_id", partitions=6)
# Thresholds and policies are co-partitioned with charges (same count, same key): each is the
# changelog of a pipeline table that the worker owning a charges partition restores, so "already
# emitted" is read back from the output topic itself (streams/faust/tables.py).
THRESHOLDS = TopicSpec(
    "thresholds", key="budget_id", partitions=CHARGES.partitions, config=dict(FOREVER)
)
POLICIES = TopicSpec("policies", key="budget_id", partitions=CHARGES.partitions, compacted=True)
FORECASTS = TopicSpec("forecasts", key="budget_id", partitions=3, config=dict(FOREVER))
DEAD_LETTER = TopicSpec("deadletter", key="origin", partitions=1)
BUDGET_EVENTS = TopicSpec(
    "budget-events", key="tenant", partitions=3, config={**FOREVER, **APPEND_TIME}
)
"""Every config event (budget lifecycle and allocation), never compacted or expired: the source
of truth for budgets and the audit log. `budgets` is its compacted mirror (latest per budget).
Records carry the broker's append time like usage records: the warehouse takes a revision to be
in force from its record time and matches usage by the usage record's time, so both must be the
broker's clock, not an API host's. Events keep their own `occurred_at`; records appended before
an existing topic was aligned keep the time the API gave them.
"""
ALERT_DELIVERIES = TopicSpec(
    "alert-deliveries", key="budget_id", partitions=3, config=dict(FOREVER)
)
"""The final outcome of every alert delivery (`schemas.alerts`). Keyed by budget id: a budget's
whole alert history is one ordered partition, so every outcome of one alert (it belongs to one
budget) stays in order, and readers that join deliveries with `thresholds` or `policies` use the
same key. Readers dedupe by `alert_id`."""

ALL: list[TopicSpec] = [
    USAGE,
    BUDGETS,
    CHARGES,
    THRESHOLDS,
    POLICIES,
    FORECASTS,
    DEAD_LETTER,
    BUDGET_EVENTS,
    ALERT_DELIVERIES,
]


def prefix_from_env() -> str:
    return os.environ.get("ALLOTMENT_TOPIC_PREFIX", DEFAULT_PREFIX)
