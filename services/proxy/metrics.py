"""The proxy's Prometheus metrics, collected at scrape time from plain counters.

The hot path only bumps a dict entry per request; everything else (spool depth, usage sent,
policy feed progress) is read from the objects that own it when /metrics is scraped, so
measuring the proxy costs the proxied requests nothing noticeable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.proxy.emitter import UsageEmitter
    from services.proxy.enforcement import PolicyCache
    from services.proxy.feed import PolicyFeed


class ProxyCollector(Collector):
    """Reads the proxy's counters when scraped."""

    def __init__(
        self,
        requests: Counter[tuple[str, int, str]],
        cache: PolicyCache,
        emitter: UsageEmitter | None,
        feed: PolicyFeed | None,
    ) -> None:
        self.requests = requests
        self.cache = cache
        self.emitter = emitter
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "allotment_proxy_requests", "Requests answered", labels=["endpoint", "status", "policy"]
        )
        for (endpoint, status, policy), count in sorted(self.requests.items()):
            requests.add_metric([endpoint, str(status), policy], count)
        yield requests
        yield GaugeMetricFamily(
            "allotment_proxy_policies_caught_up",
            "1 once the budgets/policies/thresholds topics were read to their end at start",
            value=1 if self.cache.caught_up else 0,
        )
        yield GaugeMetricFamily(
            "allotment_proxy_budgets_known", "Budgets with a state", value=len(self.cache.states)
        )
        if self.emitter is not None:
            yield GaugeMetricFamily(
                "allotment_proxy_usage_spooled",
                "Usage events in the spool, not yet acknowledged by Kafka",
                value=len(self.emitter.spool),
            )
            yield CounterMetricFamily(
                "allotment_proxy_usage_sent",
                "Usage events acknowledged by Kafka",
                value=self.emitter.sent,
            )
            yield CounterMetricFamily(
                "allotment_proxy_usage_rejected",
                "Usage records the contract refused",
                value=self.emitter.rejected,
            )
            yield CounterMetricFamily(
                "allotment_proxy_usage_set_aside",
                "Usage events too large for the usage topic, kept in the spool's set_aside table",
                value=self.emitter.set_aside,
            )
        if self.feed is not None:
            yield CounterMetricFamily(
                "allotment_proxy_feed_applied",
                "Config, policy and crossing events applied",
                value=self.feed.applied,
            )
            yield CounterMetricFamily(
                "allotment_proxy_feed_unreadable",
                "Records of the feed that could not be read",
                value=self.feed.unreadable,
            )


def render(collector: ProxyCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
