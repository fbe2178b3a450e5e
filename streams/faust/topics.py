"""The pipeline's Faust topics, named from `schemas.topics` under the deployment's prefix.

Every topic carries raw bytes: the agents decode with orjson and validate with the contract's
models themselves, so a record that fails validation can be dead-lettered with its origin
instead of crashing the stream inside Faust's codec. None of these topics is declared by Faust:
the project creates them (`allotment create-topics`, `ensure_topics`) with their own partition
counts and cleanup policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT

from schemas import topics as spec


@dataclass(frozen=True)
class PipelineTopics:
    usage: TopicT
    budgets: TopicT
    charges: TopicT
    thresholds: TopicT
    policies: TopicT
    dead_letter: TopicT


def _topic(app: faust.App, topic: spec.TopicSpec, prefix: str) -> TopicT:
    return app.topic(
        topic.name(prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=topic.partitions,
        internal=False,
    )


def declare_topics(app: faust.App, prefix: str) -> PipelineTopics:
    """Bind the contract's topics to `app` (no broker call: the topics must already exist)."""
    return PipelineTopics(
        usage=_topic(app, spec.USAGE, prefix),
        budgets=_topic(app, spec.BUDGETS, prefix),
        charges=_topic(app, spec.CHARGES, prefix),
        thresholds=_topic(app, spec.THRESHOLDS, prefix),
        policies=_topic(app, spec.POLICIES, prefix),
        dead_letter=_topic(app, spec.DEAD_LETTER, prefix),
    )
