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
MAX_NAME = 200  # the usage contract's limit on names (model, feature, tag)
MAX_TAGS = 64


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
        if isinstance(model, str):
            check_name(model, "model")
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
        if feature is not None:
            if not isinstance(feature, str):
                raise BadClientRequest(f"metadata.{FEATURE_FIELD}", "must be a string")
            check_name(feature, f"metadata.{FEATURE_FIELD}")
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
    if len(items) > MAX_TAGS:
        raise BadClientRequest(field, f"at most {MAX_TAGS} tags")
    for tag in items:
        if len(tag) > MAX_NAME:
            raise BadClientRequest(field, f"each tag at most {MAX_NAME} characters")
    return tuple(sorted({t for t in items if t}))


def merge_tags(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The key's default tags plus the request's, sorted; at most 64 in all."""
    merged = tuple(sorted({tag for group in groups for tag in group}))
    if len(merged) > MAX_TAGS:
        raise BadClientRequest("x-allotment-tags", f"at most {MAX_TAGS} tags with the key's own")
    return merged


def check_name(value: str, field: str) -> None:
    """Names go into usage events; one the contract would refuse is refused here, up front."""
    if not value or len(value) > MAX_NAME:
        raise BadClientRequest(field, f"must be 1 to {MAX_NAME} characters")


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def all_routes() -> dict[str, Route]:
    from services.proxy.routes.anthropic import MESSAGES
    from services.proxy.routes.openai import CHAT, EMBEDDINGS, RESPONSES

    return {route.path: route for route in (CHAT, RESPONSES, EMBEDDINGS, MESSAGES)}
