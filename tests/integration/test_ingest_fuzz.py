"""Random JSON bodies on every ingest route never make the server fail (invariant 4).

Whatever a gateway sends, the answer is a 2xx, a 4xx naming what is wrong, or (only when Kafka
does not acknowledge) 503; never a 500 that loses the good records with the bad. The bodies mix
purely random JSON with records built from the field names the mappers actually read, filled
with values of the wrong kind, so the fuzzing reaches past each mapper's first check.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import MemorySink, key_ring, serve

from services.ingest.keys import hash_key

KEY = "fuzz-ingest-key"
HMAC_KEY = "fuzz-hmac"

ROUTES = (
    "/v1/usage",
    "/v1/ingest/litellm",
    "/v1/ingest/portkey",
    "/v1/ingest/bifrost",
    "/v1/ingest/openai",
    "/v1/ingest/anthropic",
    "/v1/ingest/helicone",
)

# Names the mappers read, so random records reach their deeper checks.
FIELDS = [
    "source_request_id",
    "occurred_at",
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "tenant",
    "team",
    "feature",
    "user",
    "tags",
    "model",
    "provider",
    "cost_micros",
    "id",
    "startTime",
    "endTime",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "response_cost",
    "metadata",
    "model_group",
    "usage_object",
    "hidden_params",
    "cache_hit",
    "request_id",
    "created_at",
    "request",
    "response",
    "body",
    "usage",
    "ai_org",
    "ai_model",
    "req_units",
    "res_units",
    "cost",
    "is_success",
    "virtual_key",
    "trace_id",
    "span_id",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "cached_tokens",
    "reasoning_tokens",
    "timestamp",
    "latency",
    "status",
    "object",
    "token_usage",
    "cached_read_tokens",
    "cached_write_tokens",
    "properties",
    "requestBody",
    "responseBody",
    "promptTokens",
    "completionTokens",
    "totalTokens",
    "properties",
    "response_body",
    "request_body",
]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "-1", "1e400", "9" * 5000, "2026-11-27T10:00:00Z"]),
)
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=25,
)
BODIES = st.one_of(JSON, st.lists(st.dictionaries(KEYS, JSON, max_size=8), max_size=5))

_USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 9},
}
# One good record per route: mutating its leaves reaches checks that random keys never do.
SAMPLES: dict[str, dict[str, Any]] = {
    "/v1/usage": {
        "source_request_id": "n-1",
        "occurred_at": "2026-11-27T10:00:00Z",
        "input_uncached": 10,
        "cache_read": 5,
        "output": 7,
        "cost_micros": 12,
        "tags": ["a"],
    },
    "/v1/ingest/litellm": {
        "id": "ll-1",
        "startTime": 1764237600.0,
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "response_cost": 0.001,
        "metadata": {
            "usage_object": {"cache_read_input_tokens": 3},
            "user_api_key_team_alias": "t",
        },
        "request_tags": ["x"],
        "cache_hit": False,
    },
    "/v1/ingest/portkey": {
        "id": "pk-1",
        "created_at": "2026-11-27T09:00:00Z",
        "ai_org": "anthropic",
        "cost": 0.5,
        "response": {"body": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
        "req_units": 5,
        "metadata": {"_user": "u"},
    },
    "/v1/ingest/bifrost": {
        "id": "bf-1",
        "timestamp": "2026-11-27T09:00:00Z",
        "status": "success",
        "cost": 0.01,
        "token_usage": {**_USAGE, "prompt_tokens_details": {"cached_read_tokens": 30}},
    },
    "/v1/ingest/openai": {
        "id": "resp-1",
        "object": "response",
        "created_at": 1795780800,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 3,
            "input_tokens_details": {"cached_tokens": 1},
        },
    },
    "/v1/ingest/anthropic": {
        "id": "msg-1",
        "occurred_at": "2026-11-27T09:00:00Z",
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 7, "output_tokens": 2},
    },
    "/v1/ingest/helicone": {
        "request_id": "h-1",
        "model": "gpt-4o",
        "response_body": orjson.dumps({"usage": _USAGE}).decode(),
        "metadata": {"cost": 0.002, "promptTokens": 5, "completionTokens": 1},
    },
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        found = [prefix] if prefix else []
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
        return found
    return [prefix]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if not isinstance(value, dict) or path[0] not in value:
        return value  # an earlier replacement took this branch away
    return {**value, path[0]: _replace(value[path[0]], path[1:], new)}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, list[Any]]:
    """A route with a batch: good records and copies with a few leaves replaced."""
    route = draw(st.sampled_from(ROUTES))
    sample = SAMPLES[route]
    records: list[Any] = [sample]
    for _ in range(draw(st.integers(1, 3))):
        record = sample
        for path in draw(st.lists(st.sampled_from(_paths(sample)), min_size=1, max_size=3)):
            record = _replace(record, path, draw(JSON))
        records.append(record)
    return route, records


def _any_value() -> st.SearchStrategy[Any]:
    kind = st.sampled_from(
        ["stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue"]
    )
    return st.one_of(JSON, st.dictionaries(kind, JSON, min_size=1, max_size=2))


OTLP_ATTRS = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.one_of(
                st.sampled_from(
                    [
                        "gen_ai.usage.input_tokens",
                        "gen_ai.usage.output_tokens",
                        "gen_ai.usage.cache_read.input_tokens",
                        "gen_ai.operation.name",
                        "gen_ai.request.model",
                        "gen_ai.system",
                        "openinference.span.kind",
                        "metadata",
                        "tag.tags",
                        "user.id",
                    ]
                ),
                JSON,
            ),
            "value": _any_value(),
        }
    ),
    max_size=5,
)
OTLP_SPAN = st.fixed_dictionaries(
    {},
    optional={
        "traceId": st.one_of(JSON, st.just("5b8efff798038103d269b633813fc60c")),
        "spanId": st.one_of(JSON, st.just("eee19b7ec3c1b174")),
        "parentSpanId": JSON,
        "startTimeUnixNano": JSON,
        "name": JSON,
        "attributes": st.one_of(OTLP_ATTRS, JSON),
    },
)
OTLP_BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "resourceSpans": st.one_of(
                JSON,
                st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "resource": st.one_of(
                                JSON, st.fixed_dictionaries({"attributes": OTLP_ATTRS})
                            ),
                            "scopeSpans": st.one_of(
                                JSON,
                                st.lists(
                                    st.fixed_dictionaries(
                                        {"spans": st.lists(OTLP_SPAN, max_size=3)}
                                    ),
                                    max_size=2,
                                ),
                            ),
                        },
                    ),
                    max_size=2,
                ),
            )
        }
    ),
)


def _keys():
    return key_ring(
        {
            "id": "fuzz",
            "tenant": "fuzz",
            "key_sha256": hash_key(KEY),
            "helicone_secret": HMAC_KEY,
        }
    )


def _headers(route: str, body: bytes) -> dict[str, str]:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    if route == "/v1/ingest/helicone":
        import hashlib
        import hmac

        headers["helicone-signature"] = hmac.new(
            HMAC_KEY.encode(), body, hashlib.sha256
        ).hexdigest()
    return headers


FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_random_json_on_every_record_route_never_gives_5xx():
    with serve(_keys(), MemorySink()) as base, httpx.Client(base_url=base, timeout=30) as http:

        @FUZZ
        @given(route=st.sampled_from(ROUTES), document=BODIES)
        def post(route: str, document: Any) -> None:
            body = orjson.dumps(document)
            response = http.post(route, content=body, headers=_headers(route, body))
            assert response.status_code < 500, (route, body[:300], response.text[:300])
            if response.status_code in (207, 422):
                for rejection in response.json()["rejected"]:
                    assert isinstance(rejection["field"], str) and rejection["rule"]
                    # The catch-all in map_records is a last resort: mappers check explicitly.
                    assert "could not be read" not in rejection["rule"], (route, body[:300])

        post()


def test_good_records_survive_their_mutated_neighbours():
    """A batch of one good record and mutated copies: never 5xx, and the good one is kept."""
    with serve(_keys(), MemorySink()) as base, httpx.Client(base_url=base, timeout=30) as http:

        @FUZZ
        @given(case=mutated())
        def post(case: tuple[str, list[Any]]) -> None:
            route, records = case
            body = orjson.dumps(records)
            response = http.post(route, content=body, headers=_headers(route, body))
            assert response.status_code in (200, 207), (route, body[:400], response.text[:300])
            answer = response.json()
            assert answer["event_ids"][0] is not None
            assert not [r for r in answer["rejected"] if "could not be read" in r["rule"]], (
                route,
                body[:400],
                answer["rejected"],
            )

        post()


def test_random_otlp_json_never_gives_5xx():
    with serve(_keys(), MemorySink()) as base, httpx.Client(base_url=base, timeout=30) as http:

        @FUZZ
        @given(document=OTLP_BODIES)
        def post(document: Any) -> None:
            body = orjson.dumps(document)
            response = http.post("/v1/traces", content=body, headers=_headers("", body))
            assert response.status_code < 500, (body[:300], response.text[:300])
            assert "could not be read" not in response.text, (body[:300], response.text[:300])

        post()


def test_a_signature_with_non_ascii_characters_is_refused_not_a_crash():
    with serve(_keys(), MemorySink()) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.post(
            "/v1/ingest/helicone?key_id=fuzz",
            content=b"{}",
            headers={"helicone-signature": "caf\xe9".encode("latin-1")},
        )
    assert response.status_code == 401
    assert "Helicone-Signature" in response.json()["error"]
