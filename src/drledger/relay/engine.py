"""Running the Debezium embedded engine and handing each batch to the ledger.

At-least-once, whole transactions: the outbox events of a source transaction are published together,
once its END record shows the relay holds all of them (relay/transactions.py), and durably
acknowledged by the ledger *before* its records are marked processed; only marked records have their
offsets committed (and so the replication slot's confirmed LSN advanced), and a record is marked only
once every record before it is. A crash in between replays the transaction, whole, on restart; the
ledger never holds part of one.

Fail loudly. The engine runs on a worker thread; the main thread started the JVM and waits for one of
three things: a stop signal, the engine's completion (Debezium's CompletionCallback), or a fatal
error in the batch handler (a ledger that stayed unavailable, an outbox change that cannot be read).
A requested stop closes the engine, which commits the offsets of what was marked, within
STOP_GRACE_S; anything else becomes a DrledgerError whose exit code says "retry later" (75) or
"operator needed" (2). Either way the process ends within seconds: `drledger relay` exits without
waiting for whatever Java threads the engine left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drledger.errors import DrledgerError, LedgerUnavailable, RetryLater, SlotBusy, StopRequested
from drledger.events import LedgerEvent, event_id_bytes
from drledger.files import write_private
from drledger.java import start_jvm
from drledger.ledger.base import Ledger
from drledger.relay.faults import CHECK, RESTART, causes_of, stack_trace
from drledger.relay.metrics import RelayMetrics
from drledger.relay.transactions import WholeTransactions
from drledger.relay.translate import StreamRecord, read_stream_record
from drledger.retry import backoff
from drledger.source import open_source
from drledger.streaming import RelaySettings
from drledger.timeutil import now_ms

log = logging.getLogger("drledger.relay")

# A requested stop: how long the engine gets to finish its batch and commit offsets.
STOP_GRACE_S = 10.0
# A failure: how long the engine gets to stop before the process exits anyway.
FAIL_GRACE_S = 5.0
#: A replication slot another connection still holds after this long is another live relay's, not a dead one's.
SLOT_BUSY_GRACE_S = 10.0
#: How often the running relay checks that its state directory still takes writes.
STATE_CHECK_S = 2.0


@dataclass
class RelayStats:
    """What the relay has done, and how long commits took to be durably in the ledger.

    Ledger lag is measured per event as (ledger acknowledged the batch) minus (source commit time): the
    time a committed insert was exposed, present in the database only. Written as JSON to the state
    directory up to five times a second, for operators' monitoring and for the drill's figures.
    """

    events: int = 0
    batches: int = 0
    last_commit_ms: int | None = None
    last_lag_ms: int | None = None
    lag_ms_counts: Counter[int] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.events / elapsed if elapsed > 0 else 0.0

    def record(
        self, events: list[LedgerEvent], acked_ms: int, streamed: list[LedgerEvent] | None = None
    ) -> None:
        """Count `events`; commit→ledger lag only for the `streamed` ones (all, if not given): a snapshot
        read's "commit" is its row's creation, minutes or days ago, not a delay of the relay's."""
        self.events += len(events)
        timed = events if streamed is None else streamed
        for event in timed:
            self.lag_ms_counts[max(0, acked_ms - event.commit_ts_ms)] += 1
        self.last_commit_ms = events[-1].commit_ts_ms
        if timed:
            self.last_lag_ms = acked_ms - timed[-1].commit_ts_ms

    def as_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "batches": self.batches,
            "last_commit_ms": self.last_commit_ms,
            "last_lag_ms": self.last_lag_ms,
            "lag_ms_counts": {str(k): v for k, v in sorted(self.lag_ms_counts.items())},
        }


def lag_percentile(lag_ms_counts: dict[int, int], q: float) -> float | None:
    """The q-th percentile of a lag histogram (ms → count). Pure."""
    total = sum(lag_ms_counts.values())
    if total == 0:
        return None
    rank = q / 100 * (total - 1)
    seen = 0
    for lag, count in sorted(lag_ms_counts.items()):
        seen += count
        if seen > rank:
            return float(lag)
    return float(max(lag_ms_counts))


