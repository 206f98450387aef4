"""One watch cycle: read the primary, the replica, the ledger and the relay; compute the gauges.

Every read goes through the seams (`SourceDatabase`, `Ledger`) and is cheap: index ranges of a few
seconds of the outbox, one step down the ledger's commit-time index, a catalog view. A side that cannot
be reached is recorded as down with its one-sentence reason, and the cycle goes on with the others;
the watcher never dies of an outage.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from typing import Any

from drledger.connect import DEFAULT_NAME
from drledger.connect.rest import check_connect_url, connector_relay_state
from drledger.errors import DatabaseUnavailable, DrledgerError, LedgerUnavailable, MissingPrivilege
from drledger.events import LATEST_MS
from drledger.ledger import open_ledger
from drledger.ledger.base import Ledger
from drledger.margins import DEFAULT_LOOKBACK_S, DEFAULT_SKEW_S
from drledger.masking import mask_url, scrub
from drledger.source import explain_failure, open_source
from drledger.source.base import OutboxSlice, SlotHealth, SourceDatabase
from drledger.streaming import DEFAULT_SLOT
from drledger.timeutil import now_ms, parse_duration
from drledger.watch.ledger_ids import LedgerIdCache
from drledger.watch.readiness import LedgerCompleteness, Readiness, readiness

log = logging.getLogger("drledger.watch")

#: The at-risk read lists the events of the last second before the replica's newest one by id; the
#: older part of its margin is compared by count (see Watcher._settled_until).
SETTLED_MS = 1000

#: How far out of commit order events may land in the ledger: the relay publishes batch by batch in
#: commit order, and a batch's events (across a stream's partitions) land together. The watcher reads
#: the ledger's end from its last frontier less this; what lands further out of order (a backfill) it
#: finds by asking the ledger again before it calls anything missing.
ARRIVAL_MARGIN_MS = 2000

#: The relay's own metrics the watcher reads (see relay/metrics.py).
RELAY_ENGINE_UP = "drledger_relay_engine_up"
RELAY_LAST_PUBLISH = "drledger_relay_last_publish_timestamp_seconds"
RELAY_LAST_COMMIT = "drledger_relay_last_commit_timestamp_seconds"

#: The shortest time between two measurements the watcher takes (--interval).
MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class WatchSettings:
    primary_dsn: str
    ledger_url: str
    replica_dsn: str | None = None
    slot: str = DEFAULT_SLOT
    relay_metrics_url: str | None = None
    client_config: dict[str, str] = field(default_factory=dict)
    #: The relay is a Kafka Connect connector: Connect's REST URL and the connector's name.
    connect_url: str | None = None
    connector: str = DEFAULT_NAME
    interval_s: float = 5.0
    #: How long the relay has to bring an event into the ledger before it counts as missing.
    grace_s: float = 30.0
    #: Clock-skew and commit-order margin: reads are this much wider than the times they are about.
    skew_s: float = DEFAULT_SKEW_S
    #: How far back a freshly started watcher checks the ledger's completeness.
    lookback_s: float = DEFAULT_LOOKBACK_S
    #: Events read one by one per outbox read; more (a replica hours behind) are counted, not listed.
    read_limit: int = 50_000
    #: Outbox reads per cycle for the completeness check (a watcher catching up on its lookback).
    reads_per_cycle: int = 4

    def __post_init__(self) -> None:
        _check_relay_metrics_url(self.relay_metrics_url)
        if self.connect_url is not None:
            check_connect_url(self.connect_url)
        if self.interval_s < MIN_INTERVAL_S:
            raise DrledgerError("--interval must be at least 100ms.")

    @classmethod
    def from_options(
        cls,
        *,
        primary_dsn: str,
        ledger_url: str,
        replica_dsn: str | None,
        slot: str,
        relay_metrics_url: str | None,
        client_config: dict[str, str],
        interval: str,
        grace: str,
        skew: str,
        lookback: str,
        connect_url: str | None = None,
        connector: str = DEFAULT_NAME,
    ) -> WatchSettings:
        """Settings as the command line takes them, durations as typed ('5s', '10m'); the relay's URL
        is checked before the durations are read, so the first wrong option is the one named."""
        _check_relay_metrics_url(relay_metrics_url)
        return cls(
            primary_dsn=primary_dsn,
            ledger_url=ledger_url,
            replica_dsn=replica_dsn,
            slot=slot,
            relay_metrics_url=relay_metrics_url,
            client_config=client_config,
            connect_url=check_connect_url(connect_url) if connect_url is not None else None,
            connector=connector,
            interval_s=parse_duration(interval),
            grace_s=parse_duration(grace),
            skew_s=parse_duration(skew),
            lookback_s=parse_duration(lookback),
        )


def _check_relay_metrics_url(url: str | None) -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise DrledgerError(f"--relay-metrics '{url}' is not an http:// URL.")


@dataclass
class Side:
    """One thing the watcher reads: whether it answered, why not, and its newest commit (ms)."""

    up: bool = False
    error: str | None = None
    newest_commit_ms: int | None = None
    #: The failure is not an outage but something to fix (no outbox, a privilege, a file not there).
    misconfigured: bool = False
    #: The failure is a right of the reader's list missing: `error` is the sentence with its GRANT.
    lacks_right: bool = False


@dataclass
class RelayView:
    up: bool | None = None  # None: nothing tells (no slot, no relay metrics)
    metrics_up: bool | None = None  # the relay's /metrics answered (None: not configured)
    engine_up: bool | None = None
    last_publish_ms: int | None = None
    last_commit_ms: int | None = None
    error: str | None = None


@dataclass
class Snapshot:
    """What one cycle measured. Times are epoch ms; lags and ages seconds; None where unknown."""

    at_ms: int
    primary: Side
    replica: Side | None
    ledger: Side
    relay: RelayView
    slot: SlotHealth | None = None
    replica_lag_s: float | None = None
    ledger_lag_s: float | None = None
    missing_in_ledger: int | None = None
    missing_oldest_age_s: float | None = None
    ledger_checked_until_ms: int | None = None
    readiness: Readiness | None = None
    cycle_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def problems(self) -> list[str]:
        """What an operator should hear about, in words: empty when all is well."""
        found = []
        for name, side in (("primary", self.primary), ("replica", self.replica), ("ledger", self.ledger)):
            if side is not None and not side.up:
                found.append(f"the {name} cannot be read: {side.error}")
        if self.relay.up is False:
            found.append("the relay is down")
        if self.missing_in_ledger:
            found.append(f"{self.missing_in_ledger} committed events are missing from the ledger")
        if self.readiness is not None and self.readiness.unrecoverable_if_now:
            found.append(f"a failover now would lose {self.readiness.unrecoverable_if_now} events for good")
        if self.slot is not None and self.slot.wal_status in ("unreserved", "lost"):
            found.append(f"the replication slot's WAL is {self.slot.wal_status}")
        return found


def _misconfigured(exc: BaseException) -> bool:
    return isinstance(exc, DrledgerError) and not isinstance(exc, DatabaseUnavailable | LedgerUnavailable)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DrledgerError):
        return str(exc)
    explained = explain_failure(exc)
    return str(explained) if explained is not None else f"{type(exc).__name__}: {exc}"


class Watcher:
    """Holds what must outlive a cycle: the ledger connection and the completeness check's memory."""

    def __init__(self, settings: WatchSettings, clock: Callable[[], int] = now_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.primary: SourceDatabase = open_source(settings.primary_dsn)
        self.replica: SourceDatabase | None = (
            open_source(settings.replica_dsn) if settings.replica_dsn else None
        )
        self._ledger: Ledger | None = None
        start = clock() - int((settings.grace_s + settings.lookback_s) * 1000)
        self.completeness = LedgerCompleteness(
            checked_until_ms=start,
            grace_ms=int(settings.grace_s * 1000),
            skew_ms=int(settings.skew_s * 1000),
        )
        self.ledger_display = mask_url(settings.ledger_url)
        self._last_ledger_frontier: int | None = None
        self.ledger_ids = self._new_ledger_ids()
        #: The databases whose reader's rights were found complete (checked until then, every cycle).
        self._rights_checked: set[str] = set()

    def _new_ledger_ids(self) -> LedgerIdCache:
        return LedgerIdCache(self._ledger_ids, margin_ms=ARRIVAL_MARGIN_MS)

    # -- the sides --------------------------------------------------------------------------------

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(self.settings.ledger_url, self.settings.client_config)
        return self._ledger

    def _drop_ledger(self) -> None:
        if self._ledger is not None:
            try:
                self._ledger.close()
            except Exception:  # a broken client is dropped, whatever closing it says
                log.debug("closing the ledger failed", exc_info=True)
            self._ledger = None
        # A ledger reached anew may not be the one these ids came from (a file replaced, a topic
        # recreated): they are read again.
        self.ledger_ids = self._new_ledger_ids()

    def close(self) -> None:
        self._drop_ledger()
        self.primary.close()
        if self.replica is not None:
            self.replica.close()

    def cycle(self, databases_read: Callable[[], None] | None = None) -> Snapshot:
        """Measure once. Never raises for an outage: a side that fails is marked down.

        The databases are read first — what is at risk is fixed by the primary and the replica at one
        moment — and the ledger after; `databases_read` is called in between (the drill takes its
        prediction there, and lets the disaster strike while a slow ledger is still being read).
        """
        began = time.monotonic()
        now = self.clock()
        snap = Snapshot(now, Side(), Side() if self.replica is not None else None, Side(), RelayView())
        self._primary(snap)
        if self.replica is not None and snap.replica is not None:
            self._replica_newest(snap.replica)
        at_risk = None
        if snap.primary.up and snap.replica is not None and snap.replica.up:
            at_risk = self._at_risk(snap, now)
        if databases_read is not None:
            databases_read()
        self._ledger_newest(snap)
        self.ledger_ids.new_cycle(now, snap.ledger.newest_commit_ms if snap.ledger.up else None)
        if at_risk is not None and snap.ledger.up:
            self._readiness(snap, now, *at_risk)
        if snap.primary.up and snap.ledger.up:
            self._completeness(snap, now)
        self._relay(snap)
        newest = snap.primary.newest_commit_ms
        if newest is not None and snap.replica is not None and snap.replica.up:
            snap.replica_lag_s = _behind(newest, snap.replica.newest_commit_ms)
        if newest is not None and snap.ledger.up:
            snap.ledger_lag_s = _behind(newest, snap.ledger.newest_commit_ms)
        snap.cycle_seconds = time.monotonic() - began
        return snap

    def _require_rights(self, side: str, source: SourceDatabase) -> None:
        """The reader's rights that watch uses, checked on a database before its first read there. A
        database down is down (checked again once it answers); a right missing is a misconfiguration:
        at start, one sentence and exit 2; later, that database reported unreadable, with the GRANT."""
        if side not in self._rights_checked:
            source.require_rights("reader", "watch")
            self._rights_checked.add(side)

    def _primary(self, snap: Snapshot) -> None:
        try:
            self._require_rights("primary", self.primary)
            snap.primary.newest_commit_ms = self.primary.latest_commit_ms()
            snap.slot = self.primary.slot_health(self.settings.slot)
            snap.primary.up = True
        except Exception as exc:
            snap.primary.error, snap.primary.misconfigured = _reason(exc), _misconfigured(exc)
            snap.primary.lacks_right = isinstance(exc, MissingPrivilege)

    def _replica_newest(self, side: Side) -> None:
        assert self.replica is not None
        try:
            self._require_rights("replica", self.replica)
            side.newest_commit_ms = self.replica.latest_commit_ms()
            side.up = True
        except Exception as exc:
            side.error, side.misconfigured = _reason(exc), _misconfigured(exc)
            side.lacks_right = isinstance(exc, MissingPrivilege)

    def _ledger_newest(self, snap: Snapshot) -> None:
        try:
            snap.ledger.newest_commit_ms = self.ledger().newest_commit_ms(
                self._ledger_frontier_hint(snap.at_ms)
            )
            snap.ledger.up = True
        except Exception as exc:
            snap.ledger.error, snap.ledger.misconfigured = _reason(exc), _misconfigured(exc)
            self._drop_ledger()
        if snap.ledger.up and snap.ledger.newest_commit_ms is not None:
            self._last_ledger_frontier = snap.ledger.newest_commit_ms
        elif snap.ledger.up:  # nothing newer than the last answer: that answer stands
            snap.ledger.newest_commit_ms = self._last_ledger_frontier

    def _ledger_frontier_hint(self, now: int) -> int:
        """Where to look for the ledger's newest event: from the last one seen (a backend without a
        commit-time index reads only what came since), or the lookback on a first cycle."""
        last = self._last_ledger_frontier
        return last if last is not None else now - int(self.settings.lookback_s * 1000)

    def _completeness(self, snap: Snapshot, now: int) -> None:
        check = self.completeness
        try:
            for _ in range(self.settings.reads_per_cycle):
                due = check.due(now)
                if due is None:
                    break
                part: OutboxSlice = self._on(
                    "primary", self.primary.outbox_slice, due[0], due[1], self.settings.read_limit
                )
                known: Container[bytes] = frozenset()
                if part.events:
                    low, _ = check.ledger_window(part.events[0][1], now)
                    known = self._on("ledger", self.ledger_ids.holding, low)
                check.take(part.events, part.until_ms, known, now)
                if part.until_ms >= due[1]:
                    break
            # Asked of the ledger itself, not of what this watcher read of it before: the events just
            # found missing (they may have arrived out of commit order) and those missing before.
            for low, high in check.recheck_windows():
                check.settle(self._on("ledger", self._ledger_ids, low, high))
        except _Down as down:
            self._mark_down(snap, down)
            return
        snap.missing_in_ledger = len(check.missing)
        oldest = check.oldest_missing_ms
        snap.missing_oldest_age_s = 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)
        snap.ledger_checked_until_ms = check.checked_until_ms

    def _at_risk(self, snap: Snapshot, now: int) -> tuple[OutboxSlice, set[bytes], int] | None:
        """The primary's recent events, those the replica has, and how many more were only counted."""
        replica = self.replica
        assert replica is not None and snap.replica is not None
        skew = int(self.settings.skew_s * 1000)
        limit = self.settings.read_limit
        frontier = snap.replica.newest_commit_ms
        # From a little before the replica's newest event: transactions commit out of creation order.
        since = (frontier if frontier is not None else now - int(self.settings.lookback_s * 1000)) - skew
        try:
            if frontier is not None and skew > SETTLED_MS:
                since = self._settled_until(frontier - skew, frontier - SETTLED_MS)
            recent: OutboxSlice = self._on("primary", self.primary.outbox_slice, since, LATEST_MS, limit)
            unchecked = 0
            if recent.until_ms < LATEST_MS:  # more than can be listed: the rest is counted
                unchecked = self._on(
                    "primary", self.primary.count_events, recent.until_ms, LATEST_MS, 10 * limit
                )
            ids = {i for i, _ in recent.events}
            on_replica: set[bytes] = (
                self._on("replica", replica.ids_present, ids, since - skew, LATEST_MS) if ids else set()
            )
        except _Down as down:
            self._mark_down(snap, down)
            return None
        return recent, on_replica, unchecked

    def _settled_until(self, since: int, until: int) -> int:
        """Where the at-risk read must start: `until` if the replica holds every event the primary
        created in [since, until), else `since`.

        Told by two counts, not by reading thousands of ids from both: the replica replays the primary's
        commits in order, so counting the primary first, the replica's rows of a window are either all
        the primary's then, or include every one of them (and any committed since); equal counts mean
        the same events. They differ only while a transaction older than the window's end is still
        open or in flight, and then the ids are compared one by one as before."""
        assert self.replica is not None
        cap = 10 * self.settings.read_limit
        on_primary = self._on("primary", self.primary.count_events, since, until, cap)
        on_replica = self._on("replica", self.replica.count_events, since, until, cap)
        return until if on_primary == on_replica < cap else since

    def _readiness(
        self, snap: Snapshot, now: int, recent: OutboxSlice, on_replica: set[bytes], unchecked: int
    ) -> None:
        skew = int(self.settings.skew_s * 1000)
        at_risk = [(i, t) for i, t in recent.events if i not in on_replica]
        in_ledger: set[bytes] = set()
        try:
            if at_risk:
                known = self._on("ledger", self.ledger_ids.holding, min(t for _, t in at_risk) - skew)
                in_ledger = {i for i, _ in at_risk if i in known}
                # Not read this cycle, yet older than this cycle's read of the ledger's end: it may have
                # arrived out of commit order since (a backfill), so the ledger itself is asked.
                fresh_from = self.ledger_ids.fresh_from_ms
                unknown = [
                    t for i, t in at_risk if i not in in_ledger and (fresh_from is None or t < fresh_from)
                ]
                if unknown:
                    arrived = self._on("ledger", self._ledger_ids, min(unknown) - skew, LATEST_MS)
                    in_ledger.update(i for i, _ in at_risk if i in arrived)
        except _Down as down:
            self._mark_down(snap, down)
            return
        snap.readiness = readiness(
            recent.events,
            on_replica,
            in_ledger,
            now,
            unchecked=unchecked,
            unchecked_since_ms=recent.until_ms if unchecked else None,
        )

    def _ledger_ids(self, since_ms: int, until_ms: int) -> set[bytes]:
        return self.ledger().event_ids(since_ms, until_ms)

    @staticmethod
    def _on(side: str, read: Callable[..., Any], *args: Any) -> Any:
        """`read(*args)`, its failure blamed on `side`."""
        try:
            return read(*args)
        except Exception as exc:
            raise _Down(side, _reason(exc), _misconfigured(exc)) from None

    def _mark_down(self, snap: Snapshot, down: _Down) -> None:
        target = {"primary": snap.primary, "replica": snap.replica, "ledger": snap.ledger}[down.side]
        if target is not None:
            target.up, target.error, target.misconfigured = False, down.reason, down.misconfigured
        if down.side == "ledger":
            self._drop_ledger()

    def _relay(self, snap: Snapshot) -> None:
        """Alive when its slot has a reader (and, given its metrics, when its engine says it streams; given
        Kafka Connect, when the connector and its tasks are RUNNING)."""
        view = snap.relay
        votes: list[bool] = []
        if snap.primary.up:
            votes.append(snap.slot is not None and snap.slot.active)  # no slot: nothing relays
        if self.settings.relay_metrics_url:
            try:
                values = scrape(self.settings.relay_metrics_url)
            except (OSError, ValueError) as exc:
                view.metrics_up = False
                shown = mask_url(self.settings.relay_metrics_url)
                view.error = f"the relay's metrics at {shown} did not answer: {scrub(str(exc), self.settings.relay_metrics_url)}"
                votes.append(False)
            else:
                view.metrics_up = True
                view.engine_up = values.get(RELAY_ENGINE_UP, 0.0) >= 1
                view.last_publish_ms = _ms(values.get(RELAY_LAST_PUBLISH))
                view.last_commit_ms = _ms(values.get(RELAY_LAST_COMMIT))
                votes.append(view.engine_up)
        if self.settings.connect_url:
            # The relay is a Connect connector: up only while it and every task run (a task moved to
            # another worker is UNASSIGNED meanwhile: down until it runs again).
            state = connector_relay_state(self.settings.connect_url, self.settings.connector)
            view.engine_up = state.up
            if not state.up:
                view.error = state.reason
            votes.append(state.up)
        view.up = all(votes) if votes else None


class _Down(Exception):
    def __init__(self, side: str, reason: str, misconfigured: bool) -> None:
        super().__init__(reason)
        self.side = side
        self.reason = reason
        self.misconfigured = misconfigured


def _behind(newest_ms: int, other_ms: int | None) -> float | None:
    if other_ms is None:
        return None
    return max(0.0, (newest_ms - other_ms) / 1000)


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None and seconds > 0 else None


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """A /metrics page's unlabelled samples, by name (the relay's are all unlabelled gauges)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = float(sample.value)
    return values
