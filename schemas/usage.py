"""Usage facts: one LLM request's token counts, attributed and timed by when it happened.

Token fields are disjoint parts, so nothing is counted twice whatever the source's convention:
`input_uncached + cache_read + cache_write = input_total`, and `output` already includes
`reasoning`. Ingest adapters translate each provider's convention onto these parts.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import SchemaValidator, TzInfo, core_schema

from schemas.base import (
    MAX_TOKENS,
    Event,
    Name,
    NonNegativeTokens,
    TenantId,
    UtcDatetime,
    require_utc,
)

UsageStatus = Literal["reported", "estimated", "missing"]
Decision = Literal["forwarded", "degraded", "blocked"]


MAX_AHEAD = timedelta(days=1)
"""How far `occurred_at` may run ahead of an instant known to be real: when the event was
received (the contract, at ingest and in every reader), or when the broker stored its record
(`schemas.codec.UsageReader`, in the worker and the warehouse alike).

Only absurd times are refused: a wrong year or month in a backfill file, seconds read as
milliseconds, a clock reset. Such an event did not happen when it says, and charged, it would
be counted in a period that has not begun. A gateway whose clock is a few minutes fast is
still reporting real, billed usage (refused at ingest, which most gateways do not retry, it
would be lost against the provider's bill): it is accepted and charged to the period its time
names, and it cannot move a budget ledger's "now" further than `CLOCK_SKEW` past the charge
record's time (`streams.ledger.apply_charge(newest_trusted_ms=)`), so it closes no period early.
A fixed contract constant, not a setting: what one reader accepts, every reader accepts, on
every replay.
"""

CLOCK_SKEW = timedelta(minutes=5)
"""The worker's default ledger cap (`allotment worker --clock-skew-seconds`,
ALLOTMENT_CLOCK_SKEW_SECONDS): how far past a charge record's broker time its lines may move a
budget ledger's "now". An event stamped further ahead (up to `MAX_AHEAD`) is still charged, to
its own period, but the ledger's now stops at the cap, so one fast clock cannot close the
current period of every budget it matches. Five minutes is the tolerance long used for clocks
that are merely unsynchronised (Kerberos' default maximum skew). Not a rule of the contract:
no event is refused for it.
"""


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No usage of a language model is older: an `occurred_at` before it is a zero, truncated or
mistyped timestamp (year 1 even overflowed the period arithmetic of zones west of UTC)."""


def occurred_at_problem(occurred_at: datetime, received_at: datetime) -> str | None:
    """The rule `occurred_at` breaks, if any: not before `EARLIEST`, at most `MAX_AHEAD` after
    received_at."""
    if occurred_at < EARLIEST:
        return f"must not be before {EARLIEST.isoformat()} (a zero or mistyped timestamp)"
    return ahead_problem(occurred_at, received_at, "received_at")


def ahead_problem(occurred_at: datetime, reference: datetime, reference_name: str) -> str | None:
    """The rule `occurred_at` breaks when it is more than `MAX_AHEAD` after `reference` (an
    instant known to be real: when the event was received, or when the broker stored it)."""
    ahead = occurred_at - reference
    if ahead <= MAX_AHEAD:
        return None
    ahead -= timedelta(microseconds=ahead.microseconds)
    return (
        f"must not be more than {MAX_AHEAD} after {reference_name} (no real clock is "
        f"that far ahead), is {ahead} after it"
    )


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

    @model_validator(mode="wrap")
    @classmethod
    def _derive_and_check(
        cls, data: Any, handler: ModelWrapValidatorHandler[UsageRecorded]
    ) -> UsageRecorded:
        """Fill what a source may leave out (event id, totals), then check the token parts add up
        and that the event's time is plausible (`occurred_at_problem`).

        One wrap step instead of a "before" and an "after" one, and no copy of the payload
        unless something is filled in: every usage event of the pipeline passes here.
        """
        if isinstance(data, dict):
            data = _with_derived(data)
        event = handler(data)
        problem = _totals_problem(
            event.input_uncached, event.cache_read, event.cache_write, event.output,
            event.reasoning, event.input_total, event.total,
        )  # fmt: skip
        if problem is None:
            rule = occurred_at_problem(event.occurred_at, event.received_at)
            problem = None if rule is None else f"occurred_at: {rule}"
        if problem is not None:
            raise ValueError(problem)
        return event


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _with_derived(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with a missing event id and missing totals derived; `data` itself if none is.

    Totals are derived only from parts that are already integers (a part sent as "12" is
    validated first, so a missing total then reads 0 and the totals check names it).
    """
    get = data.get
    derived: dict[str, Any] = {}
    if not get("event_id"):
        source, request_id, tenant = get("source"), get("source_request_id"), get("tenant")
        if source and request_id and tenant:
            derived["event_id"] = scoped_event_id(str(source), str(tenant), str(request_id))
    if "input_total" not in data or "total" not in data:
        parts = get("input_uncached", 0), get("cache_read", 0), get("cache_write", 0)
        if _whole(parts[0]) and _whole(parts[1]) and _whole(parts[2]):
            input_total = parts[0] + parts[1] + parts[2]
            if "input_total" not in data:
                derived["input_total"] = input_total
            output = get("output", 0)
            if "total" not in data and _whole(output):
                derived["total"] = input_total + output
    return {**data, **derived} if derived else data


def _totals_problem(
    input_uncached: int,
    cache_read: int,
    cache_write: int,
    output: int,
    reasoning: int,
    input_total: int,
    total: int,
) -> str | None:
    """The first broken token rule, as "field: rule", or None when the parts add up."""
    if reasoning > output:
        return "reasoning: must not exceed output (output includes reasoning)"
    if input_total != input_uncached + cache_read + cache_write:
        return "input_total: must equal input_uncached + cache_read + cache_write"
    if total != input_total + output:
        return "total: must equal input_total + output"
    return None


def _field_steps_only() -> SchemaValidator | None:
    """UsageRecorded's own field schema (types, bounds, patterns, extra=forbid) without its
    Python steps: the derivation, the UTC normalisation and the totals check.

    None when the model has any other step than those `usage_fields` redoes (a validator
    added later): then every payload goes to the model rather than past an unchecked rule.
    """
    schema = UsageRecorded.__pydantic_core_schema__
    definitions = schema.get("definitions", []) if schema["type"] == "definitions" else []
    node: Any = schema["schema"] if schema["type"] == "definitions" else schema
    known = {UsageRecorded._derive_and_check, require_utc}
    config = None
    while node["type"] != "model-fields":
        if node["type"] == "model":
            config = node.get("config")
        elif node.get("function", {}).get("function") not in known:
            return None
        node = node["schema"]
    stripped = 0

    def strip(value: Any) -> Any:
        nonlocal stripped
        if isinstance(value, dict):
            function = value.get("function")
            if isinstance(function, dict) and value.get("type", "").startswith("function"):
                if function.get("function") is not require_utc or value["type"] != "function-after":
                    raise LookupError(function)
                stripped += 1
                return strip(value["schema"])
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    try:
        fields = strip(node)
    except LookupError:
        return None
    if stripped != 2:  # occurred_at, received_at
        return None
    if definitions:
        fields = core_schema.definitions_schema(fields, definitions)
    return SchemaValidator(fields, config)


_FIELD_STEPS = _field_steps_only()


def usage_fields(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The field values `UsageRecorded` would hold for `payload`, or None: then ask the model.

    The resolve stage validates every usage event but needs only a few of its fields; building
    the model costs about twice this. Whenever this returns fields, the model accepts the
    same payload with the same values (its field schema is the model's own, and the Python
    steps are redone here, the `MAX_AHEAD` rule included), except that timestamps keep the
    offset they were written with (same instant; the model normalises them to UTC). None covers
    everything rarer: an event id to derive, totals to derive from parts that are not integers
    yet, and every invalid payload, for which the model raises the contract's reasons. (A
    missing or empty event id fails the field schema, so the derivation of one is always the
    model's.)
    """
    if _FIELD_STEPS is None:
        return None
    try:
        fields: dict[str, Any] = _FIELD_STEPS.validate_python(payload)[0]
    except ValidationError:
        return None
    if (
        fields["occurred_at"].tzinfo.__class__ is not TzInfo
        or fields["received_at"].tzinfo.__class__ is not TzInfo
    ):
        return None  # naive (the model says why), or a tzinfo object passed in from Python
    input_total = fields["input_uncached"] + fields["cache_read"] + fields["cache_write"]
    output = fields["output"]
    if "input_total" not in payload or "total" not in payload:
        # Derived as the model derives, from parts sent as integers (exactly int here: any
        # other kind goes to the model, which knows the rule for it).
        get = payload.get
        raw = get("input_uncached", 0), get("cache_read", 0), get("cache_write", 0)
        if type(raw[0]) is not int or type(raw[1]) is not int or type(raw[2]) is not int:
            return None
        if "input_total" not in payload:
            fields["input_total"] = input_total
        if "total" not in payload:
            if type(get("output", 0)) is not int:
                return None
            fields["total"] = input_total + output
    if (
        fields["reasoning"] > output
        or fields["total"] > MAX_TOKENS  # a derived total is bounded like a sent one
        or fields["input_total"] != input_total
        or fields["total"] != input_total + output
        or occurred_at_problem(fields["occurred_at"], fields["received_at"])
    ):
        return None  # the model names the broken rule (_totals_problem, occurred_at_problem)
    return fields


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
