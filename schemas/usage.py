"""Usage facts: one LLM request's token counts, attributed and timed by when it happened.

Token fields are disjoint parts, so nothing is counted twice whatever the source's convention:
`input_uncached + cache_read + cache_write = input_total`, and `output` already includes
`reasoning`. Ingest adapters translate each provider's convention onto these parts.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue, model_validator

from schemas.base import Event, Name, NonNegativeTokens, TenantId, UtcDatetime

UsageStatus = Literal["reported", "estimated", "missing"]
Decision = Literal["forwarded", "degraded", "blocked"]


def derive_event_id(source: str, source_request_id: str) -> str:
    """Idempotency key for sources that do not give one: the same request always maps here."""
    digest = hashlib.sha256(f"{source}\x1f{source_request_id}".encode()).hexdigest()
    return f"{source}:{digest[:32]}"


def scoped_event_id(source: str, tenant: str, request_id: str) -> str:
    """The event id of a source's request, scoped to the tenant that sent it.

    The pipeline dedupes by event id across all tenants, so two tenants whose sources reuse a
    request id (sequential ids, a shared test fixture, a forged id) must not collide: one
    would be dropped as the other's duplicate. The same tenant resending the same request
    still gets the same id, which is what makes retries and backfills idempotent. Every edge
    (ingest, proxy) and the schema's own default derive ids this way.
    """
    return derive_event_id(source, f"{tenant}\x1f{request_id}")


class UsageRecorded(Event):
    """One request's usage. `event_id` is the idempotency key: a second copy is a duplicate."""

    TYPE: ClassVar[str] = "UsageRecorded"
    VERSION: ClassVar[int] = 1

    type: Literal["UsageRecorded"] = "UsageRecorded"
    version: Literal[1] = 1

    event_id: Name
    source: Name
    source_request_id: Name | None = None
    occurred_at: UtcDatetime
    received_at: UtcDatetime

    tenant: TenantId
    team: Name | None = None
    feature: Name | None = None
    user: Name | None = None
    virtual_key: Name | None = None
    tags: list[Name] = Field(default_factory=list, max_length=64)
    properties: dict[str, JsonValue] = Field(default_factory=dict)

    provider: Name | None = None
    request_model: Name | None = None
    response_model: Name | None = None

    input_uncached: NonNegativeTokens = 0
    cache_read: NonNegativeTokens = 0
    cache_write: NonNegativeTokens = 0
    output: NonNegativeTokens = 0
    reasoning: NonNegativeTokens = 0
    input_total: NonNegativeTokens = 0
    total: NonNegativeTokens = 0

    cost_micros: NonNegativeTokens | None = None
    usage_status: UsageStatus = "reported"

    decision: Decision | None = None
    routed_from_model: Name | None = None
    routed_to_model: Name | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        source, request_id, tenant = (
            data.get(k) for k in ("source", "source_request_id", "tenant")
        )
        if not data.get("event_id") and source and request_id and tenant:
            data["event_id"] = scoped_event_id(str(source), str(tenant), str(request_id))
        parts = [data.get(k, 0) for k in ("input_uncached", "cache_read", "cache_write")]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
            input_total = sum(parts)
            data.setdefault("input_total", input_total)
            output = data.get("output", 0)
            if isinstance(output, int) and not isinstance(output, bool):
                data.setdefault("total", input_total + output)
        return data

    @model_validator(mode="after")
    def _check_totals(self) -> UsageRecorded:
        if self.reasoning > self.output:
            raise ValueError("reasoning: must not exceed output (output includes reasoning)")
        if self.input_total != self.input_uncached + self.cache_read + self.cache_write:
            raise ValueError("input_total: must equal input_uncached + cache_read + cache_write")
        if self.total != self.input_total + self.output:
            raise ValueError("total: must equal input_total + output")
        return self


class UsageBatch(Event):
    """An envelope of usage events bound for one partition of the usage topic.

    Producers pack events so that one Kafka message carries many; an event's position is then
    (offset, index). Every event in a batch must hash to the partition the batch is sent to,
    so that dedupe stays local to a partition.
    """

    TYPE: ClassVar[str] = "UsageBatch"
    VERSION: ClassVar[int] = 1

    type: Literal["UsageBatch"] = "UsageBatch"
    version: Literal[1] = 1
    events: list[UsageRecorded] = Field(min_length=1, max_length=10_000)
