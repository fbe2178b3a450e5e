"""The proxy's configuration, read once at start from the environment (or given by a test).

Every knob has a default that works against the local stack; nothing here builds a client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from services.common.settings import StackSettings, env_int
from services.proxy.errors import ProxyConfigError

DEFAULT_UPSTREAMS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
DEFAULT_CONCISE_PROMPT = "Answer as briefly as the question allows."


@dataclass(frozen=True)
class ProxySettings:
    """What the composition root needs to build a proxy."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "allotment"
    host: str = "127.0.0.1"
    port: int = 8080
    upstreams: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    upstream_keys: dict[str, str] = field(default_factory=dict)
    keys_file: Path | None = None
    keys_json: str | None = None
    spool_dir: Path = Path("var/proxy-spool")
    fail_open: bool = True
    follow_policies: bool = True
    flush_interval_s: float = 0.05
    flush_max_events: int = 500
    max_body_bytes: int = 64 * 1024 * 1024
    drain_timeout_s: float = 5.0
    """At stop, how long to keep sending spooled usage; what is left stays in the spool."""
    default_output_estimate: int = 1024
    concise_prompt: str = DEFAULT_CONCISE_PROMPT
    upstream_pool_size: int = 512
    server: str = "uvicorn"
    """HTTP server for the ASGI app: "uvicorn" (httptools; measured cheaper here) or "aiohttp"."""

    def __post_init__(self) -> None:
        if self.server not in ("aiohttp", "uvicorn"):
            raise ProxyConfigError("server", f"must be 'aiohttp' or 'uvicorn', got {self.server!r}")

    def upstream(self, provider: str) -> str:
        try:
            return self.upstreams[provider].rstrip("/")
        except KeyError:
            rule = f"no upstream configured for {provider!r}"
            raise ProxyConfigError("upstreams", rule) from None

    @classmethod
    def from_env(cls, **overrides: object) -> ProxySettings:
        """Read `ALLOTMENT_PROXY_*` plus the shared stack variables; `overrides` win."""
        env = os.environ
        number = partial(env_int, env, invalid=ProxyConfigError)
        stack = StackSettings.from_env()
        values: dict[str, object] = {
            "kafka_bootstrap": stack.kafka_bootstrap,
            "topic_prefix": stack.topic_prefix,
            "host": env.get("ALLOTMENT_PROXY_HOST", "127.0.0.1"),
            "port": number("ALLOTMENT_PROXY_PORT", 8080),
            "upstreams": {
                "openai": env.get("ALLOTMENT_PROXY_OPENAI_UPSTREAM", DEFAULT_UPSTREAMS["openai"]),
                "anthropic": env.get(
                    "ALLOTMENT_PROXY_ANTHROPIC_UPSTREAM", DEFAULT_UPSTREAMS["anthropic"]
                ),
            },
            "upstream_keys": {
                name: value
                for name, var in (
                    ("openai", "ALLOTMENT_PROXY_OPENAI_API_KEY"),
                    ("anthropic", "ALLOTMENT_PROXY_ANTHROPIC_API_KEY"),
                )
                if (value := env.get(var))
            },
            "keys_file": Path(env["ALLOTMENT_PROXY_KEYS_FILE"])
            if env.get("ALLOTMENT_PROXY_KEYS_FILE")
            else None,
            "keys_json": env.get("ALLOTMENT_PROXY_KEYS"),
            "spool_dir": Path(env.get("ALLOTMENT_PROXY_SPOOL_DIR", "var/proxy-spool")),
            "concise_prompt": env.get("ALLOTMENT_PROXY_CONCISE_PROMPT", DEFAULT_CONCISE_PROMPT),
            "max_body_bytes": number("ALLOTMENT_PROXY_MAX_BODY_BYTES", 64 * 1024 * 1024),
            "default_output_estimate": number("ALLOTMENT_PROXY_DEFAULT_OUTPUT_ESTIMATE", 1024),
            "server": env.get("ALLOTMENT_PROXY_SERVER", "uvicorn"),
            "fail_open": env.get("ALLOTMENT_PROXY_FAIL_OPEN", "true").lower()
            not in ("0", "false", "no"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
