"""What the proxy's integration tests share: a running proxy in front of the fake provider,
budget and policy events put on the real topics, and usage events read back from the real topic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakes.kafka_io import read_usage_by_partition, send_events
from schemas.base import Event
from schemas.budgets import BudgetDefined, BudgetSpec
from schemas.signals import PolicyChanged, ThresholdCrossed
from schemas.topics import BUDGETS, POLICIES, THRESHOLDS
from schemas.usage import UsageRecorded
from services.proxy.keys import KeyStore, hash_key
from services.proxy.server import Proxy
from services.proxy.settings import ProxySettings

SECRET = "sk-allotment-test"


@dataclass
class Running:
    proxy: Proxy
    url: str
    tenant: str
    secret: str = SECRET


def unique_tenant() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}"


def budget_defined(tenant: str, budget_id: str, total: int = 1_000_000, **spec: Any) -> Any:
    fields = {"name": f"{budget_id} budget", "limits": {"total_tokens": total}, **spec}
    return BudgetDefined(
        budget_id=budget_id,
        tenant=tenant,
        revision=1,
        occurred_at=datetime.now(UTC),
        actor="test",
        spec=BudgetSpec.model_validate(fields),
    )


def policy_changed(
    tenant: str,
    budget_id: str,
    policy: str,
    consumed: int,
    limit: int = 1_000_000,
    at_limit: str = "hard_stop",
    reset_in: timedelta = timedelta(hours=3),
    **extra: Any,
) -> PolicyChanged:
    now = datetime.now(UTC)
    return PolicyChanged(
        tenant=tenant,
        budget_id=budget_id,
        period_key=now.strftime("%Y-%m"),
        policy=policy,
        at_limit=at_limit,
        reason="test",
        effective_at=now - timedelta(seconds=5),
        reset_at=(now + reset_in).replace(microsecond=0),
        metric="total",
        consumed=consumed,
        limit=limit,
        remaining=max(0, limit - consumed),
        **extra,
    )


def threshold_crossed(
    tenant: str, budget_id: str, threshold: int, consumed: int, limit: int = 1_000_000
) -> ThresholdCrossed:
    """A crossing in the current month, a few seconds ago."""
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return ThresholdCrossed(
        tenant=tenant,
        budget_id=budget_id,
        period_key=now.strftime("%Y-%m"),
        period_start=start,
        period_end=end,
        metric="total",
        threshold=threshold,
        consumed=consumed,
        limit=limit,
        effective_limit=limit,
        crossed_at=now - timedelta(seconds=5),
    )


async def publish(bootstrap: str, prefix: str, events: Iterable[Event]) -> None:
    """Put budget events on `budgets`, policies on `policies` and crossings on `thresholds`,
    keyed by budget id."""

    def topic(event: Event) -> str:
        if isinstance(event, PolicyChanged):
            return POLICIES.name(prefix)
        if isinstance(event, ThresholdCrossed):
            return THRESHOLDS.name(prefix)
        return BUDGETS.name(prefix)

    await send_events(
        bootstrap,
        ((topic(e), e.budget_id, e) for e in events),  # type: ignore[attr-defined]
    )


async def read_usage(
    bootstrap: str, prefix: str, count: int, timeout: float = 30.0
) -> list[UsageRecorded]:
    """Every usage event on the topic, from the start, once at least `count` have arrived."""
    return [e for _, e in await read_usage_by_partition(bootstrap, prefix, count, timeout)]


def key_store(tenant: str, **attribution: Any) -> KeyStore:
    entry = {"id": "test-key", "key_sha256": hash_key(SECRET), "tenant": tenant, **attribution}
    return KeyStore.from_entries([entry], "test")


@asynccontextmanager
async def running_proxy(
    bootstrap: str,
    prefix: str,
    upstream: str,
    spool_dir: Path,
    tenant: str,
    wait_caught_up: bool = True,
    keys: KeyStore | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    settings = ProxySettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        upstreams={"openai": upstream, "anthropic": upstream},
        spool_dir=spool_dir,
        flush_interval_s=0.02,
        **overrides,
    )
    proxy = Proxy(settings, keys or key_store(tenant, team="support", feature="copilot"))
    await proxy.start()
    try:
        url = await proxy.serve_in_background()
        if wait_caught_up and proxy.feed is not None:
            await proxy.feed.wait_caught_up(30)
        yield Running(proxy, url, tenant)
    finally:
        await proxy.stop()


async def until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
