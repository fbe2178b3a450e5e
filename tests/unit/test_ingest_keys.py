"""Ingest keys: hashed at rest, one tenant each; attribution maps; reading request bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.ingest.attribution import AttributionMap
from services.ingest.batch import map_records, read_records
from services.ingest.errors import BadPayload, IngestConfigError
from services.ingest.keys import hash_key, load_keys, parse_keys
from services.ingest.sources import native

DOC = {
    "keys": [
        {
            "id": "acme-gw",
            "tenant": "acme",
            "key_sha256": hash_key("acme-secret"),
            "helicone_secret_env": "ACME_HMAC",
            "attribution": {"feature": ["Helicone-Property-Feature"], "team": "metadata.team"},
        },
        {"id": "globex", "tenant": "globex", "key_sha256": hash_key("globex-secret")},
    ]
}


def test_keys_are_found_by_their_value_and_carry_their_tenant():
    ring = parse_keys(DOC, {"ACME_HMAC": "hmac-key"})
    assert ring.by_secret("acme-secret").tenant == "acme"
    assert ring.by_secret("globex-secret").tenant == "globex"
    assert ring.by_secret("acme-secret ") is None
    assert ring.by_id("acme-gw").helicone_secret == "hmac-key"
    assert "acme-secret" not in repr(ring)


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"id": "x", "tenant": "t"}, "keys[0].key_sha256"),
        ({"id": "x", "tenant": "t", "key_sha256": "abc"}, "keys[0].key_sha256"),
        (
            {"id": "x", "tenant": "t", "key_sha256": "a" * 64, "helicone_secret_env": "NOPE"},
            "keys[0].helicone_secret_env",
        ),
        (
            {"id": "x", "tenant": "t", "key_sha256": "a" * 64, "attribution": {"squad": "x"}},
            "keys[0].attribution.squad",
        ),
        ({"id": "x", "tenant": "t", "key_sha256": "a" * 64, "colour": "red"}, "keys[0]"),
    ],
)
def test_bad_key_entries_name_where(entry, where):
    with pytest.raises(IngestConfigError) as err:
        parse_keys({"keys": [entry]}, {})
    assert err.value.where == where


def test_keys_load_from_a_yaml_file_or_inline_json(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - id: a\n    tenant: acme\n    key_sha256: {hash_key('k')}\n")
    assert load_keys({"ALLOTMENT_INGEST_KEYS_FILE": str(path)}).by_secret("k").tenant == "acme"
    inline = orjson.dumps({"keys": [{"id": "b", "tenant": "t2", "key_sha256": hash_key("j")}]})
    assert load_keys({"ALLOTMENT_INGEST_KEYS": inline.decode()}).by_secret("j").tenant == "t2"
    with pytest.raises(IngestConfigError):
        load_keys({})


def test_attribution_map_prefers_configured_names_then_defaults():
    amap = AttributionMap(
        feature=("Helicone-Property-Feature",), team=("metadata.team", "header.x-team")
    )
    context = {"property.feature": "search", "header.x-team": "core"}
    assert amap.resolve(context, {"team": "fallback", "user": "u"}) == {
        "team": "core",
        "feature": "search",
        "user": "u",
        "tags": [],
    }
    assert amap.resolve({}, {"tags": "a, b"})["tags"] == ["a", "b"]


def test_read_records_accepts_array_object_and_json_lines():
    assert read_records(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert read_records(b'{"a": 1}') == [{"a": 1}]
    lines = read_records(b'{"a": 1}\n\n{"a": 2}\n', "application/x-ndjson")
    assert lines == [{"a": 1}, {"a": 2}]
    assert read_records(b"") == []
    with pytest.raises(BadPayload):
        read_records(b"not json at all")


def test_a_mixed_batch_rejects_each_bad_record_and_keeps_the_rest():
    ring = parse_keys(DOC, {"ACME_HMAC": "h"})
    good = {"source_request_id": "g", "occurred_at": "2026-11-27T10:00:00Z", "output": 3}
    body = b"\n".join(
        [
            orjson.dumps(good),
            b"{broken",
            orjson.dumps({**good, "source_request_id": "o", "tenant": "globex"}),
            orjson.dumps({**good, "source_request_id": "g2", "cache_read": -1}),
            orjson.dumps({**good, "source_request_id": "g3"}),
        ]
    )
    records = read_records(body, "application/x-ndjson")
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)  # received after the records happened (10:00)
    batch = map_records(records, native.to_draft, ring.by_id("acme-gw"), now)
    assert [r.to_dict() for r in batch.rejected] == [
        {"index": 1, "field": "(record)", "rule": "is not valid JSON"},
        {
            "index": 2,
            "field": "tenant",
            "rule": "must be the ingest key's tenant ('acme'), not 'globex'",
        },
        {"index": 3, "field": "cache_read", "rule": "must be >= 0 (got -1)"},
    ]
    assert batch.indices == [0, 4]
    ids = batch.event_ids()
    assert ids[1] is None and ids[0] and ids[4]
    assert all(e.tenant == "acme" for e in batch.events)


def test_one_secret_cannot_belong_to_two_keys():
    shared = hash_key("shared")
    with pytest.raises(IngestConfigError, match="appears twice") as caught:
        parse_keys(
            {
                "keys": [
                    {"id": "acme-gw", "tenant": "acme", "key_sha256": shared},
                    {"id": "globex-gw", "tenant": "globex", "key_sha256": shared.upper()},
                ]
            },
            {},
        )
    assert caught.value.where == "keys.globex-gw.key_sha256"
    assert "acme-gw" in caught.value.rule
