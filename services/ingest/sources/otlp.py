"""OTLP/HTTP traces (protobuf or JSON): usage from model-call spans.

Attributes read, first match wins (OpenTelemetry GenAI first, then the older OTel names, then
OpenInference / traceAI, which share the `llm.token_count.*` names):

    input      gen_ai.usage.input_tokens | gen_ai.usage.prompt_tokens | llm.token_count.prompt
    output     gen_ai.usage.output_tokens | gen_ai.usage.completion_tokens
               | llm.token_count.completion
    cache read gen_ai.usage.cache_read.input_tokens | gen_ai.usage.cache_read_input_tokens
               | llm.token_count.prompt_details.cache_read
    cache write gen_ai.usage.cache_creation.input_tokens
               | gen_ai.usage.cache_creation_input_tokens
               | llm.token_count.prompt_details.cache_write
    reasoning  gen_ai.usage.reasoning.output_tokens | llm.token_count.completion_details.reasoning

All of these conventions count cache reads and cache creation INSIDE the input total, and
reasoning inside the output; a span whose cache parts exceed its input is rejected rather than
guessed at. Provider: `gen_ai.provider.name` | `gen_ai.system` | `llm.provider` | `llm.system`;
models: `gen_ai.request.model` / `gen_ai.response.model` | `llm.model_name`.

Only model calls count. Agent, chain and tool spans may carry the sum of their children's usage
and are skipped, so nothing is counted twice:

- by operation or kind: `gen_ai.operation.name` invoke_agent / invoke_workflow / create_agent /
  execute_tool (the GenAI conventions' agent spans, which may carry usage and a model:
  semantic-conventions docs/gen-ai/gen-ai-agent-spans.md; pydantic-ai's run span since its
  capabilities/instrumentation.py sets it), OpenInference or traceAI span kinds other than LLM
  and EMBEDDING (OpenInference's OpenAI Agents processor, _processor.py `_get_span_kind`: agent
  spans AGENT, function and handoff spans TOOL, only generation and response spans LLM;
  LangChain's chains and agents are CHAIN / AGENT);
- by agent name without a model, in any export: a span with usage whose own attributes name an
  agent (`gen_ai.agent.name`, or pydantic-ai's `agent_name`) but no model (none of
  gen_ai.request.model / response.model / system / provider.name, llm.model_name) and that
  does not say it is a model call (operation chat / text_completion / generate_content /
  embeddings, kind LLM / EMBEDDING). pydantic-ai's "agent run" span, in the versions before it
  set the operation name, carries `model_name`, `agent_name` (and later `gen_ai.agent.name`)
  and, when it ends, the run's summed usage (agent/__init__.py: `'model_name': ...,
  'agent_name': agent_name, 'gen_ai.agent.name': agent_name`, then `_run_span_end_attributes`
  with the usage). It ends after its model calls, so with the SDK's BatchSpanProcessor it often
  arrives in a later export than they do: this rule needs no other span. Model-call spans keep
  counting even when they carry an agent name (pydantic-ai puts `gen_ai.agent.name` in
  baggage, which Logfire copies onto child spans): they name their model, or their operation;
- by descendants in the same export: a span with usage that names no model while spans below it
  in this export carry usage (a hand-made workflow wrapper: `mark_aggregates`). Such a wrapper
  with no agent name, exported apart from its children, cannot be told from a model call
  that names no model, and still counts.

The request id is `<trace id>/<span id>` in lower-case hex (OTLP/JSON's hex ids as sent, base64
ids from protobuf's own JSON mapping decoded): a re-exported span maps to the same event, over
protobuf or JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources import otlp_export
from services.ingest.sources.base import Draft, opt_str, parse_time
from services.ingest.tokens import count, from_inclusive

SOURCE = "otel"

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
AGGREGATE_OPERATIONS = {"invoke_agent", "invoke_workflow", "create_agent", "execute_tool"}
MODEL_CALL_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}
MODEL_SPAN_KINDS = {"LLM", "EMBEDDING"}
AGENT_NAMES = ("gen_ai.agent.name", "agent_name")
MODEL_IDENTITY = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.system",
    "gen_ai.provider.name",
    "llm.model_name",
)


def spans_from_json(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP JSON export (see `otlp_export.read_json`), aggregates marked."""
    return mark_aggregates(otlp_export.read_json(body))


