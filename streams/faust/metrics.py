"""Prometheus metrics of one worker: what came in, what was charged, what was set aside.

A registry per worker (not the process-global default), built by the composition root, so
tests can build several without collisions. `serve` exposes it on the worker's web port.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


@dataclass(frozen=True)
class WorkerMetrics:
    registry: CollectorRegistry
    events_in: Counter
    charges: Counter
    lines_applied: Counter
    duplicates: Counter
    late_events: Counter
    dead_letters: Counter
    thresholds: Counter
    policies: Counter
    consumer_lag: Gauge

    @classmethod
    def build(cls) -> WorkerMetrics:
        registry = CollectorRegistry()

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"allotment_worker_{name}", doc, registry=registry)

        return cls(
            registry=registry,
            events_in=counter("events_in", "Usage events read (envelopes counted per event)."),
            charges=counter("charges", "Charge messages applied to a budget ledger."),
            lines_applied=counter("lines_applied", "Charge lines folded into a ledger."),
            duplicates=counter("duplicates_dropped", "Usage events dropped as duplicates."),
            late_events=counter("late_events", "Lines beyond the late window, counted late."),
            dead_letters=counter("dead_letters", "Records sent to the dead-letter topic."),
            thresholds=counter("thresholds_emitted", "Threshold crossings published."),
            policies=counter("policies_emitted", "Routing policy changes published."),
            consumer_lag=Gauge(
                "allotment_worker_consumer_lag",
                "Records between the consumer's position and the partition's end.",
                ["topic", "partition"],
                registry=registry,
            ),
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on `port` (0 picks a free one); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
