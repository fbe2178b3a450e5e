"""Where every part of Allotment finds the stack: read from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from schemas.errors import AllotmentError
from schemas.topics import DEFAULT_PREFIX

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg://allotment:allotment@127.0.0.1:5432/allotment"


@dataclass(frozen=True)
class StackSettings:
    """Where the broker, the database and the topics are; read once by a composition root.

    Every service and every test reads the same three variables, so a whole stack (or a test's
    private prefix) is switched by the environment alone.
    """

    kafka_bootstrap: str
    database_url: str
    topic_prefix: str

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(
            kafka_bootstrap=os.environ.get("ALLOTMENT_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP),
            database_url=os.environ.get("ALLOTMENT_DATABASE_URL", DEFAULT_DATABASE_URL),
            topic_prefix=os.environ.get("ALLOTMENT_TOPIC_PREFIX", DEFAULT_PREFIX),
        )


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    invalid: Callable[[str, str], AllotmentError],
) -> int:
    """An integer setting from `env`; unset or empty means `default`.

    A value that is not an integer raises `invalid(name, rule)`, the service's own config
    error, so the operator is told which variable is wrong at start, not a bare ValueError.
    """
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, f"must be an integer, got {raw!r}") from None
