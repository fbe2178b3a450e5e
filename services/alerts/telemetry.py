"""Budget events out to OpenTelemetry (OTLP/HTTP logs + metrics) and Prometheus `/metrics`.

Each signal event the service consumes becomes one OTLP log record carrying the budget's
attributes, and sets the per-budget gauges of consumption, limit and projection. Telemetry is
best effort: it is emitted after the batch commits, so a crash in between loses the record
(the outbox and the topics do not depend on it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.base import Event
from schemas.signals import PolicyChanged, ThresholdCrossed
from services.alerts.payload import BudgetView

log = logging.getLogger(__name__)


def projection_points(projection: dict[str, Any]) -> dict[str, float]:
    """p50 and the band edges, named as the `allotment.point` attribute names them."""
    points = {"p50": float(projection["p50"])}
    for key, name in (("band80", "p80"), ("band95", "p95")):
        points[f"{name}_low"] = float(projection[key]["low"])
        points[f"{name}_high"] = float(projection[key]["high"])
    return points


def event_time(event: Event) -> Any:
    for name in ("crossed_at", "effective_at", "detected_at", "as_of"):
        if hasattr(event, name):
            return getattr(event, name)
    return None


def budget_attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "allotment.tenant": getattr(event, "tenant", ""),
        "allotment.budget.id": getattr(event, "budget_id", ""),
        "allotment.period.key": getattr(event, "period_key", ""),
        "allotment.event.type": event.TYPE,
    }
    if isinstance(event, ThresholdCrossed):
        attrs |= {
            "allotment.threshold": event.threshold,
            "allotment.metric": event.metric,
            "allotment.consumed": event.consumed,
            "allotment.limit": event.limit,
            "allotment.effective_limit": event.effective_limit,
        }
    if isinstance(event, PolicyChanged):
        attrs |= {"allotment.policy": event.policy, "allotment.policy.reason": event.reason}
    return attrs


class Telemetry:
    """Holds the Prometheus registry and, when an OTLP endpoint is set, the OTel providers."""

    def __init__(
        self, otlp_endpoint: str | None = None, interval_ms: int = 10_000, service: str = "alerts"
    ) -> None:
        self.registry = CollectorRegistry()
        labels = ["tenant", "budget_id", "metric"]
        self.events = Counter(
            "allotment_alerts_events", "Signal events consumed", ["type"], registry=self.registry
        )
        self.deliveries = Counter(
            "allotment_alerts_deliveries",
            "Delivery attempts by channel type and outcome",
            ["channel_type", "outcome"],
            registry=self.registry,
        )
        self.enqueued = Counter(
            "allotment_alerts_enqueued", "Outbox rows added", registry=self.registry
        )
        self.skipped = Counter(
            "allotment_alerts_skipped_records",
            "Records that were not events this service reads",
            registry=self.registry,
        )
        self.outbox_rows = Gauge(
            "allotment_alerts_outbox_rows",
            "Outbox rows by state",
            ["state"],
            registry=self.registry,
        )
        self.consumed = Gauge(
            "allotment_budget_consumed_tokens", "Consumed tokens", labels, registry=self.registry
        )
        self.limit = Gauge(
            "allotment_budget_limit_tokens", "Effective limit", labels, registry=self.registry
        )
        self.projected = Gauge(
            "allotment_budget_projected_tokens",
            "Projected period-end consumption (p50)",
            labels,
            registry=self.registry,
        )
        self._logger_provider: LoggerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        if otlp_endpoint:
            self._start_otel(otlp_endpoint.rstrip("/"), interval_ms, service)

    def _start_otel(self, base: str, interval_ms: int, service: str) -> None:
        resource = Resource.create({"service.name": f"allotment-{service}"})
        self._logger_provider = LoggerProvider(resource=resource)
        self._logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{base}/v1/logs"), schedule_delay_millis=interval_ms
            )
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=interval_ms
        )
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._meter_provider.get_meter("allotment.alerts")
        self._otel_consumed = meter.create_gauge(
            "allotment.budget.consumption", unit="{token}", description="Consumed tokens"
        )
        self._otel_limit = meter.create_gauge(
            "allotment.budget.limit", unit="{token}", description="Effective limit"
        )
        self._otel_projection = meter.create_gauge(
            "allotment.budget.projection",
            unit="{token}",
            description="Projected period-end consumption; `allotment.point` names the quantile",
        )
        self._otel_logger = self._logger_provider.get_logger("allotment.alerts")

    def record_event(self, event: Event, view: BudgetView) -> None:
        """Export one consumed signal event and the budget's state after it."""
        tenant, budget_id = getattr(event, "tenant", ""), getattr(event, "budget_id", "")
        self.events.labels(event.TYPE).inc()
        self.set_budget(tenant, budget_id, view)
        if self._logger_provider is None:
            return
        at = event_time(event)
        critical = isinstance(event, PolicyChanged) and event.policy == "hard_stop"
        self._otel_logger.emit(
            timestamp=int(at.timestamp() * 1e9) if at is not None else time.time_ns(),
            severity_number=SeverityNumber.WARN if critical else SeverityNumber.INFO,
            severity_text="WARN" if critical else "INFO",
            body=f"{event.TYPE} {budget_id}",
            attributes=budget_attributes(event),
            event_name=f"allotment.budget.{event.TYPE}",
        )

    def set_budget(self, tenant: str, budget_id: str, view: BudgetView) -> None:
        """Set the per-budget gauges (also used to seed them from PostgreSQL at start)."""
        metric = view.metric or "total"
        labels = (tenant, budget_id, metric)
        limit = view.effective_limit or view.limit
        projection = view.projection(view.metric)
        if view.consumed is not None:
            self.consumed.labels(*labels).set(view.consumed)
        if limit:
            self.limit.labels(*labels).set(limit)
        if projection is not None:
            self.projected.labels(*labels).set(float(projection["p50"]))
        if self._meter_provider is None:
            return
        attrs = {"allotment.tenant": tenant, "allotment.budget.id": budget_id}
        attrs["allotment.metric"] = metric
        if view.consumed is not None:
            self._otel_consumed.set(view.consumed, attrs)
        if limit:
            self._otel_limit.set(limit, attrs)
        if projection is not None:
            for name, value in projection_points(projection).items():
                self._otel_projection.set(value, {**attrs, "allotment.point": name})

    def delivery_outcome(self, channel_type: str, outcome: str) -> None:
        self.deliveries.labels(channel_type, outcome).inc()

    def set_outbox_counts(self, counts: dict[str, int]) -> None:
        for state, n in counts.items():
            self.outbox_rows.labels(state).set(n)

    def shutdown(self) -> None:
        """Flush and stop the exporters (a final export of logs and metrics)."""
        if self._logger_provider is not None:
            self._logger_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
