"""Each API family's dialect: validation messages, rewrites, error shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.proxy.errors import BadClientRequest
from services.proxy.routes import check_name, merge_tags, parse_tags
from services.proxy.routes.anthropic import MESSAGES
from services.proxy.routes.openai import CHAT, EMBEDDINGS, RESPONSES


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (CHAT, [], "(body)"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (CHAT, {"model": "m"}, "messages"),
        (CHAT, {"model": "m", "messages": [{}], "stream": "yes"}, "stream"),
        (MESSAGES, {"model": "c", "messages": [{}]}, "max_tokens"),
        (EMBEDDINGS, {"model": "e"}, "input"),
    ],
)
def test_malformed_requests_name_the_field(route: Any, body: Any, field: str) -> None:
    with pytest.raises(BadClientRequest) as caught:
        route.validate(body)
    assert caught.value.field == field


def test_chat_stream_gets_a_usage_block_and_remembers_who_asked() -> None:
    body: dict[str, Any] = {"stream": True}
    assert CHAT.prepare_stream(body) is True
    assert body["stream_options"] == {"include_usage": True}
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert CHAT.prepare_stream(asked) is False


def test_metadata_attribution_is_read_and_removed() -> None:
    body: dict[str, Any] = {
        "metadata": {"allotment_feature": "search", "allotment_tags": ["b", "a"], "user_id": "u"}
    }
    assert MESSAGES.take_metadata(body) == ("search", ("a", "b"), True)
    assert body == {"metadata": {"user_id": "u"}}
    only: dict[str, Any] = {"metadata": {"allotment_feature": "f"}}
    CHAT.take_metadata(only)
    assert "metadata" not in only
    assert CHAT.take_metadata({"metadata": {"k": "v"}}) == (None, (), False)


def test_tags_from_a_header_are_split_and_sorted() -> None:
    assert parse_tags("prod, eu ,,prod", "x") == ("eu", "prod")
    with pytest.raises(BadClientRequest):
        parse_tags(3, "x")


def test_output_estimate_reads_the_family_cap() -> None:
    assert CHAT.output_estimate({"max_completion_tokens": 77, "max_tokens": 5}, 1024) == 77
    assert CHAT.output_estimate({}, 1024) == 1024
    assert RESPONSES.output_estimate({"max_output_tokens": 9}, 1024) == 9
    assert MESSAGES.output_estimate({"max_tokens": 300}, 1024) == 300
    assert EMBEDDINGS.output_estimate({}, 1024) == 0


def test_concise_variant_per_dialect() -> None:
    chat: dict[str, Any] = {"messages": [{"role": "user", "content": "q"}]}
    CHAT.apply_concise(chat, "Be brief.")
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    anthropic: dict[str, Any] = {"system": [{"type": "text", "text": "S"}]}
    MESSAGES.apply_concise(anthropic, "Be brief.")
    assert anthropic["system"][0]["text"] == "S"  # the cached prefix stays first
    assert anthropic["system"][-1]["text"] == "Be brief."
    responses: dict[str, Any] = {"instructions": "I"}
    RESPONSES.apply_concise(responses, "Be brief.")
    assert responses["instructions"] == "I\n\nBe brief."


def test_shorter_cache_ttl() -> None:
    body: dict[str, Any] = {
        "system": [
            {"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "q",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            }
        ],
    }
    MESSAGES.apply_cache_ttl(body, 300)
    assert body["system"][0]["cache_control"]["ttl"] == "5m"
    assert body["messages"][0]["content"][0]["cache_control"]["ttl"] == "5m"
    chat: dict[str, Any] = {}
    CHAT.apply_cache_ttl(chat, 600)
    assert chat["prompt_cache_retention"] == "in_memory"


def test_error_bodies_are_in_the_providers_shapes() -> None:
    openai = orjson.loads(CHAT.error_body(429, "over"))
    assert openai["error"]["message"] == "over" and openai["error"]["code"] == "budget_exceeded"
    anthropic = orjson.loads(MESSAGES.error_body(429, "over"))
    assert anthropic == {"type": "error", "error": {"type": "rate_limit_error", "message": "over"}}


def test_names_the_usage_contract_would_refuse_are_refused_up_front() -> None:
    with pytest.raises(BadClientRequest) as caught:
        CHAT.validate({"model": "m" * 201, "messages": [{}]})
    assert caught.value.field == "model"
    with pytest.raises(BadClientRequest):
        parse_tags("x" * 201, "x-allotment-tags")
    with pytest.raises(BadClientRequest) as too_many:
        merge_tags(("a",), tuple(f"t{i}" for i in range(64)))
    assert too_many.value.field == "x-allotment-tags"
    with pytest.raises(BadClientRequest):
        check_name("", "x-allotment-feature")