def read_stats(path: Path) -> dict[int, int]:
    """The lag histogram a relay wrote to its stats file; empty if there is none yet."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {int(k): int(v) for k, v in doc.get("lag_ms_counts", {}).items()}


class _Stopping(Exception):
    """A stop was requested while a batch waited for the ledger: leave it unmarked, for the next run."""


def unreadable_change(exc: BaseException) -> DrledgerError:
    what = f"the column {exc.args[0]!r} is missing" if isinstance(exc, KeyError) and exc.args else str(exc)
    return DrledgerError(
        f"An outbox change could not be read ({what}): drledger.outbox is not as drledger init made it; {CHECK}."
    )


class Relay:
    """One relay: a Debezium engine on the outbox of `dsn`, publishing into `ledger`."""

    def __init__(
        self,
        dsn: str,
        ledger: Ledger,
        settings: RelaySettings,
        on_batch: Callable[[RelayStats], None] | None = None,
        *,
        password: str | None = None,
        backfill_hint: Callable[[], str] = lambda: "<the ledger's last commit, less 15 minutes>",
        verbose: bool = False,
        metrics: RelayMetrics | None = None,
        already_relayed: set[bytes] | None = None,
    ) -> None:
        self.dsn = dsn
        #: The ids of events the ledger holds, for a start on which Debezium reads the outbox whole: a
        #: snapshot row among them is left out (a snapshot cut short published it already).
        self.already_relayed = already_relayed
        self.snapshot_rows_left_out = 0
        self.metrics = metrics
        self.source = open_source(dsn)
        self.ledger = ledger
        self.settings = settings
        self.stats = RelayStats()
        #: Records of the source transaction still open, held until it is whole (transactions.py).
        self.transactions: WholeTransactions[Any] = WholeTransactions(settings.max_transaction_changes)
        # The last commit relayed survives restarts: it is where a backfill would have to start.
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            last = json.loads(settings.stats_file.read_text()).get("last_commit_ms")
            self.stats.last_commit_ms = int(last) if last is not None else None
        self.on_batch = on_batch
        self.password = password
        self.backfill_hint = backfill_hint
        self.verbose = verbose
        self.failure: DrledgerError | None = None
        self.streaming = threading.Event()
        self.running = False
        self._stop_requested = threading.Event()
        self._engine_done = threading.Event()
        self._wake = threading.Event()
        self._stats_written_at = 0.0
        self._slot_busy_since: float | None = None
        self._state_checked_at = 0.0

    # -- what the engine's threads call -------------------------------------------------------------

    def write_stats(self) -> None:
        """Replace the stats file atomically (0600), so a reader never sees half of it."""
        self._stats_written_at = time.monotonic()
        with contextlib.suppress(OSError):
            write_private(self.settings.stats_file, json.dumps(self.stats.as_json()))

    def handle_batch(self, records: list[Any]) -> list[Any]:
        """Publish the outbox events of every source transaction this batch completes; return the records
        that may now be marked processed (the ledger acknowledged all their events), in stream order. The
        records of a transaction still open are held, unpublished and unmarked, for the next batch."""
        began = time.monotonic()
        for record in records:
            # One call into Java per record: its value says what it is.
            value = record.value()
            try:
                item = read_stream_record(None if value is None else str(value))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise unreadable_change(exc) from None
            self.transactions.add(record, self._leave_out_relayed_snapshot_row(item))
        ready = self.transactions.take()
        events, streamed = ready.events, ready.streamed
        if events:
            publishing = time.monotonic()
            self.publish(events)
            acked = now_ms()
            self.stats.record(events, acked, streamed)
            if self.metrics is not None:
                self.metrics.published(
                    len(events),
                    time.monotonic() - publishing,
                    [acked - e.commit_ts_ms for e in streamed],
                    events[-1].commit_ts_ms,
                    acked,
                )
        self.stats.batches += 1
        if self.metrics is not None:
            self.metrics.batches.inc()
            self.metrics.batch_seconds.observe(time.monotonic() - began)
            self.metrics.held_changes.set(self.transactions.held)
        if time.monotonic() - self._stats_written_at >= 0.2:
            self.write_stats()
        if self.on_batch is not None:
            self.on_batch(self.stats)
        return ready.records

    def _leave_out_relayed_snapshot_row(self, item: StreamRecord) -> StreamRecord:
        """A snapshot read whose event the ledger holds (a snapshot cut short published it) stays
        unpublished; the first streamed outbox change ends the snapshot, and the ids need not be kept."""
        if self.already_relayed is None or item.kind != "change" or not item.outbox:
            return item
        if not item.snapshot:
            self.already_relayed = None
            if self.snapshot_rows_left_out:
                log.info(
                    "the snapshot left out %d outbox rows the ledger already held",
                    self.snapshot_rows_left_out,
                )
            return item
        if item.event is not None and event_id_bytes(item.event.event_id) in self.already_relayed:
            self.snapshot_rows_left_out += 1
            return dataclasses.replace(item, event=None)
        return item

    def publish(self, events: list[LedgerEvent]) -> None:
        """Publish, retrying the whole batch with backoff while the ledger is unavailable, for at most
        `settings.ledger_timeout_s`; then RetryLater. A requested stop ends the wait at once."""
        began = time.monotonic()
        deadline = began + self.settings.ledger_timeout_s
        for delay in backoff():
            if self._stop_requested.is_set():
                raise _Stopping()
            try:
                self.ledger.publish(events)
                return
            except LedgerUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise RetryLater(
                        f"The ledger {self.ledger.display_url} did not take a batch for {time.monotonic() - began:.0f} s "
                        f"({str(exc).rstrip('.')}): {RESTART}."
                    ) from None
                log.warning("ledger write failed, retrying in %.1fs: %s", delay, exc)
                if self.metrics is not None:
                    self.metrics.publish_failures.inc()
                self._stop_requested.wait(delay)

    def fail(self, failure: DrledgerError) -> None:
        """Record why the relay must stop (the first reason wins) and wake the main thread."""
        if self.failure is None and not self._stop_requested.is_set():
            self.failure = failure
        self._wake.set()

    def engine_failed(self, error: Any, message: str) -> None:
        if self._stop_requested.is_set() or self.failure is not None:
            return
        if error is None:
            self.fail(
                RetryLater(
                    f"The Debezium engine stopped ({message.strip() or 'no reason given'}): {RESTART}."
                )
            )
            return
        log.debug("Debezium's error:\n%s", stack_trace(error))
        self.fail(
            self.source.classify_failure(
                causes_of(error),
                slot=self.settings.slot,
                state_dir=str(self.settings.state_dir),
                backfill_hint=self.backfill_hint(),
            )
        )

    # -- the main thread ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

    def _build(self) -> Any:
        import jpype

        relay = self
        stop_engine = jpype.JClass("io.debezium.engine.StopEngineException")

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
        class Consumer:
            @jpype.JOverride
            def handleBatch(self, records: Any, committer: Any) -> None:
                try:
                    processed = relay.handle_batch(list(records))
                except _Stopping:
                    raise stop_engine("drledger: stop requested while the ledger was unavailable") from None
                except DrledgerError as exc:
                    relay.fail(exc)
                    raise stop_engine(f"drledger: {exc}") from None
                except Exception as exc:
                    log.debug("the batch handler failed", exc_info=True)
                    relay.fail(
                        RetryLater(f"The relay failed on a batch ({type(exc).__name__}: {exc}): {RESTART}.")
                    )
                    raise stop_engine(f"drledger: {exc}") from None
                # Only now, with their events in the ledger, may these records' offsets be committed; those
                # of a transaction still open are marked by the batch that completes it.
                for record in processed:
                    committer.markProcessed(record)
                committer.markBatchFinished()

            @jpype.JOverride
            def supportsTombstoneEvents(self) -> bool:
                return True

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
        class Completion:
            @jpype.JOverride
            def handle(self, success: bool, message: Any, error: Any) -> None:
                if not success:
                    relay.engine_failed(error, str(message))
                elif not relay._stop_requested.is_set() and relay.failure is None:
                    relay.fail(RetryLater(f"The Debezium engine stopped by itself ({message}): {RESTART}."))

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
        class Connector:
            @jpype.JOverride
            def taskStarted(self) -> None:
                relay.streaming.set()
                if relay.metrics is not None:
                    relay.metrics.engine_up.set(1)

            @jpype.JOverride
            def taskStopped(self) -> None:
                if relay.metrics is not None:
                    relay.metrics.engine_up.set(0)

        props = jpype.JClass("java.util.Properties")()
        for key, value in self.source.connector_properties(self.settings, password=self.password).items():
            props.setProperty(key, value)
        engine_class = jpype.JClass("io.debezium.engine.DebeziumEngine")
        json_format = jpype.JClass("io.debezium.engine.format.Json")
        return (
            engine_class.create(json_format)
            .using(props)
            .using(Completion())
            .using(Connector())
            .notifying(Consumer())
            .build()
        )

    def debezium_error(self, error: Any) -> None:
        """An exception Debezium logged at ERROR while it runs. Debezium retries whatever its connector
        calls retriable — a missing publication, a denied privilege too — so the relay stops at once on
        any error that a retry cannot mend, and leaves only the transient ones to Debezium's retries."""
        if self._stop_requested.is_set() or self.failure is not None:
            return
        failure = self.source.classify_failure(
            causes_of(error),
            slot=self.settings.slot,
            state_dir=str(self.settings.state_dir),
            backfill_hint=self.backfill_hint(),
        )
        if isinstance(failure, SlotBusy):
            # A relay that died frees its slot within seconds; one that still holds it after the grace
            # is another live relay on this slot, which Debezium would retry against for minutes.
            self._slot_busy_since = self._slot_busy_since or time.monotonic()
            held_s = time.monotonic() - self._slot_busy_since
            if held_s >= SLOT_BUSY_GRACE_S:
                self.fail(
                    DrledgerError(
                        f"The replication slot '{self.settings.slot}' has been held by another connection for "
                        f"{held_s:.0f} s: another relay reads it; one relay per slot, so stop one of them (or give "
                        "this one its own --slot)."
                    )
                )
            return
        if not isinstance(failure, RetryLater):
            log.debug("Debezium's error:\n%s", stack_trace(error))
            self.fail(failure)

    def _run_engine(self, engine: Any) -> None:
        try:
            engine.run()
        except Exception as exc:
            java = getattr(exc, "getCause", None) is not None
            if java:
                self.engine_failed(exc, str(exc))
            else:
                self.fail(RetryLater(f"The Debezium engine stopped ({exc}): {RESTART}."))
        finally:
            if self.metrics is not None:
                self.metrics.engine_up.set(0)
            self._engine_done.set()
            self._wake.set()

    def _check_state_dir(self) -> None:
        """Stop (exit 2) once the state directory can no longer be written: Debezium's offsets would stop
        advancing (the slot holding WAL, a restart re-publishing everything since) while it logs warnings
        and looks alive. Checked by writing the stats file, as the relay does anyway."""
        if time.monotonic() - self._state_checked_at < STATE_CHECK_S:
            return
        self._state_checked_at = time.monotonic()
        state_dir = self.settings.state_dir
        try:
            if not self.settings.lock_file.exists():
                raise FileNotFoundError(errno.ENOENT, "it was removed")
            # A probe of its own: the engine's thread writes the stats file meanwhile.
            with tempfile.TemporaryFile(dir=state_dir):
                pass
        except OSError as exc:
            self.fail(
                DrledgerError(
                    f"The relay's state directory {state_dir} can no longer be written ({exc.strerror or exc}): "
                    "its offsets would stop advancing while the slot holds WAL; restore it (or give the relay "
                    "another --state-dir with --backfill-since) and start the relay again."
                )
            )

    def _close_engine(self, engine: Any, until: float) -> None:
        """engine.close(), retried while Debezium refuses it (it does while its tasks are starting)."""
        while time.monotonic() < until and not self._engine_done.is_set():
            try:
                engine.close()
                return
            except Exception as exc:
                log.debug("Debezium refused to stop yet: %s", exc)
                time.sleep(0.25)

    def _shutdown(self, engine: Any, grace_s: float) -> bool:
        """Close the engine and wait for it at most `grace_s`; whether it stopped in time."""
        until = time.monotonic() + grace_s
        closer = threading.Thread(
            target=self._close_engine, args=(engine, until), name="debezium-close", daemon=True
        )
        closer.start()
        stopped = self._engine_done.wait(grace_s)
        if not stopped:
            log.warning(
                "the Debezium engine did not stop within %.0f s; leaving it (offsets stand at the last batch the "
                "ledger acknowledged)",
                grace_s,
            )
        return stopped

    def run(self) -> None:
        """Run until a stop is requested (return) or the engine fails (raise DrledgerError: RetryLater
        for a transient failure, a plain DrledgerError when an operator is needed)."""
        start_jvm(verbose=self.verbose)
        watch_java_errors(self.debezium_error)
        engine = self._build()
        worker = threading.Thread(
            target=self._run_engine, args=(engine,), name="debezium-engine", daemon=True
        )
        self.running = True
        try:
            worker.start()
            while not self._wake.wait(0.5):
                self._check_state_dir()
            if self.failure is None and self._stop_requested.is_set():
                self._shutdown(engine, STOP_GRACE_S)
                return
            failure = self.failure or RetryLater(f"The Debezium engine stopped without a reason: {RESTART}.")
            self._shutdown(engine, FAIL_GRACE_S)
            raise failure
        finally:
            self.running = False
            self.write_stats()


