"""The durable spool: what was appended survives a reopen until it is acknowledged."""

from __future__ import annotations

from pathlib import Path

from services.proxy.spool import Spool


def test_events_survive_a_reopen_and_leave_only_when_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([(f"e{i}", f"payload-{i}".encode()) for i in range(5)])
    first = spool.peek(3)
    assert [row[1] for row in first] == ["e0", "e1", "e2"]
    spool.ack(first[-1][0])
    spool.close()

    reopened = Spool(tmp_path)
    rest = reopened.peek(10)
    assert [(row[1], row[2]) for row in rest] == [("e3", b"payload-3"), ("e4", b"payload-4")]
    reopened.append([("e5", b"x")])
    assert len(reopened) == 3
    assert [row[0] for row in reopened.peek(10)] == sorted(row[0] for row in reopened.peek(10))
    reopened.close()
