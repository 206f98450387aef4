"""The watcher's arithmetic, pure: what a failover now would lose, and what the ledger misses.

Events are (id, created_ms) pairs as the outbox gives them; nothing here touches a database or a ledger.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Readiness:
    """If the primary region died now.

    `at_risk`: committed on the primary and not yet on the replica (what the failover loses);
    `recoverable`: those of them already in the ledger (what replay brings back);
    `unrecoverable_if_now`: the rest. Ages are of the oldest such event, in seconds (0 when none).
    `exact` is False when the replica was so far behind that not every at-risk event was checked one
    by one: the unchecked ones count as at risk and unrecoverable (the side an alarm should err on).
    """

    at_risk: int
    recoverable: int
    unrecoverable_if_now: int
    at_risk_age_s: float
    unrecoverable_age_s: float
    exact: bool = True


def readiness(
    primary: Iterable[tuple[bytes, int]],
    on_replica: set[bytes],
    in_ledger: set[bytes],
    now_ms: int,
    *,
    unchecked: int = 0,
    unchecked_since_ms: int | None = None,
) -> Readiness:
    """From the primary's recent events, the ids the replica has and the ids the ledger has.

    `unchecked` events (newer than what was read one by one, created from `unchecked_since_ms` on)
    are counted at risk and unrecoverable.
    """
    at_risk = [(i, t) for i, t in primary if i not in on_replica]
    lost = [t for i, t in at_risk if i not in in_ledger]
    oldest_at_risk = min((t for _, t in at_risk), default=None)
    oldest_lost = min(lost, default=None)
    if unchecked and unchecked_since_ms is not None:
        oldest_at_risk = unchecked_since_ms if oldest_at_risk is None else oldest_at_risk
        oldest_lost = unchecked_since_ms if oldest_lost is None else oldest_lost
    return Readiness(
        at_risk=len(at_risk) + unchecked,
        recoverable=len(at_risk) - len(lost),
        unrecoverable_if_now=len(lost) + unchecked,
        at_risk_age_s=_age(now_ms, oldest_at_risk),
        unrecoverable_age_s=_age(now_ms, oldest_lost),
        exact=unchecked == 0,
    )


def _age(now_ms: int, since_ms: int | None) -> float:
    return 0.0 if since_ms is None else max(0.0, (now_ms - since_ms) / 1000)


def clusters(times: Iterable[int], gap_ms: int) -> list[tuple[int, int]]:
    """Sorted times grouped into [first, last] runs whose neighbours are at most `gap_ms` apart: a few
    narrow windows to read instead of one that spans hours."""
    runs: list[tuple[int, int]] = []
    for t in sorted(times):
        if runs and t - runs[-1][1] <= gap_ms:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


@dataclass
class LedgerCompleteness:
    """`missing_in_ledger` on a live primary: outbox events older than the grace period that the
    ledger does not hold.

    Each stretch of the outbox is checked once, when it is `grace_ms` old (the relay has had that
    long); what was missing then is remembered and checked again every cycle until the ledger has it
    (a relay restarted, a backfill), so a hole the relay left behind stays visible after the relay is
    back. At most `max_tracked` missing events are remembered: past that the check stops advancing
    (the gauge stays at the cap and `checked_until_ms` falls behind) instead of growing without bound.

    Long transactions: an event whose transaction was still open when its stretch was checked (open
    longer than the grace period) is not seen by that check.
    """

    checked_until_ms: int
    grace_ms: int
    skew_ms: int
    max_tracked: int = 100_000
    #: event id → (created_ms, when it was found missing): its commit is at or before the latter.
    missing: dict[bytes, tuple[int, int]] = field(default_factory=dict)

    def due(self, now_ms: int) -> tuple[int, int] | None:
        """The stretch [since, until) to check now, or None (nothing is old enough, or at the cap)."""
        horizon = now_ms - self.grace_ms
        if horizon <= self.checked_until_ms or len(self.missing) >= self.max_tracked:
            return None
        return self.checked_until_ms, horizon

    def ledger_window(self, since_ms: int, now_ms: int) -> tuple[int, int]:
        """Where in the ledger (commit times) the events of a stretch starting at `since_ms` and read
        at `now_ms` can be: committed after they were created, and by the time they were read."""
        return since_ms - self.skew_ms, now_ms + self.skew_ms

    def take(
        self, events: list[tuple[bytes, int]], until_ms: int, in_ledger: Container[bytes], now_ms: int
    ) -> int:
        """A checked stretch (its events and the ledger's ids around it); the number newly missing."""
        fresh = 0
        for event_id, created in events:
            if event_id not in in_ledger and event_id not in self.missing:
                if len(self.missing) >= self.max_tracked:
                    # Remember no more; resume the check from here once some have been settled.
                    self.checked_until_ms = created
                    return fresh
                self.missing[event_id] = (created, now_ms)
                fresh += 1
        self.checked_until_ms = until_ms
        return fresh

    def recheck_windows(self) -> list[tuple[int, int]]:
        """Ledger windows (commit times) that hold every remembered missing event if it arrived."""
        if not self.missing:
            return []
        by_created: dict[int, int] = {}
        for created, found in self.missing.values():
            by_created[created] = max(found, by_created.get(created, found))
        windows = []
        for first, last in clusters(by_created, self.grace_ms):
            latest_found = max(f for c, f in by_created.items() if first <= c <= last)
            windows.append((first - self.skew_ms, latest_found + self.skew_ms))
        return windows

    def settle(self, arrived: set[bytes]) -> int:
        """Forget the missing events the ledger now holds; how many."""
        gone = [i for i in self.missing if i in arrived]
        for event_id in gone:
            del self.missing[event_id]
        return len(gone)

    @property
    def oldest_missing_ms(self) -> int | None:
        return min((c for c, _ in self.missing.values()), default=None)
