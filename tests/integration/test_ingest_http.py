"""The ingest service over HTTP against the real broker: batches, keys, tenants, signatures, 503."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid

import httpx
import orjson
import pytest
from fakes.kafka_io import read_usage_by_partition
from fakes.net import free_port
from ingest_support import kafka_sink, key_ring, serve

from services.common.kafka import partition_for
from services.ingest.errors import IngestConfigError
from services.ingest.keys import hash_key
from services.ingest.sources.base import scoped_event_id

ACME_KEY = "acme-ingest-key"
GLOBEX_KEY = "globex-ingest-key"
HMAC_KEY = "helicone-hmac-key"


def _keys():
    return key_ring(
        {
            "id": "acme-gw",
            "tenant": "acme",
            "key_sha256": hash_key(ACME_KEY),
            "helicone_secret": HMAC_KEY,
            "attribution": {"feature": ["Helicone-Property-Feature"], "team": ["metadata.team"]},
        },
        {"id": "globex-gw", "tenant": "globex", "key_sha256": hash_key(GLOBEX_KEY)},
    )


def _record(request_id: str, **extra):
    return {
        "source_request_id": request_id,
        "occurred_at": "2026-11-27T10:00:00Z",
        "input_uncached": 10,
        "cache_read": 5,
        "output": 7,
        **extra,
    }


async def test_mixed_batch_accepts_the_valid_records_and_names_each_bad_one(
    kafka_bootstrap, topic_prefix
):
    run = uuid.uuid4().hex[:6]
    body = [
        _record(f"{run}-a", metadata={"team": "core"}),
        _record(f"{run}-b", tenant="globex"),
        {"occurred_at": "2026-11-27T10:00:00Z", "output": 1},
        _record(f"{run}-c", output=2, reasoning=3),
        _record(f"{run}-d"),
    ]
    with serve(_keys(), kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/v1/usage", json=body, headers={"Authorization": f"Bearer {ACME_KEY}"}
            )
    assert response.status_code == 207
    result = response.json()
    assert result["accepted"] == 2
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [
        (1, "tenant"),
        (2, "source_request_id"),
        (3, "reasoning"),
    ]
    ids = result["event_ids"]
    assert ids[0] == scoped_event_id("native", "acme", f"{run}-a")
    assert ids[1] is None and ids[2] is None and ids[3] is None
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=2)
    by_id = {e.event_id: e for _, e in on_topic}
    assert set(by_id) == {ids[0], ids[4]}
    assert by_id[ids[0]].team == "core"
    assert all(e.tenant == "acme" for e in by_id.values())
    assert (by_id[ids[4]].input_total, by_id[ids[4]].total) == (15, 22)


async def test_keys_decide_the_tenant_and_unknown_keys_are_refused(kafka_bootstrap, topic_prefix):
    request_id = uuid.uuid4().hex
    with serve(_keys(), kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            missing = await client.post("/v1/usage", json=[_record(request_id)])
            unknown = await client.post(
                "/v1/usage", json=[_record(request_id)], headers={"X-Allotment-Key": "nope"}
            )
            other = await client.post(
                "/v1/usage",
                json=[_record(request_id, tenant="acme")],
                headers={"X-Allotment-Key": GLOBEX_KEY},
            )
            bad_body = await client.post(
                "/v1/usage", content=b"\x00\x01", headers={"X-Allotment-Key": GLOBEX_KEY}
            )
    assert (missing.status_code, unknown.status_code, bad_body.status_code) == (401, 401, 400)
    assert other.status_code == 422
    assert other.json()["rejected"][0]["field"] == "tenant"
    assert other.json()["accepted"] == 0


async def test_redelivered_record_carries_the_same_event_id_to_the_same_partition(
    kafka_bootstrap, topic_prefix
):
    record = _record(uuid.uuid4().hex)
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    with serve(_keys(), kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/v1/usage", json=[record], headers=headers)
            again = await client.post(
                "/v1/usage",
                content=orjson.dumps(record) + b"\n",
                headers={**headers, "Content-Type": "application/x-ndjson"},
            )
    assert first.status_code == again.status_code == 200
    assert first.json()["event_ids"] == again.json()["event_ids"]
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=2)
    assert len(on_topic) == 2
    (p1, e1), (p2, e2) = on_topic
    assert e1.event_id == e2.event_id == first.json()["event_ids"][0]
    assert p1 == p2 == partition_for(e1.event_id, 6)


def _signed(payload: dict, key: str = HMAC_KEY) -> tuple[bytes, str]:
    body = orjson.dumps(payload)
    return body, hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


async def test_helicone_webhook_needs_a_valid_signature(kafka_bootstrap, topic_prefix):
    request_id = str(uuid.uuid4())
    payload = {
        "request_id": request_id,
        "user_id": "user-7",
        "request_body": '{"model": "gpt-4o-mini"}',
        "response_body": '{"usage": {"prompt_tokens": 1100, "completion_tokens": 15, '
        '"prompt_tokens_details": {"cached_tokens": 1024}}}',
        "model": "gpt-4o-mini",
        "provider": "OPENAI",
        "properties": {"Feature": "search"},
        "metadata": {"cost": 0.0015, "promptTokens": 76, "completionTokens": 15},
    }
    body, signature = _signed(payload)
    with serve(_keys(), kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            post = "/v1/ingest/helicone?key_id=acme-gw"
            json_type = {"Content-Type": "application/json"}
            good = await client.post(
                post, content=body, headers={**json_type, "Helicone-Signature": signature}
            )
            _, wrong = _signed(payload, "another-key")
            forged = await client.post(
                post, content=body, headers={**json_type, "Helicone-Signature": wrong}
            )
            tampered = await client.post(
                post,
                content=body.replace(b"1100", b"9100"),
                headers={**json_type, "Helicone-Signature": signature},
            )
            unsigned = await client.post(post, content=body, headers=json_type)
            no_key = await client.post(
                "/v1/ingest/helicone",
                content=body,
                headers={**json_type, "Helicone-Signature": signature},
            )
    assert good.status_code == 200, good.text
    assert [forged.status_code, tampered.status_code, unsigned.status_code] == [401, 401, 401]
    assert no_key.status_code == 401
    assert "Helicone-Signature" in forged.json()["error"]
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=1)
    assert len(on_topic) == 1
    event = on_topic[0][1]
    assert event.event_id == scoped_event_id("helicone", "acme", request_id)
    assert (event.input_uncached, event.cache_read, event.output) == (76, 1024, 15)
    assert (event.feature, event.user, event.tenant) == ("search", "user-7", "acme")


async def test_broker_down_answers_503_and_accepts_nothing():
    closed = f"127.0.0.1:{free_port()}"
    sink = kafka_sink(closed, "unused")
    batch = [_record("down-1"), _record("down-2", tenant="globex")]
    with serve(_keys(), sink) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.post(
                "/v1/usage", json=batch, headers={"Authorization": f"Bearer {ACME_KEY}"}
            )
            otlp = await client.post(
                "/v1/traces",
                content=b'{"resourceSpans": []}',
                headers={"Authorization": f"Bearer {ACME_KEY}", "Content-Type": "application/json"},
            )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["accepted"] == 0
    assert "event_ids" not in response.json()
    # An export with no usage spans publishes nothing, so it needs no broker.
    assert otlp.status_code == 200


async def test_each_gateway_endpoint_maps_its_own_format(kafka_bootstrap, topic_prefix):
    run = uuid.uuid4().hex[:8]
    posts = {
        "/v1/ingest/portkey": [
            {
                "id": f"pk-{run}",
                "created_at": "2026-11-27T09:00:00Z",
                "ai_org": "openai",
                "ai_model": "gpt-4o",
                "response": {"body": {"usage": {"prompt_tokens": 50, "completion_tokens": 5}}},
                "metadata": {"team": "ml"},
            }
        ],
        "/v1/ingest/bifrost": [
            {
                "id": f"bf-{run}",
                "timestamp": "2026-11-27T09:00:00Z",
                "status": "success",
                "token_usage": {
                    "prompt_tokens": 40,
                    "completion_tokens": 4,
                    "prompt_tokens_details": {"cached_read_tokens": 30},
                },
            }
        ],
        "/v1/ingest/openai": [
            {
                "id": f"resp-{run}",
                "object": "response",
                "created_at": 1795780800,
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 3,
                    "input_tokens_details": {"cached_tokens": 10},
                },
            }
        ],
        "/v1/ingest/anthropic": [
            {
                "id": f"msg-{run}",
                "occurred_at": "2026-11-27T09:00:00Z",
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 7, "output_tokens": 2},
            }
        ],
    }
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    with serve(_keys(), kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            answers = {p: await client.post(p, json=b, headers=headers) for p, b in posts.items()}
    assert {p: r.status_code for p, r in answers.items()} == dict.fromkeys(posts, 200)
    on_topic = {
        e.source: e for _, e in await read_usage_by_partition(kafka_bootstrap, topic_prefix, 4)
    }
    parts = {s: (e.input_uncached, e.cache_read, e.output, e.team) for s, e in on_topic.items()}
    assert parts == {
        "portkey": (50, 0, 5, "ml"),
        "bifrost": (10, 30, 4, None),
        "openai": (20, 10, 3, None),
        "anthropic": (20, 7, 2, None),
    }


async def test_a_producer_that_dies_mid_run_gives_503_then_the_sink_reconnects(
    kafka_bootstrap, topic_prefix
):
    sink = kafka_sink(kafka_bootstrap, topic_prefix)
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    run = uuid.uuid4().hex[:8]
    with serve(_keys(), sink) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            before = await client.post("/v1/usage", json=[_record(f"{run}-1")], headers=headers)
            # Close the Kafka client under the running service (on the server's own loop), as
            # a lost connection would.
            kafka = sink._producer._producer  # type: ignore[union-attr]
            stopped = asyncio.run_coroutine_threadsafe(kafka.stop(), kafka._loop)
            await asyncio.wrap_future(stopped)
            during = await client.post(
                "/v1/usage", json=[_record(f"{run}-2"), _record(f"{run}-3")], headers=headers
            )
            after = await client.post("/v1/usage", json=[_record(f"{run}-2")], headers=headers)
    assert (before.status_code, during.status_code, after.status_code) == (200, 503, 200)
    assert during.json()["accepted"] == 0
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=2)
    assert sorted(e.source_request_id for _, e in on_topic) == [f"{run}-1", f"{run}-2"]


async def test_a_missing_usage_topic_is_refused_at_start(kafka_bootstrap):
    sink = kafka_sink(kafka_bootstrap, f"missing{uuid.uuid4().hex[:8]}")
    with pytest.raises(IngestConfigError) as err:
        await sink.start()
    assert "allotment create-topics" in err.value.rule
    await sink.stop()
