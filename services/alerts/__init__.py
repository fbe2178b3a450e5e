"""Alert delivery: budget signals from Kafka to Slack, PagerDuty, signed webhooks and email.

Signals land in a PostgreSQL outbox in the same transaction as the consumed offsets; a delivery
loop drains it with backoff and publishes every final outcome to the `alert-deliveries` topic
before the outbox records it. See `services/alerts/README.md` for the guarantees per channel.
"""
