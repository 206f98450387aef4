"""`drledger relay` as a library function: the checks, the state, the backfill, then the engine.

Everything that can be known before Debezium starts is checked first, so a relay that cannot work
says why in one sentence instead of starting an engine that would fail, retry or — worse — resume
from a position that is not this database's: the database (wal_level, privileges, outbox, publication),
the state directory (whose it is, one relay at a time), the replication slot (lost, missing, another
database's). A failure is a DrledgerError whose exit code tells a supervisor what to do: 75
(RetryLater) restart me, 2 an operator is needed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from drledger.errors import DatabaseUnavailable, DrledgerError, LedgerUnavailable, RetryLater, StopRequested
from drledger.events import LATEST_MS
from drledger.ledger.base import Ledger
from drledger.relay.engine import Relay, RelayStats, SignalsStop
from drledger.relay.metrics import RelayMetrics
from drledger.relay.state import RelayState, check_source
from drledger.source import open_source
from drledger.source.base import SourceDatabase
from drledger.streaming import RelaySettings
from drledger.timeutil import format_instant

log = logging.getLogger("drledger.relay")

# libpq's words for a server that is not there *now*: worth a restart, unlike a bad password.
_TRANSIENT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not connect",
    "no route to host",
    "network is unreachable",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
    "remaining connection slots",
    "connection reset",
)
_LEDGER_TRANSIENT = ("cannot reach", "did not acknowledge", "throttled", "timed out", "unavailable")


@dataclass(frozen=True)
class RelayRequest:
    dsn: str
    ledger_url: str
    settings: RelaySettings
    client_config: dict[str, str] = field(default_factory=dict)
    create: bool = False
    backfill_since_ms: int | None = None
    verbose: bool = False
    #: Serve the relay's /metrics here (host, port); None: no endpoint.
    metrics_listen: tuple[str, int] | None = None


def retry_if_transient(exc: DrledgerError, transient: tuple[str, ...]) -> DrledgerError:
    """A start-up failure to reach a service: RetryLater if the service may just be away for now."""
    text = str(exc).lower()
    if isinstance(exc, RetryLater) or not any(word in text for word in transient):
        return exc
    return RetryLater(
        f"{str(exc).rstrip('.')}; the relay exits so that its supervisor starts it again later."
    )


def _close_quietly(ledger: Ledger, within_s: float = 5.0) -> None:
    """Close the ledger (flushing a client's buffers), but never wait long for an absent broker."""
    closer = threading.Thread(target=ledger.close, name="ledger-close", daemon=True)
    closer.start()
    closer.join(within_s)


def serve(request: RelayRequest, on_batch: Callable[[RelayStats], None] | None = None) -> RelayStats | None:
    """Run a relay until SIGINT/SIGTERM (return its stats; None if stopped before it ran) or a failure
    (raise DrledgerError: exit_code 75 for RetryLater, 2 when an operator is needed)."""
    from drledger.ledger import open_ledger, parse_ledger_url

    settings = request.settings
    source = open_source(request.dsn)
    with SignalsStop() as signals:
        try:
            source.connector_properties(settings)  # the DSN's settings, before anything connects
            parse_ledger_url(request.ledger_url)
            try:
                # The relay's rights from the one list, before anything else asks the database (or
                # Debezium starts): a gap is one sentence naming the GRANT, exit 2.
                source.require_rights("relay", "relay")
                source.prepare_relay(settings.slot)
                others = source.other_relay_slots(settings.slot)
                if others:
                    log.warning(
                        "this database also has the logical slot%s %s: if another relay reads %s into the "
                        "same ledger, every event is written twice (read once, by event id, but stored twice); "
                        "one relay per ledger, and drop a slot no relay uses (it holds WAL)",
                        "s" if len(others) > 1 else "",
                        ", ".join(others),
                        "them" if len(others) > 1 else "it",
                    )
                identity = source.identify(settings.slot)
                password = source.connector_password()
                state = RelayState(settings)
                state.open()
                check_source(
                    state,
                    identity,
                    source.slot_info(settings.slot),
                    backfill=request.backfill_since_ms is not None,
                )
            except DatabaseUnavailable as exc:
                raise retry_if_transient(exc, _TRANSIENT) from None
            try:
                target = open_ledger(
                    request.ledger_url, request.client_config, writer=True, create=request.create
                )
            except LedgerUnavailable as exc:
                raise retry_if_transient(exc, _LEDGER_TRANSIENT) from None
            try:
                if target.created:
                    log.info("created the ledger %s", target.display_url)
                already_relayed: set[bytes] | None = None
                if request.backfill_since_ms is not None:
                    settings = _backfill(request, state, target)
                else:
                    _require_ledger_not_behind(state, target)
                    if state.snapshot_due():
                        already_relayed = _outbox_events_in_ledger(source, target)
                metrics = None
                if request.metrics_listen is not None:
                    metrics = RelayMetrics()
                    port = metrics.serve(*request.metrics_listen)
                    log.info(
                        "serving the relay's /metrics on http://%s:%d/metrics",
                        request.metrics_listen[0],
                        port,
                    )
                relay = Relay(
                    request.dsn,
                    target,
                    settings,
                    on_batch=on_batch,
                    password=password,
                    backfill_hint=state.backfill_hint,
                    verbose=request.verbose,
                    metrics=metrics,
                    already_relayed=already_relayed,
                )
                signals.relay = relay
                log.info("relaying %s → %s (slot %s)", "drledger.outbox", target.display_url, settings.slot)
                relay.run()
                return relay.stats
            finally:
                _close_quietly(target)
        except StopRequested as stop:
            log.info("received %s before the relay ran; stopped", stop)
            return None


def _require_ledger_not_behind(state: RelayState, target: Ledger) -> None:
    """Refuse a ledger that holds less than this relay delivered to it: a broker re-created empty (with
    the same cluster id), a file restored from an old copy. Publishing on would hide what it lost."""
    relayed_ms = state.last_relayed_ms()
    if relayed_ms is None or not target.writer_reads_back:
        return
    try:
        newest = target.newest_commit_ms(relayed_ms)
    except LedgerUnavailable as exc:
        raise retry_if_transient(exc, _LEDGER_TRANSIENT) from None
    if newest is None:
        raise DrledgerError(
            f"The ledger {target.display_url} holds no event committed at or after "
            f"{format_instant(relayed_ms)}, which this relay delivered to it and it acknowledged: the ledger "
            "went backwards (a broker re-created empty, a file restored from an old copy). See what it lost with "
            "drledger reconcile against the primary, then start the relay with --backfill-since before that time."
        )


#: Snapshot reads carry their row's creation as commit time, streamed events their commit: never
#: earlier. The ledger is read from a little before the oldest outbox row, for clocks that disagree.
_SNAPSHOT_LOOKBACK_MS = 60_000


def _outbox_events_in_ledger(source: SourceDatabase, target: Ledger) -> set[bytes] | None:
    """The ids of the events the ledger holds from the outbox's oldest row on, for a start on which
    Debezium reads the outbox whole: what a snapshot cut short (a relay killed in its first seconds)
    already published is then left out, not published twice. None where the writer may not read the
    ledger (a queue it would drain): then a cut snapshot is published again, and readers drop the copies."""
    if not target.writer_reads_back:
        return None
    try:
        first = source.outbox_slice(0, LATEST_MS, 1)
    except DatabaseUnavailable as exc:
        raise retry_if_transient(exc, _TRANSIENT) from None
    finally:
        source.close()
    # A slice cut short before its first row (more rows in one millisecond than asked for) ends there.
    oldest = first.events[0][1] if first.events else first.until_ms
    if oldest >= LATEST_MS:
        return None  # an empty outbox: no snapshot row to leave out
    since_ms = oldest - _SNAPSHOT_LOOKBACK_MS
    try:
        held = target.event_ids(since_ms, LATEST_MS)
    except LedgerUnavailable as exc:
        raise retry_if_transient(exc, _LEDGER_TRANSIENT) from None
    if held:
        log.info(
            "the outbox is read whole (its snapshot) on this start: of its rows, those among the %d events the "
            "ledger holds from %s on are left out, not published twice",
            len(held),
            format_instant(since_ms),
        )
    return held


def _backfill(request: RelayRequest, state: RelayState, target: Ledger) -> RelaySettings:
    """Create the slot, publish what the ledger lacks since T, and stream from the slot from then on."""
    from drledger.relay.backfill import backfill

    assert request.backfill_since_ms is not None
    try:
        created = open_source(request.dsn).ensure_slot(request.settings.slot)
    except DatabaseUnavailable as exc:
        raise retry_if_transient(exc, _TRANSIENT) from None
    if created and state.has_offsets():
        # The offsets were a slot's that is gone; this new slot starts after them, and the backfill covers
        # the gap. Kept beside, never overwritten.
        aside = state.set_aside_offsets()
        log.info(
            "the slot %s was created anew; its old offsets were moved to %s", request.settings.slot, aside
        )
    try:
        published = backfill(open_source(request.dsn), target, request.backfill_since_ms)
    except LedgerUnavailable as exc:
        raise retry_if_transient(exc, _LEDGER_TRANSIENT) from None
    log.info("backfilled %d outbox rows the ledger lacked", published)
    # The slot already marks where streaming starts; a snapshot would only re-send the outbox.
    return dataclasses.replace(request.settings, snapshot=open_source(request.dsn).snapshot_after_backfill)
