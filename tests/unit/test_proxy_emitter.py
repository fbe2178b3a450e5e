"""The proxy's usage events: ids follow the same tenant-scoped rule as every other edge."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.usage import UsageRecorded
from services.proxy.emitter import SOURCE, UsageRecord, to_event
from services.proxy.usage import Tokens

WHEN = datetime(2026, 11, 17, 8, 30, tzinfo=UTC)


def record(tenant: str, request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        occurred_at=WHEN,
        tenant=tenant,
        team=None,
        feature=None,
        user=None,
        virtual_key="bot",
        tags=(),
        provider="openai",
        endpoint="/v1/chat/completions",
        request_model="gpt-4o-mini",
        response_model=None,
        tokens=Tokens(input_uncached=10, output=2),
        usage_status="reported",
        decision="forwarded",
    )


def test_two_tenants_with_one_request_id_never_share_an_event_id() -> None:
    acme = to_event(record("acme", "r-1"), WHEN)
    globex = to_event(record("globex", "r-1"), WHEN)
    assert acme.event_id != globex.event_id
    assert to_event(record("acme", "r-1"), WHEN).event_id == acme.event_id


def test_the_proxy_event_id_is_the_one_the_schema_derives_for_its_request() -> None:
    event = to_event(record("acme", "r-2"), WHEN)
    wire = event.to_wire()
    del wire["event_id"]
    assert UsageRecorded.parse(wire).event_id == event.event_id
    assert event.source == SOURCE
