"""Virtual keys: hashed at rest, looked up by the presented token, config errors named."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.proxy.errors import ProxyConfigError
from services.proxy.keys import KeyStore, VirtualKey, hash_key


def test_lookup_hashes_the_token_and_nothing_stores_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{id: bot, key_sha256: {hash_key('sk-secret')}, tenant: acme, team: support,"
        " feature: copilot, tags: [prod]}\n"
    )
    store = KeyStore.load(path, None)
    assert store.lookup("sk-secret") == VirtualKey(
        "bot", "acme", "support", None, "copilot", ("prod",)
    )
    assert store.lookup("sk-other") is None
    assert "sk-secret" not in path.read_text()


def test_inline_json_keys_merge_with_the_file() -> None:
    inline = f'[{{"id": "k", "key_sha256": "{hash_key("a")}", "tenant": "t"}}]'
    store = KeyStore.load(None, inline)
    assert len(store) == 1 and store.lookup("a") is not None


def test_one_secret_in_the_file_and_inline_is_refused_naming_both_keys(tmp_path: Path) -> None:
    """Before, the inline key silently took the file key's traffic (and billed its tenant)."""
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - {{id: bot, key_sha256: {hash_key('shared')}, tenant: acme}}\n")
    inline = f'[{{"id": "intruder", "key_sha256": "{hash_key("shared")}", "tenant": "globex"}}]'
    with pytest.raises(ProxyConfigError) as caught:
        KeyStore.load(path, inline)
    assert caught.value.setting == "ALLOTMENT_PROXY_KEYS: key 'intruder'.key_sha256"
    assert "appears twice (also key 'bot')" in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"id": "k", "key_sha256": "abc", "tenant": "t"}, "keys[0].key_sha256"),
        ({"id": "k", "key_sha256": "a" * 64}, "keys[0].tenant"),
        ({"key_sha256": "a" * 64, "tenant": "t"}, "keys[0].id"),
        ({"id": "k", "key_sha256": "a" * 64, "tenant": "t", "tags": "x"}, "keys[0].tags"),
    ],
)
def test_bad_entries_name_the_field(entry: dict[str, object], field: str) -> None:
    with pytest.raises(ProxyConfigError) as caught:
        KeyStore.from_entries([entry], "cfg")
    assert caught.value.setting == f"cfg.{field}"


def test_a_digest_may_not_appear_twice() -> None:
    entry = {"id": "k", "key_sha256": "b" * 64, "tenant": "t"}
    with pytest.raises(ProxyConfigError, match="appears twice"):
        KeyStore.from_entries([entry, {**entry, "id": "j"}], "cfg")
