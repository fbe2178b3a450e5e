"""The Faust adapter around the pure domain: app, topics, tables, agents, worker, metrics.

Nothing here decides a rule; every decision is a call into `streams.*`. This package only moves
records between Kafka and those functions, and makes each stateful step idempotent so that
at-least-once delivery yields exact results (design.md, invariant 1).
"""
