"""One `Route` per API family the proxy speaks; each knows its provider's dialect.

A route says how to read the request (its output cap, where attribution metadata lives), how to
change it (a demoted model, the concise prompt variant, a shorter cache TTL, a usage block for
streams) and how to answer an error in the provider's own shape, so the client's SDK raises the
exception it would raise against the provider.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.proxy.errors import BadClientRequest

FEATURE_FIELD = "allotment_feature"
TAGS_FIELD = "allotment_tags"


class Route:
    """Behaviour shared by every family; subclasses fill in the dialect."""

    path: str = ""
    provider: str = ""
    family: str = ""
    output_fields: tuple[str, ...] = ()
    needs_model = True

    def validate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadClientRequest("(body)", "must be a JSON object")
        model = body.get("model")
        if self.needs_model and (not isinstance(model, str) or not model):
            raise BadClientRequest("model", "is required and must be a non-empty string")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise BadClientRequest("stream", "must be true or false")
        return body

    def output_estimate(self, body: dict[str, Any], default: int) -> int:
        for name in self.output_fields:
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default if self.output_fields else 0

    def take_metadata(self, body: dict[str, Any]) -> tuple[str | None, tuple[str, ...], bool]:
        """Feature and tags from `metadata.allotment_feature/_tags`, removed from the body
        (providers would reject or store them). Returns (feature, tags, body changed)."""
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or (
            FEATURE_FIELD not in metadata and TAGS_FIELD not in metadata
        ):
            return None, (), False
        feature = metadata.pop(FEATURE_FIELD, None)
        raw_tags = metadata.pop(TAGS_FIELD, None)
        if feature is not None and (not isinstance(feature, str) or not feature):
            raise BadClientRequest(f"metadata.{FEATURE_FIELD}", "must be a non-empty string")
        tags = parse_tags(raw_tags, f"metadata.{TAGS_FIELD}") if raw_tags is not None else ()
        if not metadata:
            del body["metadata"]
        return feature, tags, True

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        """Make a stream report its usage; True when the client did not ask for it."""
        return False

    def apply_concise(self, body: dict[str, Any], prompt: str) -> None:
        """Add the registered concise system-prompt variant."""

    def apply_cache_ttl(self, body: dict[str, Any], seconds: int) -> None:
        """Ask for the shorter prompt-cache lifetime where the provider offers one."""

    def error_body(self, status: int, message: str) -> bytes:
        raise NotImplementedError


def parse_tags(raw: Any, field: str) -> tuple[str, ...]:
    """Tags from a list of strings or a comma-separated string; sorted for stable matching."""
    if isinstance(raw, str):
        items = [t.strip() for t in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        items = [t.strip() for t in raw]
    else:
        raise BadClientRequest(field, "must be a list of strings or a comma-separated string")
    if len(items) > 64:
        raise BadClientRequest(field, "at most 64 tags")
    return tuple(sorted({t for t in items if t}))


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def all_routes() -> dict[str, Route]:
    from services.proxy.routes.anthropic import MESSAGES
    from services.proxy.routes.openai import CHAT, EMBEDDINGS, RESPONSES

    return {route.path: route for route in (CHAT, RESPONSES, EMBEDDINGS, MESSAGES)}
