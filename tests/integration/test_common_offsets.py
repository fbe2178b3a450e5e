"""Stored consumer offsets: per consumer, only forward, filtered by topic when asked."""

from __future__ import annotations

import uuid

from services.common.db import make_engine
from services.common.offsets import load_offsets, store_offsets


def test_offsets_move_forward_only_and_stay_with_their_consumer(database_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    mine, other = f"warehouse-{run}", f"alerts-{run}"
    usage, budgets = f"{run}.usage", f"{run}.budgets"
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            store_offsets(conn, mine, {(usage, 0): 10, (usage, 1): 5, (budgets, 0): 3})
            store_offsets(conn, other, {(usage, 0): 99})
            store_offsets(conn, mine, {})
        with engine.begin() as conn:
            store_offsets(conn, mine, {(usage, 0): 7, (usage, 1): 6})
        with engine.connect() as conn:
            assert load_offsets(conn, mine) == {(usage, 0): 10, (usage, 1): 6, (budgets, 0): 3}
            assert load_offsets(conn, mine, [budgets]) == {(budgets, 0): 3}
            assert load_offsets(conn, other) == {(usage, 0): 99}
            assert load_offsets(conn, f"nobody-{run}") == {}
    finally:
        engine.dispose()


def test_offsets_written_in_a_failed_transaction_are_not_kept(database_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    consumer, topic = f"warehouse-{run}", f"{run}.usage"
    engine = make_engine(database_url)
    try:
        try:
            with engine.begin() as conn:
                store_offsets(conn, consumer, {(topic, 0): 4})
                raise RuntimeError("the batch's rows failed")
        except RuntimeError:
            pass
        with engine.connect() as conn:
            assert load_offsets(conn, consumer) == {}
    finally:
        engine.dispose()
