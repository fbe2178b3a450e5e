"""Commands about the stack itself."""

from __future__ import annotations

import asyncio

import typer


def create_topics() -> None:
    """Create the project's Kafka topics under ALLOTMENT_TOPIC_PREFIX (idempotent)."""
    from services.common.kafka import ensure_topics
    from services.common.settings import StackSettings

    settings = StackSettings.from_env()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_prefix))
    typer.echo(f"created: {', '.join(created) if created else 'nothing (all exist)'}")


def register(app: typer.Typer) -> None:
    app.command("create-topics")(create_topics)
