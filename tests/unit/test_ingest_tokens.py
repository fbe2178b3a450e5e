"""Each provider's token convention lands on the same disjoint parts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.errors import RecordRejected
from services.ingest.tokens import (
    TokenParts,
    anthropic,
    count,
    from_inclusive,
    openai_chat,
    openai_responses,
    provider_usage,
)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 100, "completion_tokens": 20}, TokenParts(100, 0, 0, 20, 0)),
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 50,
                "prompt_tokens_details": {"cached_tokens": 800},
            },
            TokenParts(200, 800, 0, 50, 0),
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 300,
                "completion_tokens_details": {"reasoning_tokens": 256},
            },
            TokenParts(10, 0, 0, 300, 256),
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": None, "audio_tokens": 0},
            },
            TokenParts(10, 0, 0, 5, 0),
        ),
    ],
)
def test_openai_chat_cached_tokens_are_inside_prompt_tokens(usage, expected):
    assert openai_chat(usage) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 36, "output_tokens": 87}, TokenParts(36, 0, 0, 87, 0)),
        (
            {
                "input_tokens": 5000,
                "input_tokens_details": {"cached_tokens": 4096},
                "output_tokens": 900,
                "output_tokens_details": {"reasoning_tokens": 640},
                "total_tokens": 5900,
            },
            TokenParts(904, 4096, 0, 900, 640),
        ),
    ],
)
def test_openai_responses_cached_inside_input_and_reasoning_inside_output(usage, expected):
    assert openai_responses(usage) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 12, "output_tokens": 6}, TokenParts(12, 0, 0, 6, 0)),
        (
            {
                "input_tokens": 50,
                "cache_read_input_tokens": 100_000,
                "cache_creation_input_tokens": 2_000,
                "output_tokens": 400,
            },
            TokenParts(50, 100_000, 2_000, 400, 0),
        ),
    ],
)
def test_anthropic_input_tokens_exclude_both_cache_parts(usage, expected):
    assert anthropic(usage) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
            TokenParts(6, 4, 0, 1, 0),
        ),
        (
            {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4},
            TokenParts(10, 4, 0, 1, 0),
        ),
        (
            {"input_tokens": 10, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 4}},
            TokenParts(6, 4, 0, 1, 0),
        ),
    ],
)
def test_provider_usage_recognises_the_shape(usage, expected):
    assert provider_usage(usage) == expected


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 11},
            },
            "usage.prompt_tokens",
        ),
        (
            {
                "prompt_tokens": 1,
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": 6},
            },
            "usage.completion_tokens",
        ),
        ({"prompt_tokens": -1, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": 1.5, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": True, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": "ten", "completion_tokens": 1}, "usage.prompt_tokens"),
    ],
)
def test_impossible_counts_reject_naming_the_field(usage, field):
    with pytest.raises(RecordRejected) as err:
        openai_chat(usage)
    assert err.value.field == field


def test_count_reads_otlp_json_decimal_strings():
    assert count("412", "x") == 412
    assert count(7.0, "x") == 7
    assert count(None, "x") == 0


def test_usage_without_counts_is_rejected():
    with pytest.raises(RecordRejected) as err:
        provider_usage({"foo": 1})
    assert err.value.field == "usage"


@given(
    uncached=st.integers(0, 10**9),
    cached=st.integers(0, 10**9),
    output=st.integers(0, 10**9),
    reasoning_share=st.floats(0, 1),
)
def test_openai_and_anthropic_views_of_one_request_agree(uncached, cached, output, reasoning_share):
    reasoning = int(output * reasoning_share)
    as_openai = openai_chat(
        {
            "prompt_tokens": uncached + cached,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens": output,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    as_anthropic = anthropic(
        {"input_tokens": uncached, "cache_read_input_tokens": cached, "output_tokens": output}
    )
    assert as_openai.input_uncached == as_anthropic.input_uncached == uncached
    assert as_openai.cache_read == as_anthropic.cache_read == cached
    assert as_openai.output == as_anthropic.output == output
    assert as_openai.reasoning == reasoning


@given(
    cache_read=st.integers(0, 10**9),
    cache_write=st.integers(0, 10**9),
    uncached=st.integers(0, 10**9),
    output=st.integers(0, 10**9),
    reasoning=st.integers(0, 10**9),
)
def test_inclusive_totals_split_into_disjoint_parts_or_are_rejected(
    cache_read, cache_write, uncached, output, reasoning
):
    total_input = cache_read + cache_write + uncached
    if reasoning > output:
        with pytest.raises(RecordRejected):
            from_inclusive(
                total_input,
                cache_read,
                cache_write,
                output,
                reasoning,
                input_field="i",
                output_field="o",
            )
        return
    parts = from_inclusive(
        total_input, cache_read, cache_write, output, reasoning, input_field="i", output_field="o"
    )
    assert parts.input_uncached + parts.cache_read + parts.cache_write == total_input
    assert (parts.input_uncached, parts.output, parts.reasoning) == (uncached, output, reasoning)
    if cache_read + cache_write > 0:
        with pytest.raises(RecordRejected):
            from_inclusive(
                total_input - uncached - 1,
                cache_read,
                cache_write,
                output,
                0,
                input_field="i",
                output_field="o",
            )
