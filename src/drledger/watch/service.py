"""The watcher as a long-running service: a cycle every interval, the gauges served on /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from drledger.errors import DrledgerError, MissingPrivilege
from drledger.watch.cycle import Snapshot, Watcher, WatchSettings
from drledger.watch.metrics import WatchMetrics


def first_misconfiguration(snap: Snapshot) -> DrledgerError | None:
    """A side that failed for a reason no waiting mends (no outbox, a privilege, a ledger file not
    there): at start, that is bad input, said in one sentence; later, it is reported like an outage."""
    for name, side in (("primary", snap.primary), ("replica", snap.replica), ("ledger", snap.ledger)):
        if side is not None and side.lacks_right and side.error:
            return MissingPrivilege(side.error)  # already the sentence, naming the command and its GRANT
        if side is not None and side.misconfigured and side.error:
            return DrledgerError(f"The watcher cannot read the {name}: {side.error.rstrip('.')}.")
    return None


def run_watch(
    settings: WatchSettings,
    stop: threading.Event,
    *,
    listen: tuple[str, int] | None = None,
    on_cycle: Callable[[Snapshot], None] | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Cycle every `settings.interval_s` until `stop` is set, serving the gauges on `listen`.

    The first cycle runs before /metrics opens: a misconfiguration found there raises DrledgerError
    (exit 2), and Prometheus never scrapes a watcher that has not measured anything yet.
    """
    watcher = Watcher(settings)
    metrics = WatchMetrics()
    try:
        first = watcher.cycle()
        problem = first_misconfiguration(first)
        if problem is not None:
            raise problem
        metrics.update(first)
        if on_cycle is not None:
            on_cycle(first)
        if listen is not None:
            port = metrics.serve(*listen)
            if on_listening is not None:
                on_listening(port)
        next_at = time.monotonic() + settings.interval_s
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + settings.interval_s, time.monotonic())
            snap = watcher.cycle()
            metrics.update(snap)
            if on_cycle is not None:
                on_cycle(snap)
    finally:
        metrics.stop()
        watcher.close()
