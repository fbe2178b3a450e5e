"""Token capture from provider answers: each provider's convention onto disjoint parts."""

from __future__ import annotations

import orjson

from services.proxy.usage import (
    SseSplitter,
    StreamTracker,
    Tokens,
    anthropic_tokens,
    json_usage,
    openai_tokens,
)


def _data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: str, payload: object) -> bytes:
    return f"event: {name}\n".encode() + _data(payload)


def test_openai_prompt_tokens_include_cached_and_completion_includes_reasoning() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "total_tokens": 1300,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    tokens = openai_tokens(usage)
    assert tokens == Tokens(input_uncached=400, cache_read=600, output=300, reasoning=200)
    assert tokens is not None and tokens.total == 1300


def test_openai_responses_usage_uses_input_and_output_tokens() -> None:
    usage = {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 20},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 4},
    }
    assert openai_tokens(usage) == Tokens(30, 20, 0, 9, 4)


def test_openai_embeddings_have_no_output() -> None:
    assert openai_tokens({"prompt_tokens": 8, "total_tokens": 8}) == Tokens(input_uncached=8)


def test_anthropic_parts_are_disjoint() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 5000,
        "output_tokens": 42,
    }
    tokens = anthropic_tokens(usage)
    assert tokens == Tokens(input_uncached=10, cache_read=5000, cache_write=300, output=42)
    assert tokens is not None and tokens.input_total == 5310


def test_json_usage_reads_model_and_tokens() -> None:
    body = orjson.dumps({"model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 4}})
    tokens, model = json_usage("anthropic", body)
    assert (tokens, model) == (Tokens(input_uncached=3, output=4), "claude-x")
    assert json_usage("chat", b"not json") == (None, None)


def test_chat_stream_usage_chunk_is_stripped_only_when_the_proxy_asked_for_it() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    events = [
        _data({"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}),
        _data({"model": "m", "choices": [], "usage": usage}),
        b"data: [DONE]\n\n",
    ]
    for strip in (True, False):
        tracker = StreamTracker("chat", strip_usage=strip)
        kept = [event for event in events if tracker.feed(event)]
        assert tracker.complete
        assert tracker.tokens == Tokens(input_uncached=10, cache_read=2, output=5)
        assert len(kept) == (2 if strip else 3)
        assert (events[1] in kept) is not strip


def test_anthropic_message_delta_usage_is_cumulative_not_added() -> None:
    tracker = StreamTracker("anthropic")
    start_usage = {
        "input_tokens": 7,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 100,
        "output_tokens": 1,
    }
    for event in (
        _event(
            "message_start",
            {"type": "message_start", "message": {"model": "c", "usage": start_usage}},
        ),
        _event("content_block_delta", {"type": "content_block_delta"}),
        _event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 10}}),
        _event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 25}}),
        _event("message_stop", {"type": "message_stop"}),
    ):
        assert tracker.feed(event)
    assert tracker.complete
    assert tracker.tokens == Tokens(input_uncached=7, cache_read=100, cache_write=1, output=25)
    assert tracker.model == "c"


def test_responses_stream_takes_usage_from_response_completed() -> None:
    tracker = StreamTracker("responses")
    usage = {"input_tokens": 5, "output_tokens": 6}
    tracker.feed(_event("response.output_text.delta", {"delta": "x"}))
    tracker.feed(_event("response.completed", {"response": {"model": "g", "usage": usage}}))
    assert tracker.complete and tracker.tokens == Tokens(input_uncached=5, output=6)


def test_interrupted_stream_estimates_from_what_was_seen() -> None:
    tracker = StreamTracker("chat", strip_usage=True)
    for _ in range(4):
        tracker.feed(_data({"choices": [{"delta": {"content": "a"}}]}))
    assert not tracker.complete
    estimate = tracker.estimate(input_estimate=30)
    assert estimate.input_uncached == 30 and estimate.output == 4

    anthropic = StreamTracker("anthropic")
    anthropic.feed(
        _event("message_start", {"message": {"usage": {"input_tokens": 9, "output_tokens": 1}}})
    )
    anthropic.feed(_event("content_block_delta", {}))
    anthropic.feed(_event("content_block_delta", {}))
    estimate = anthropic.estimate(input_estimate=1000)
    assert estimate.input_uncached == 9  # the real count, not the guess
    assert estimate.output == 2


def test_sse_splitter_reassembles_events_cut_anywhere() -> None:
    stream = _event("a", {"x": 1}) + _data({"y": 2}) + b"data: [DONE]\n\n"
    for cut in range(1, len(stream)):
        splitter = SseSplitter()
        events = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert b"".join(events) == stream
        assert len(events) == 3
        assert splitter.rest() == b""


def test_sse_splitter_accepts_crlf_line_ends() -> None:
    stream = b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    splitter = SseSplitter()
    events = splitter.feed(stream[:10]) + splitter.feed(stream[10:])
    assert events == [b'data: {"a":1}\r\n\r\n', b"data: [DONE]\r\n\r\n"]
    tracker = StreamTracker("chat")
    for event in events:
        tracker.feed(event)
    assert tracker.complete
