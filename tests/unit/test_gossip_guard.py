"""Bounds on what gossip makes a node do: log lines and dials (gossip/guard.py)."""

from __future__ import annotations

from hearthfile.gossip.guard import (
    DIAL_BURST,
    DIALS_PER_MINUTE,
    MAX_REMEMBERED,
    REDIAL_S,
    SUMMARY_INTERVAL_S,
    DialBudget,
    RejectionLog,
)


def test_thirty_thousand_rejections_make_a_few_lines() -> None:
    rejections = RejectionLog()
    lines = []
    for i in range(30_000):  # 9 s of a flood, as in the attack run
        line = rejections.add(f"sender{i % 7}", "bad_signature" if i % 2 else "stale", i * 0.0003)
        if line is not None:
            lines.append(line)
    flushed = rejections.flush(9.0 + SUMMARY_INTERVAL_S)
    assert flushed is not None
    lines.append(flushed)
    assert len(lines) == 2
    assert "records=29999" in lines[1] and "bad_signature:15000" in lines[1]
    assert "senders=7" in lines[1]
    assert rejections.total == 30_000
    assert rejections.flush(100.0) is None  # nothing new: no line


def test_fresh_node_records_cannot_make_us_dial_without_bound() -> None:
    dials = DialBudget()
    allowed = sum(dials.allow(f"origin{i}", f"10.0.0.{i % 250}:{i}", 0.0) for i in range(1000))
    assert allowed == DIAL_BURST
    # A minute later, the sustained rate, no more.
    later = sum(dials.allow(f"late{i}", f"10.1.0.1:{i}", 60.0) for i in range(1000))
    assert later == DIALS_PER_MINUTE


def test_one_origin_or_one_address_is_dialled_once_per_interval() -> None:
    dials = DialBudget()
    assert dials.allow("a", "10.0.0.1:1", 0.0)
    assert not dials.allow("a", "10.0.0.2:1", 1.0)  # same origin
    assert not dials.allow("b", "10.0.0.1:1", 1.0)  # same address
    assert dials.allow("a", "10.0.0.1:1", REDIAL_S + 1)


def test_the_dial_memory_is_bounded() -> None:
    dials = DialBudget()
    for i in range(10 * MAX_REMEMBERED):
        dials._tokens = DIAL_BURST  # as if time had passed
        dials.allow(f"o{i}", f"a{i}", float(i))
    assert len(dials._recent) <= 2 * MAX_REMEMBERED
