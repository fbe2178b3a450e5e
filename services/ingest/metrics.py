"""Prometheus counters of the ingest edge, in a registry of their own per app instance.

A registry per app keeps tests (which build many apps in one process) from colliding on
metric names; `/metrics` serves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

if TYPE_CHECKING:
    from services.ingest.batch import MappedBatch


class IngestMetrics:
    """Accepted and rejected records per source, and batches refused for lack of Kafka."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "allotment_ingest_accepted_total",
            "Usage events accepted and acknowledged",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "allotment_ingest_rejected_total",
            "Records rejected with a field error",
            ["source"],
            registry=self.registry,
        )
        self.unavailable = Counter(
            "allotment_ingest_unavailable_total",
            "Requests answered 503 (Kafka did not ack)",
            ["source"],
            registry=self.registry,
        )

    def record(self, source: str, batch: MappedBatch) -> None:
        self.accepted.labels(source).inc(len(batch.events))
        self.rejected.labels(source).inc(len(batch.rejected))
