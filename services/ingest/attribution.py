"""Which of a source's metadata, properties or headers become team, feature, user, key and tags.

Each mapper flattens what a record carries into an attribute context with namespaced,
lower-cased keys: `metadata.<k>`, `property.<k>`, `header.<name>`, `attribute.<k>` (OTel span and
resource attributes), plus a few fields the mapper names itself (`litellm.team_id`, ...). An
ingest key's `AttributionMap` lists, per dimension, the names to look up in order; the first
value found wins. A name without a known namespace is tried as a header, a property, metadata
and an attribute in that order, so `Helicone-Property-Feature` finds the Helicone property
`Feature` whether it arrived as a header or in the record's properties.

The mapper's defaults (for example LiteLLM's `team_id` → team) apply when the key's map finds
nothing for that dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.ingest.errors import IngestConfigError

DIMENSIONS = ("team", "feature", "user", "virtual_key", "tags")
NAMESPACES = ("header.", "property.", "metadata.", "attribute.")
SOURCE_NAMESPACES = ("record.", "litellm.", "helicone.", "portkey.", "bifrost.", "otel.")
HELICONE_PROPERTY_HEADER = "helicone-property-"


def _norm(name: str) -> str:
    return name.strip().lower()


def flatten(namespace: str, values: Mapping[str, Any] | None, into: dict[str, Any]) -> None:
    """Add `values` under `namespace.` with lower-cased keys; nested dicts are dotted."""
    if not isinstance(values, dict) and not isinstance(values, Mapping):
        return
    for key, value in values.items():
        name = f"{namespace}.{str(key).strip().lower()}"
        if isinstance(value, dict):
            flatten(name, value, into)
        elif name not in into:
            into[name] = value


def _candidates(name: str) -> list[str]:
    """The context keys a configured name may refer to, most specific first."""
    name = _norm(name)
    if name.startswith(NAMESPACES + SOURCE_NAMESPACES):
        return [name]
    result = [f"{ns}{name}" for ns in NAMESPACES]
    if name.startswith(HELICONE_PROPERTY_HEADER):
        result.insert(1, f"property.{name.removeprefix(HELICONE_PROPERTY_HEADER)}")
    return [*result, name]


@dataclass(frozen=True)
class AttributionMap:
    """Per-dimension lookup lists; empty means the mapper's defaults decide."""

    team: tuple[str, ...] = ()
    feature: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    virtual_key: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    _lookups: dict[str, tuple[tuple[str, ...], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _configured: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for dim in DIMENSIONS:
            self._lookups[dim] = tuple(tuple(_candidates(n)) for n in getattr(self, dim))
        object.__setattr__(self, "_configured", any(self._lookups.values()))

    @classmethod
    def from_config(cls, raw: Any, where: str) -> AttributionMap:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise IngestConfigError(where, "attribution must be a mapping of dimension -> names")
        values: dict[str, tuple[str, ...]] = {}
        for dim, names in raw.items():
            if dim not in DIMENSIONS:
                raise IngestConfigError(
                    f"{where}.{dim}", f"is not a dimension (one of {', '.join(DIMENSIONS)})"
                )
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise IngestConfigError(f"{where}.{dim}", "must be a name or a list of names")
            values[dim] = tuple(names)
        empty: tuple[str, ...] = ()
        return cls(
            team=values.get("team", empty),
            feature=values.get("feature", empty),
            user=values.get("user", empty),
            virtual_key=values.get("virtual_key", empty),
            tags=values.get("tags", empty),
        )

    def resolve(self, context: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The attribution fields of one record: configured names first, then the defaults."""
        result: dict[str, Any] = {}
        for dim in DIMENSIONS:
            value = None
            for candidates in self._lookups[dim] if self._configured else ():
                value = next(
                    (context[c] for c in candidates if context.get(c) not in (None, "")), None
                )
                if value is not None:
                    break
            if value is None:
                value = defaults.get(dim)
            if dim == "tags":
                result["tags"] = _as_tags(value)
            elif value not in (None, ""):
                result[dim] = value if isinstance(value, str) else str(value)
        return result


def _as_tags(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list | tuple):
        return [str(t) for t in value if t not in (None, "")]
    return [str(value)]
