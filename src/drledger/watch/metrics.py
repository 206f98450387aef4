"""The watcher's gauges in Prometheus's text format, its /metrics endpoint, and its log of changes.

Names follow Prometheus's conventions: the `drledger_` prefix, base units in the name (`_seconds`,
`_bytes`, `_timestamp_seconds`), `_total` for counters, and labels of few values (`target`, `status`).
A value the cycle could not measure is NaN, never the last one seen: a stale figure would look fine
while the thing it measures is gone. Rules compare with `>`, which NaN never satisfies, and
`drledger_watch_up` says which side could not be read.
"""

from __future__ import annotations

import logging
import math

from prometheus_client import Counter, Gauge, Histogram

from drledger.metrics_endpoint import MetricsEndpoint
from drledger.watch.cycle import Snapshot

log = logging.getLogger("drledger.watch")

NAN = math.nan
TARGETS = ("primary", "replica", "ledger", "relay_metrics")
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")


def _seconds(ms: int | None) -> float:
    return NAN if ms is None else ms / 1000


def _value(x: float | int | bool | None) -> float:
    return NAN if x is None else float(x)


class WatchMetrics(MetricsEndpoint):
    """The watcher's gauges, in a registry of its own."""

    server_name = "The watcher"

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.up = Gauge(
            "drledger_watch_up",
            "1 if the watcher could read this side in its last cycle.",
            ["target"],
            registry=r,
        )
        self.cycles = Counter("drledger_watch_cycles_total", "Watch cycles run.", registry=r)
        self.failures = Counter(
            "drledger_watch_read_failures_total",
            "Cycles in which this side could not be read.",
            ["target"],
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "drledger_watch_cycle_duration_seconds",
            "Time one watch cycle took.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.last_cycle = Gauge(
            "drledger_watch_last_cycle_timestamp_seconds", "When the last watch cycle ran.", registry=r
        )
        self.last_commit = Gauge(
            "drledger_last_commit_timestamp_seconds",
            "Source commit time of the newest event: in the primary's outbox, the replica's, or the ledger.",
            ["target"],
            registry=r,
        )
        self.replica_lag = Gauge(
            "drledger_replica_lag_seconds",
            "How far the replica's newest outbox event trails the primary's.",
            registry=r,
        )
        self.ledger_lag = Gauge(
            "drledger_ledger_lag_seconds",
            "How far the ledger's newest event trails the primary's outbox.",
            registry=r,
        )
        self.missing = Gauge(
            "drledger_ledger_missing_events",
            "Events committed on the primary longer ago than the grace period that are not in the ledger.",
            registry=r,
        )
        self.missing_age = Gauge(
            "drledger_ledger_missing_oldest_age_seconds",
            "Age of the oldest event missing from the ledger (0 when none is).",
            registry=r,
        )
        self.checked_until = Gauge(
            "drledger_ledger_checked_until_timestamp_seconds",
            "The ledger's completeness is checked up to this creation time (now minus the grace period when caught up).",
            registry=r,
        )
        self.at_risk = Gauge(
            "drledger_readiness_at_risk_events",
            "Events committed on the primary and not yet on the replica: what a failover now would lose.",
            registry=r,
        )
        self.recoverable = Gauge(
            "drledger_readiness_recoverable_events",
            "At-risk events already in the ledger: what replay would bring back.",
            registry=r,
        )
        self.unrecoverable = Gauge(
            "drledger_readiness_unrecoverable_if_now_events",
            "At-risk events not in the ledger: lost for good if the primary region died now.",
            registry=r,
        )
        self.at_risk_age = Gauge(
            "drledger_readiness_at_risk_age_seconds",
            "Age of the oldest at-risk event (0 when none).",
            registry=r,
        )
        self.unrecoverable_age = Gauge(
            "drledger_readiness_unrecoverable_age_seconds",
            "Age of the oldest unrecoverable-if-now event (0 when none).",
            registry=r,
        )
        self.exact = Gauge(
            "drledger_readiness_exact",
            "1 if every at-risk event was checked one by one; 0 if the replica was too far behind and some were counted.",
            registry=r,
        )
        self.relay_up = Gauge(
            "drledger_relay_up",
            "1 if the relay is alive: its replication slot has a reader (and its engine streams, given its metrics).",
            registry=r,
        )
        self.relay_publish = Gauge(
            "drledger_relay_last_publish_age_seconds",
            "Seconds since the relay last published a batch (from its /metrics).",
            registry=r,
        )
        self.slot_exists = Gauge(
            "drledger_slot_exists", "1 if the relay's replication slot exists.", registry=r
        )
        self.slot_active = Gauge("drledger_slot_active", "1 if a relay is reading the slot.", registry=r)
        self.slot_status = Gauge(
            "drledger_slot_wal_status",
            "1 for the slot's wal_status (reserved, extended, unreserved, lost), 0 for the others.",
            ["status"],
            registry=r,
        )
        self.slot_safe = Gauge(
            "drledger_slot_safe_wal_size_bytes",
            "WAL that may still be written before the slot is at risk of invalidation (NaN: no limit set).",
            registry=r,
        )
        self.slot_retained = Gauge(
            "drledger_slot_retained_wal_bytes", "WAL kept on the primary for the slot.", registry=r
        )
        self.slot_unconfirmed = Gauge(
            "drledger_slot_unconfirmed_wal_bytes",
            "WAL written since the position the relay last confirmed.",
            registry=r,
        )
        self._states: dict[str, str] = {}

    def update(self, snap: Snapshot) -> None:
        self.cycles.inc()
        self.cycle_seconds.observe(snap.cycle_seconds)
        self.last_cycle.set(snap.at_ms / 1000)
        sides = {"primary": snap.primary, "replica": snap.replica, "ledger": snap.ledger}
        for name, side in sides.items():
            if side is None:
                continue
            self.up.labels(name).set(1 if side.up else 0)
            if not side.up:
                self.failures.labels(name).inc()
            self.last_commit.labels(name).set(_seconds(side.newest_commit_ms) if side.up else NAN)
        if snap.relay.metrics_up is not None:
            self.up.labels("relay_metrics").set(1 if snap.relay.metrics_up else 0)
            if not snap.relay.metrics_up:
                self.failures.labels("relay_metrics").inc()
        self.replica_lag.set(_value(snap.replica_lag_s))
        self.ledger_lag.set(_value(snap.ledger_lag_s))
        self.missing.set(_value(snap.missing_in_ledger))
        self.missing_age.set(_value(snap.missing_oldest_age_s))
        self.checked_until.set(_seconds(snap.ledger_checked_until_ms))
        ready = snap.readiness
        self.at_risk.set(_value(ready.at_risk if ready else None))
        self.recoverable.set(_value(ready.recoverable if ready else None))
        self.unrecoverable.set(_value(ready.unrecoverable_if_now if ready else None))
        self.at_risk_age.set(_value(ready.at_risk_age_s if ready else None))
        self.unrecoverable_age.set(_value(ready.unrecoverable_age_s if ready else None))
        self.exact.set(_value(ready.exact if ready else None))
        self.relay_up.set(_value(snap.relay.up))
        publish = snap.relay.last_publish_ms
        self.relay_publish.set(NAN if publish is None else max(0.0, (snap.at_ms - publish) / 1000))
        slot = snap.slot if snap.primary.up else None
        self.slot_exists.set(NAN if not snap.primary.up else (1 if slot is not None else 0))
        self.slot_active.set(NAN if slot is None else (1 if slot.active else 0))
        for status in WAL_STATUSES:
            self.slot_status.labels(status).set(
                NAN if slot is None else (1 if slot.wal_status == status else 0)
            )
        self.slot_safe.set(_value(slot.safe_wal_bytes if slot else None))
        self.slot_retained.set(_value(slot.retained_bytes if slot else None))
        self.slot_unconfirmed.set(_value(slot.unconfirmed_bytes if slot else None))
        self.log_changes(snap)

    def log_changes(self, snap: Snapshot) -> None:
        """One line whenever a state an operator cares about changes (and the first time it is known)."""
        states = states_of(snap)
        for key, (state, detail) in states.items():
            if self._states.get(key) != state:
                previous = self._states.get(key)
                self._states[key] = state
                line = (
                    f"{key}: {state}"
                    + (f" (was {previous})" if previous else "")
                    + (f": {detail}" if detail else "")
                )
                (log.info if state in _CALM else log.warning)(line)


