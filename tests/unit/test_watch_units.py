"""`drledger watch`'s arithmetic, pure: what a failover now would lose and keep, the completeness check's
memory of holes, and the watcher's memory of the ledger's ids (against an embedded ledger file)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from drledger.watch.readiness import LedgerCompleteness, clusters, readiness


def eid(n: int) -> bytes:
    return uuid.UUID(int=n).bytes


# -- the arithmetic, pure ------------------------------------------------------------------------------


def test_readiness_counts_what_a_failover_now_would_lose_and_keep() -> None:
    primary = [(eid(i), 1000 + i) for i in range(10)]
    on_replica = {eid(i) for i in range(6)}
    in_ledger = {eid(i) for i in range(9)}  # the last one is still on its way
    ready = readiness(primary, on_replica, in_ledger, now_ms=2000)
    assert (ready.at_risk, ready.recoverable, ready.unrecoverable_if_now) == (4, 3, 1)
    assert ready.at_risk_age_s == pytest.approx(0.994) and ready.unrecoverable_age_s == pytest.approx(0.991)
    assert ready.exact
    counted = readiness(primary, on_replica, in_ledger, 2000, unchecked=100, unchecked_since_ms=1500)
    assert (counted.at_risk, counted.recoverable, counted.unrecoverable_if_now, counted.exact) == (
        104,
        3,
        101,
        False,
    )
    idle = readiness([], set(), set(), 2000)
    assert (idle.at_risk, idle.unrecoverable_if_now, idle.at_risk_age_s) == (0, 0, 0.0)


def test_completeness_remembers_a_hole_until_the_ledger_fills_it() -> None:
    check = LedgerCompleteness(checked_until_ms=0, grace_ms=1000, skew_ms=100, max_tracked=3)
    assert check.due(500) is None  # nothing is a grace period old yet
    assert check.due(5000) == (0, 4000)
    events = [(eid(i), 100 * i) for i in range(1, 6)]
    assert check.take(events, 4000, {eid(1), eid(2)}, now_ms=5000) == 3
    assert check.checked_until_ms == 4000 and len(check.missing) == 3
    assert check.recheck_windows() == [(200, 5100)]
    assert check.due(9000) is None  # at the cap: the check waits instead of growing
    assert check.settle({eid(3), eid(99)}) == 1
    assert check.oldest_missing_ms == 400
    assert check.due(9000) == (4000, 8000)
    # Past the cap, the check stops where it was and resumes there.
    more = [(eid(10), 4100), (eid(11), 4200), (eid(12), 4300)]
    assert check.take(more, 8000, set(), 9000) == 1
    assert check.checked_until_ms == 4200 and len(check.missing) == 3
    assert clusters([1, 2, 50, 51, 200], 10) == [(1, 2), (50, 51), (200, 200)]


def test_the_ledger_ids_are_read_once_each_and_forgotten_when_no_check_needs_them(tmp_path: Path) -> None:
    """The watcher's memory of the ledger, against a real embedded ledger: each cycle reads only the
    ledger's end (from its last frontier less the margin), an older window once, and keeps nothing a
    check no longer asks for. An event that arrives far out of commit order is not known: the watcher
    asks the ledger itself before calling anything missing (tested with the servers below)."""
    from drledger.events import LedgerEvent
    from drledger.ledger import open_ledger
    from drledger.watch.ledger_ids import LedgerIdCache

    def event(n: int, commit_ms: int) -> LedgerEvent:
        return LedgerEvent.from_outbox(
            event_id=str(uuid.UUID(int=n)),
            table="public.orders",
            key=str(n),
            op="insert",
            row_json=f'{{"id": {n}}}',
            txid=n,
            lsn=n,
            commit_ts_ms=commit_ms,
        )

    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url, writer=True) as writer, open_ledger(url) as reader:
        writer.publish([event(n, 1000 * n) for n in range(1, 31)])  # commits at 1 s … 30 s
        cache = LedgerIdCache(reader.event_ids, margin_ms=2000)
        cache.new_cycle(now_ms=31_000, frontier_ms=30_000)
        known = cache.holding(10_000)
        assert {eid(n) for n in range(10, 31)} <= set(known) and eid(9) not in known  # type: ignore[call-overload]
        assert cache.ids_read == 21
        # A second ask in the same cycle, further back: only the older part is read.
        known = cache.holding(5_000)
        assert eid(5) in known and cache.ids_read == 21 + 6  # 5 s … 10 s, the 10 s one again

        writer.publish([event(n, 1000 * n) for n in range(31, 36)])
        writer.publish([event(99, 1_000)])  # a backfill, far below the frontier
        cache.new_cycle(now_ms=36_000, frontier_ms=35_000)
        known = cache.holding(20_000)
        # The ledger's end is read from the last frontier less the margin: 28 s … 35 s.
        assert cache.ids_read == 27 + 8 and cache.fresh_from_ms == 28_000
        assert {eid(n) for n in range(31, 36)} <= set(known)  # type: ignore[call-overload]
        assert eid(99) not in known  # out of order: for the ledger itself to say

        # The last cycle asked from 20 s: what holds only older ids is dropped, the rest kept.
        cache.new_cycle(now_ms=41_000, frontier_ms=35_000)
        known = cache.holding(20_000)
        assert cache.ids_read == 35 + 3  # the end again, from 33 s
        assert {eid(n) for n in range(20, 36)} <= set(known) and eid(5) not in known  # type: ignore[call-overload]
        assert len(cache) <= 26  # at most the first read's older ids (10 s … 19 s) besides