def watch_java_errors(on_error: Callable[[Any], None]) -> None:
    """Call `on_error(throwable)` for every exception a Java logger reports at ERROR (log4j2 appender)."""
    import jpype

    state = jpype.JClass("org.apache.logging.log4j.core.LifeCycle$State")

    @jpype.JImplements("org.apache.logging.log4j.core.Appender")
    class ErrorWatch:
        @jpype.JOverride
        def append(self, event: Any) -> None:
            try:
                thrown = event.getThrown()
                if thrown is not None:
                    on_error(thrown)
            except Exception:  # never let the watch break Debezium's logging
                log.debug("watching Debezium's errors failed", exc_info=True)

        @jpype.JOverride
        def getName(self) -> str:
            return "drledger-error-watch"

        @jpype.JOverride
        def getLayout(self) -> Any:
            return None

        @jpype.JOverride
        def ignoreExceptions(self) -> bool:
            return True

        @jpype.JOverride
        def getHandler(self) -> Any:
            return None

        @jpype.JOverride
        def setHandler(self, _handler: Any) -> None:
            pass

        @jpype.JOverride
        def getState(self) -> Any:
            return state.STARTED

        @jpype.JOverride
        def initialize(self) -> None:
            pass

        @jpype.JOverride
        def start(self) -> None:
            pass

        @jpype.JOverride
        def stop(self) -> None:
            pass

        @jpype.JOverride
        def isStarted(self) -> bool:
            return True

        @jpype.JOverride
        def isStopped(self) -> bool:
            return False

    context = jpype.JClass("org.apache.logging.log4j.LogManager").getContext(False)
    config = context.getConfiguration()
    appender = ErrorWatch()
    config.addAppender(appender)
    config.getRootLogger().addAppender(appender, jpype.JClass("org.apache.logging.log4j.Level").ERROR, None)
    context.updateLoggers()


class SignalsStop:
    """SIGINT/SIGTERM stop the relay: a running relay closes its engine; before that, StopRequested."""

    def __init__(self) -> None:
        self.relay: Relay | None = None
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalsStop:
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        first = self.received is None
        self.received = name
        if self.relay is not None and self.relay.running:
            if first:
                log.info("received %s, stopping the relay", name)
            self.relay.request_stop()
            return
        raise StopRequested(name)