def spans_from_protobuf(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP protobuf ExportTraceServiceRequest, aggregates marked."""
    return mark_aggregates(otlp_export.read_protobuf(body))


def _attrs(span: Mapping[str, Any]) -> dict[str, Any]:
    return {**span.get("resource", {}), **span.get("attributes", {})}


def _has_usage(attrs: Mapping[str, Any]) -> bool:
    return any(attrs.get(name) is not None for name in (*INPUT, *OUTPUT))


def mark_aggregates(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark `aggregate` the spans that only sum their children's usage.

    A span with usage but no model identity (MODEL_IDENTITY) whose descendants in the same
    export carry usage is a run, agent or workflow total (older pydantic-ai "agent run" spans,
    hand-made wrappers), not a model call: its children are the calls. A span that names its
    model, or has no descendant with usage here, is left to `to_draft`, which also skips a total
    that names its agent (exported before or after its children).
    """
    parents: dict[tuple[str, str], str] = {}
    with_usage: list[dict[str, Any]] = []
    for span in spans:
        if span.get("invalid") or not span.get("span_id"):
            continue
        parents[(span["trace_id"], span["span_id"])] = span.get("parent_span_id") or ""
        if _has_usage(_attrs(span)):
            with_usage.append(span)
    above_usage: set[tuple[str, str]] = set()  # spans with a descendant that carries usage
    for span in with_usage:
        trace, parent = span["trace_id"], span.get("parent_span_id") or ""
        while parent and (trace, parent) not in above_usage:  # ancestors already seen stop it
            above_usage.add((trace, parent))
            parent = parents.get((trace, parent), "")
    for span in with_usage:
        if (span["trace_id"], span["span_id"]) in above_usage and not _names_model(_attrs(span)):
            span["aggregate"] = True
    return spans


def _first(attrs: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if attrs.get(name) is not None:
            return name, attrs[name]
    return names[0], None


def _names_model(attrs: Mapping[str, Any]) -> bool:
    return any(attrs.get(name) for name in MODEL_IDENTITY)


def _is_model_call(span: Mapping[str, Any], attrs: Mapping[str, Any]) -> bool:
    """False for agent, chain and tool spans (see the module docstring for the rules)."""
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in AGGREGATE_OPERATIONS:
        return False
    kind = attrs.get("openinference.span.kind") or attrs.get("fi.span.kind")
    if kind is not None:
        return str(kind).upper() in MODEL_SPAN_KINDS
    if isinstance(operation, str) and operation in MODEL_CALL_OPERATIONS:
        return True
    own = span.get("attributes") or {}  # an agent name on the resource names the process
    return _names_model(attrs) or not any(own.get(name) for name in AGENT_NAMES)


def to_draft(span: Mapping[str, Any]) -> Draft | None:
    """A span's usage, or None when the span is not a model call with token counts."""
    if "invalid" in span:
        raise RecordRejected(*span["invalid"])
    if span.get("aggregate"):
        return None
    attrs = _attrs(span)
    in_name, in_value = _first(attrs, INPUT)
    out_name, out_value = _first(attrs, OUTPUT)
    if (in_value is None and out_value is None) or not _is_model_call(span, attrs):
        return None
    if not span.get("trace_id") or not span.get("span_id"):
        raise RecordRejected("spanId", "is required (with traceId) to identify the request")
    read_name, read_value = _first(attrs, CACHE_READ)
    write_name, write_value = _first(attrs, CACHE_WRITE)
    reason_name, reason_value = _first(attrs, REASONING)
    tokens = from_inclusive(
        count(in_value, in_name),
        count(read_value, read_name),
        count(write_value, write_name),
        count(out_value, out_name),
        count(reason_value, reason_name),
        input_field=in_name,
        output_field=out_name,
    )
    context: dict[str, Any] = {}
    flatten("attribute", span.get("resource"), context)
    flatten("attribute", span.get("attributes"), context)
    metadata = attrs.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            metadata = None
    flatten("metadata", metadata if isinstance(metadata, Mapping) else None, context)
    _, provider = _first(attrs, PROVIDER)
    return Draft(
        source=SOURCE,
        source_request_id=f"{span['trace_id']}/{span['span_id']}",
        occurred_at=parse_time(int(span.get("start_ns") or 0), "startTimeUnixNano")
        if span.get("start_ns")
        else None,
        tokens=tokens,
        provider=opt_str(provider),
        request_model=opt_str(attrs.get("gen_ai.request.model"))
        or opt_str(attrs.get("llm.model_name")),
        response_model=opt_str(attrs.get("gen_ai.response.model"))
        or opt_str(attrs.get("llm.model_name")),
        context=context,
        defaults={
            "user": attrs.get("user.id") or attrs.get("enduser.id"),
            "tags": attrs.get("tag.tags"),
        },
    )