UNRECOVERABLE_AFTER_S = 1.0
_CALM = {"up", "complete", "none", "alive", "reserved", "extended", "ok"}


def states_of(snap: Snapshot) -> dict[str, tuple[str, str | None]]:
    """The states the log follows: each (state word, what to say about it)."""
    states: dict[str, tuple[str, str | None]] = {}
    for name, side in (("primary", snap.primary), ("replica", snap.replica), ("ledger", snap.ledger)):
        if side is not None:
            # A right missing is its own state: the line names the GRANT, even after an outage.
            down = "lacks a right" if side.lacks_right else "down"
            states[name] = ("up", None) if side.up else (down, side.error)
    if snap.relay.up is not None:
        states["relay"] = ("alive", None) if snap.relay.up else ("down", snap.relay.error)
    if snap.missing_in_ledger is not None:
        states["ledger completeness"] = (
            ("complete", None)
            if snap.missing_in_ledger == 0
            else ("missing events", f"{snap.missing_in_ledger} committed events are not in the ledger")
        )
    if snap.readiness is not None:
        # The last few milliseconds of commits are always on their way to the ledger; the state turns
        # only once some would-be-lost event is a second old, so the log does not flicker with load.
        ready = snap.readiness
        behind = ready.unrecoverable_if_now > 0 and ready.unrecoverable_age_s >= UNRECOVERABLE_AFTER_S
        states["unrecoverable if the primary died now"] = (
            ("some", f"{ready.unrecoverable_if_now} events would be lost for good")
            if behind
            else ("none", None)
        )
    if snap.slot is not None and snap.slot.wal_status is not None:
        states["slot WAL"] = (snap.slot.wal_status, None)
    return states
