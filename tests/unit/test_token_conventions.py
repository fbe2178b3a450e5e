"""The shared provider token conventions, under both policies: ingest rejects, the proxy clamps.

Each impossible count is fed to ingest's readers (it must raise `RecordRejected` naming the
field) and to the proxy's readers (it must return the documented repair), so the two edges
cannot drift apart on what a provider's counts mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.token_conventions import (
    MAX_TOKENS,
    ZERO,
    TokenParts,
    anthropic,
    any_provider,
    clamp,
    count,
    openai_chat,
    openai_responses,
)
from services.ingest import tokens as ingest
from services.ingest.errors import RecordRejected
from services.proxy import usage as proxy

Reader = Callable[[Mapping[str, Any]], TokenParts | None]

# (provider, usage, the field ingest names, the parts the proxy records)
IMPOSSIBLE: list[tuple[str, dict[str, Any], str, tuple[int, ...]]] = [
    ("chat", {"prompt_tokens": -1, "completion_tokens": 3}, "usage.prompt_tokens", (0, 0, 0, 3, 0)),
    (
        "chat",
        {"prompt_tokens": True, "completion_tokens": 3},
        "usage.prompt_tokens",
        (0, 0, 0, 3, 0),
    ),
    (
        "chat",
        {"prompt_tokens": 1.5, "completion_tokens": 3},
        "usage.prompt_tokens",
        (0, 0, 0, 3, 0),
    ),
    (
        "chat",
        {"prompt_tokens": "ten", "completion_tokens": 3},
        "usage.prompt_tokens",
        (0, 0, 0, 3, 0),
    ),
    (
        "chat",
        {"prompt_tokens": "²", "completion_tokens": 3},
        "usage.prompt_tokens",
        (0, 0, 0, 3, 0),
    ),
    (
        "chat",
        {"prompt_tokens": "--5", "completion_tokens": 3},
        "usage.prompt_tokens",
        (0, 0, 0, 3, 0),
    ),
    (
        "chat",
        {"prompt_tokens": 10 * MAX_TOKENS, "completion_tokens": 3},
        "usage.prompt_tokens",
        (MAX_TOKENS, 0, 0, 3, 0),
    ),
    (
        "chat",
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": -3},
        },
        "usage.prompt_tokens_details.cached_tokens",
        (10, 0, 0, 1, 0),
    ),
    (
        "chat",
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        "usage.prompt_tokens",
        (0, 10, 0, 1, 0),
    ),
    (
        "chat",
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 7},
        },
        "usage.prompt_tokens",
        (0, 6, 4, 1, 0),
    ),
    (
        "chat",
        {
            "prompt_tokens": 1,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
        "usage.completion_tokens",
        (1, 0, 0, 5, 5),
    ),
    (
        "responses",
        {"input_tokens": 50, "output_tokens": 9, "input_tokens_details": {"cached_tokens": 60}},
        "usage.input_tokens",
        (0, 50, 0, 9, 0),
    ),
    (
        "responses",
        {"input_tokens": 5, "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 10}},
        "usage.output_tokens",
        (5, 0, 0, 9, 9),
    ),
    (
        "responses",
        {"input_tokens": 5, "output_tokens": -2, "output_tokens_details": {"reasoning_tokens": 1}},
        "usage.output_tokens",
        (5, 0, 0, 0, 0),
    ),
    ("anthropic", {"input_tokens": -1, "output_tokens": 2}, "usage.input_tokens", (0, 0, 0, 2, 0)),
    (
        "anthropic",
        {"input_tokens": 4, "cache_read_input_tokens": False, "output_tokens": 2},
        "usage.cache_read_input_tokens",
        (4, 0, 0, 2, 0),
    ),
    (
        "anthropic",
        {"input_tokens": 4, "cache_creation_input_tokens": "x", "output_tokens": 2},
        "usage.cache_creation_input_tokens",
        (4, 0, 0, 2, 0),
    ),
    (
        "anthropic",
        {"input_tokens": 4, "output_tokens": 2.5},
        "usage.output_tokens",
        (4, 0, 0, 0, 0),
    ),
]

INGEST: dict[str, Reader] = {
    "chat": ingest.openai_chat,
    "responses": ingest.openai_responses,
    "anthropic": ingest.anthropic,
}
PROXY: dict[str, Reader] = {
    "chat": proxy.openai_tokens,
    "responses": proxy.openai_tokens,
    "anthropic": proxy.anthropic_tokens,
}
SHARED = {"chat": openai_chat, "responses": openai_responses, "anthropic": anthropic}


@pytest.mark.parametrize(("provider", "usage", "field", "clamped"), IMPOSSIBLE)
def test_ingest_rejects_naming_the_field_where_the_proxy_clamps(
    provider: str, usage: dict[str, Any], field: str, clamped: tuple[int, ...]
) -> None:
    with pytest.raises(RecordRejected) as err:
        INGEST[provider](usage)
    assert err.value.field == field
    assert err.value.rule
    assert PROXY[provider](usage) == TokenParts(*clamped)


@pytest.mark.parametrize(("provider", "usage", "field", "clamped"), IMPOSSIBLE)
def test_a_lenient_policy_hears_each_broken_rule_and_gets_the_repair(
    provider: str, usage: dict[str, Any], field: str, clamped: tuple[int, ...]
) -> None:
    heard: list[tuple[str, str]] = []
    parts = SHARED[provider](usage, policy=lambda f, rule: heard.append((f, rule)))
    assert parts == TokenParts(*clamped)
    # The first broken rule is the one ingest names; a repair may break a second (output -2
    # repaired to 0 leaves reasoning 1 above it), which is repaired in turn.
    assert heard and heard[0][0] == field
    assert all(rule for _, rule in heard)


@pytest.mark.parametrize(
    ("provider", "usage", "expected"),
    [
        (
            "chat",
            {
                "prompt_tokens": 1000,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 600},
                "completion_tokens_details": {"reasoning_tokens": 200},
            },
            (400, 600, 0, 300, 200),
        ),
        ("chat", {"prompt_tokens": 8, "total_tokens": 8}, (8, 0, 0, 0, 0)),
        (
            "chat",
            {
                "prompt_tokens": 100,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 30, "cache_creation_tokens": 20},
            },
            (50, 30, 20, 1, 0),
        ),
        (
            "responses",
            {
                "input_tokens": 5000,
                "input_tokens_details": {"cached_tokens": 4096},
                "output_tokens": 900,
                "output_tokens_details": {"reasoning_tokens": 640},
            },
            (904, 4096, 0, 900, 640),
        ),
        (
            "anthropic",
            {
                "input_tokens": 50,
                "cache_read_input_tokens": 100_000,
                "cache_creation_input_tokens": 2_000,
                "output_tokens": 400,
            },
            (50, 100_000, 2_000, 400, 0),
        ),
    ],
)
def test_both_edges_read_a_good_usage_object_the_same(
    provider: str, usage: dict[str, Any], expected: tuple[int, ...]
) -> None:
    assert INGEST[provider](usage) == PROXY[provider](usage) == TokenParts(*expected)


def test_counts_from_json_floats_and_decimal_strings_are_read_by_both_policies() -> None:
    for value, expected in [
        (7.0, 7),
        ("412", 412),
        (" 9 ", 9),
        (None, 0),
        (MAX_TOKENS, MAX_TOKENS),
    ]:
        assert count(value, "x", policy=clamp) == ingest.count(value, "x") == expected
    assert count(None, "x", default=5, policy=clamp) == 5


def test_anthropic_base_keeps_absent_and_null_counts_and_the_last_value_wins() -> None:
    start = anthropic(
        {"input_tokens": 7, "cache_read_input_tokens": 100, "output_tokens": 1}, policy=clamp
    )
    delta = anthropic({"output_tokens": 25, "input_tokens": None}, base=start, policy=clamp)
    assert delta == TokenParts(7, 100, 0, 25, 0)
    assert anthropic({"cache_read_input_tokens": 0}, base=delta, policy=clamp).cache_read == 0


def test_usage_without_counts_rejects_in_ingest_and_is_zero_when_lenient() -> None:
    with pytest.raises(RecordRejected) as err:
        ingest.provider_usage({"total_tokens": 3}, "body.usage")
    assert err.value.field == "body.usage"
    assert any_provider({"total_tokens": 3}, policy=clamp) == ZERO


def test_token_parts_totals() -> None:
    parts = TokenParts(1, 2, 3, 4, 1)
    assert (parts.input_total, parts.total) == (6, 10)
    assert parts.as_fields()["cache_write"] == 3


usage_counts = st.one_of(
    st.none(),
    st.integers(-5, 10**6),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)


@given(
    prompt=usage_counts,
    cached=usage_counts,
    completion=usage_counts,
    reasoning=usage_counts,
)
def test_the_proxy_always_records_disjoint_parts_and_agrees_with_ingest_when_it_accepts(
    prompt: Any, cached: Any, completion: Any, reasoning: Any
) -> None:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    parts = proxy.openai_tokens(usage)
    assert parts is not None
    assert all(0 <= part <= MAX_TOKENS for part in parts)
    assert parts.reasoning <= parts.output
    try:
        strict = ingest.openai_chat(usage)
    except RecordRejected:
        return
    assert strict == parts
