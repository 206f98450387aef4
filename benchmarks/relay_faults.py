"""The relay under the faults production inflicts on it (issue #12), measured: one row per fault.

Each fault runs against real services — a throw-away PostgreSQL primary, `drledger relay` child
processes run by a supervisor loop (as systemd would: restart after exit 75 or a kill, stay down
after 0 or 2), the embedded SQLite ledger or a Kafka-protocol broker (tansu) — while a writer commits
single-row insert transactions at a steady rate. Every committed insert is in drledger.outbox, so
the ground truth is the outbox itself; the ledger is read back by event id at the end.

Columns: events committed, missing from the ledger, duplicates in it, time to catch up (from the
load's or the fault's end until the ledger held every committed event), the relay's exit codes in
order (-9: our SIGKILL), and what happened.

    .venv/bin/python benchmarks/relay_faults.py                    # every fault (about 15 minutes)
    .venv/bin/python benchmarks/relay_faults.py --only kill,pg-restart --tps 1000 --seconds 60
    .venv/bin/python benchmarks/relay_faults.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from drledger.drill.broker import LocalBroker
from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from drledger.errors import ExitCode
from drledger.ledger import open_ledger
from drledger.source.postgres import outbox as postgres


@dataclass
class Row:
    fault: str
    committed: int = 0
    missing: int = 0
    duplicates: int = 0
    catch_up_s: float | None = None
    exit_codes: list[int] = field(default_factory=list)
    note: str = ""


def new_database(primary: LocalCluster) -> str:
    name = f"f_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL)")
    postgres.install(dsn, ["public.orders"])
    return dsn


def outbox_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT id::text FROM drledger.outbox").fetchall()}


def slot_active(dsn: str, slot: str) -> bool:
    with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        return bool(row and row[0])
    return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


class Supervisor:
    """`drledger relay` kept running as systemd's Restart=on-failure + RestartPreventExitStatus=2 would."""

    def __init__(self, args: list[str], log: Path, restart_delay_s: float = 2.0) -> None:
        self.args = args
        self.log = log
        self.restart_delay_s = restart_delay_s
        self.exits: list[int] = []
        self.exit_seconds: list[float] = []  # for each exit: seconds from a signal or fault mark to the exit
        self.mark = 0.0
        self.process: subprocess.Popen[bytes] | None = None
        self._killed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _loop(self) -> None:
        with self.log.open("ab") as out:
            while not self._done.is_set():
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "drledger", "relay", *self.args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                code = self.process.wait()
                self.exits.append(code)
                self.exit_seconds.append(time.monotonic() - self.mark)
                if self._done.is_set() or code not in (ExitCode.RETRY, -signal.SIGKILL):
                    break
                time.sleep(self.restart_delay_s)
        self._done.set()

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    def kill(self, sig: int = signal.SIGKILL, *, wait_s: float = 0.0) -> None:
        """Send `sig` to the relay; with `wait_s`, first wait that long for one to be running."""
        deadline = time.monotonic() + wait_s
        while (
            wait_s
            and time.monotonic() < deadline
            and (self.process is None or self.process.poll() is not None)
        ):
            time.sleep(0.05)
        self.mark = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        self._done.set()
        self.kill(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._thread.join(35)


class Load:
    """Single-row insert transactions at `tps`, from as many connections as it takes."""

    def __init__(self, dsn: str, tps: float, writers: int = 2) -> None:
        self.dsn = dsn
        self.tps = tps
        self.writers = writers
        self.committed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _write(self) -> None:
        rate = self.tps / self.writers
        conn: psycopg.Connection | None = None
        start = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute("INSERT INTO orders (customer) VALUES ('load')")
                with self._lock:
                    self.committed += 1
            except psycopg.Error:  # the database is away: try again, as an application would
                with self._lock:
                    self.failed += 1
                conn = None
                time.sleep(0.2)
            sent += 1
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            elif ahead < -1:  # fell behind (an outage): do not burst to catch up
                start, sent = time.monotonic(), 0
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._write, daemon=True) for _ in range(self.writers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


class LedgerWatch:
    """Reads a ledger's event ids as they arrive (SQLite rows after the last seen; a Kafka consumer)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self._sqlite if self.url.startswith("sqlite://") else self._kafka
        for batch in reader():
            with self._lock:
                self.events += len(batch)
                self._ids.update(batch)

    @property
    def ids(self) -> set[str]:
        """A copy of the event ids seen so far (the reader thread keeps adding to the original)."""
        with self._lock:
            return set(self._ids)

    def holds(self, wanted: set[str]) -> bool:
        with self._lock:
            return wanted <= self._ids

    def _sqlite(self) -> Iterator[list[str]]:
        path = self.url.removeprefix("sqlite://")
        last = 0
        while not self._stop.is_set():
            rows: list[tuple[int, str]] = []
            with contextlib.suppress(sqlite3.Error):
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    rows = db.execute(
                        "SELECT seq, event_id FROM ledger_events WHERE seq > ? ORDER BY seq", (last,)
                    ).fetchall()
                finally:
                    db.close()
            if rows:
                last = rows[-1][0]
                yield [r[1] for r in rows]
            else:
                time.sleep(0.05)

    def _kafka(self) -> Iterator[list[str]]:
        bootstrap, topic = self.url.removeprefix("kafka://").split("/", 1)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"watch-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "log_level": 0,
                "fetch.wait.max.ms": 20,
            }
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = list(metadata.topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                batch = []
                for message in consumer.consume(2000, timeout=0.1):
                    if message.error() is None:
                        event_id = dict(message.headers() or []).get("event_id")
                        if isinstance(event_id, bytes):
                            batch.append(event_id.decode())
                if batch:
                    yield batch
        finally:
            consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def catch_up(
    dsn: str, watch: LedgerWatch, since: float, timeout: float = 180, elsewhere: frozenset[str] = frozenset()
) -> float | None:
    """Seconds from `since` until the ledger (with what is known to be `elsewhere`) holds every committed
    event (None: it never did)."""
    deadline = time.monotonic() + timeout
    truth = outbox_ids(dsn) - elsewhere
    while time.monotonic() < deadline:
        if watch.holds(truth):
            return round(time.monotonic() - since, 2)
        time.sleep(0.1)
    return None


class Backlog:
    """Measures, in a thread, how long after a moment the ledger held everything committed until then."""

    def __init__(self, dsn: str, watch: LedgerWatch) -> None:
        self.since = time.monotonic()
        self.truth = outbox_ids(dsn)
        self.seconds: float | None = None
        threading.Thread(target=self._wait, args=(watch,), daemon=True).start()

    def _wait(self, watch: LedgerWatch) -> None:
        deadline = self.since + 300
        while time.monotonic() < deadline:
            if watch.holds(self.truth):
                self.seconds = round(time.monotonic() - self.since, 2)
                return
            time.sleep(0.05)


def tally(
    row: Row,
    dsn: str,
    watch: LedgerWatch,
    since: float,
    supervisor: Supervisor,
    backlog: Backlog | None = None,
) -> Row:
    row.catch_up_s = catch_up(dsn, watch, since)
    if backlog is not None:
        row.note += f"what was committed by the fault's end was in the ledger {backlog.seconds} s after it; "
    truth = outbox_ids(dsn)
    time.sleep(1)  # a redelivery in flight is counted too
    row.committed = len(truth)
    row.missing = len(truth - watch.ids)
    row.duplicates = watch.events - len(watch.ids)
    supervisor.stop()
    row.exit_codes = list(supervisor.exits)
    return row


class Bench:
    def __init__(self, work: Path, tps: float, seconds: float) -> None:
        self.work = work
        self.tps = tps
        self.seconds = seconds
        self.clusters = ClusterSet()
        self.primary = self.clusters.primary("primary", {"max_connections": "100"})

    def relay(
        self, dsn: str, url: str, name: str, *extra: str, slot: str | None = None, wait: bool = True
    ) -> Supervisor:
        slot = slot or f"slot_{name}"
        args = [
            "--db",
            dsn,
            "--ledger",
            url,
            "--create",
            "--slot",
            slot,
            "--state-dir",
            str(self.work / name),
            *extra,
        ]
        supervisor = Supervisor(args, self.work / f"{name}.log").start()
        if wait:
            wait_for(lambda: slot_active(dsn, slot), 120, "the relay to open its slot")
        return supervisor

    def snapshot_kill(self, rows: int = 60_000) -> Row:
        """SIGKILL in the relay's first seconds, during its first snapshot of an outbox of `rows` rows
        (Debezium reads it whole again on the restart), under 200 tx/s."""
        dsn = new_database(self.primary)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO orders (customer) SELECT 'before' FROM generate_series(1, %s)", (rows,))
        url = f"sqlite://{self.work}/snapshot.db"
        relay = self.relay(dsn, url, "snapshot", wait=False)
        watch = LedgerWatch(url)
        with Load(dsn, 200):
            wait_for(lambda: watch.events >= 2_000, 180, "part of the snapshot in the ledger")
            relay.kill(signal.SIGKILL)
            time.sleep(0.5)
            held = len(watch.ids)
            time.sleep(10)
        load_end = time.monotonic()
        row = tally(Row("relay SIGKILLed during its first snapshot"), dsn, watch, load_end, relay)
        row.note = (
            f"{rows:,} outbox rows before its first start, 200 insert tx/s; killed with {held:,} events in the "
            "ledger, which the restart's snapshot left out"
        )
        watch.close()
        return row

    def broker_back_empty(self) -> Row:
        """The broker killed; 5 s later an empty one with the same cluster id, the topics made again."""
        broker = LocalBroker()
        broker.start()
        dsn = new_database(self.primary)
        url = f"kafka://{broker.bootstrap}/backempty"
        relay = self.relay(dsn, url, "backempty")
        watch = LedgerWatch(url)
        back = LocalBroker()
        back.port, back.cluster_id = broker.port, broker.cluster_id
        try:
            with Load(dsn, 200):
                time.sleep(5)
                assert broker.process is not None
                broker.process.kill()
                broker.process.wait()
                relay.mark = time.monotonic()
                time.sleep(5)
                back.start()
                with open_ledger(url, writer=True, create=True):
                    pass
                wait_for(lambda: relay.stopped, 240, "the relay to exit")
                log = relay.log.read_text()
                said = log.strip().splitlines()[-1]
                noise = sum(1 for line in log.splitlines() if "FATAL" in line or "Traceback" in line)
                watch.close()
                # The operator reads the sentence and backfills into the new topic.
                second = self.relay(dsn, url, "backempty", "--backfill-since", "1h")
                watch = LedgerWatch(url)
                time.sleep(5)
            load_end = time.monotonic()
            row = tally(Row("Kafka broker back empty with its cluster id"), dsn, watch, load_end, second)
            row.exit_codes = relay.exits + row.exit_codes
            row.note = (
                f"exited {relay.exit_seconds[0]:.0f} s after the kill, saying: {said!r}; FATAL or Traceback "
                f"lines in its output: {noise}; then --backfill-since 1h"
            )
            watch.close()
            return row
        finally:
            back.stop()
            broker.stop()

    def kill(self) -> Row:
        """SIGKILL 3 times at random moments; the supervisor restarts it each time."""
        dsn = new_database(self.primary)
        url = f"sqlite://{self.work}/kill.db"
        relay = self.relay(dsn, url, "kill")
        watch = LedgerWatch(url)
        moments = sorted(random.uniform(5, self.seconds - 5) for _ in range(3))
        with Load(dsn, self.tps) as load:
            start = time.monotonic()
            for moment in moments:
                time.sleep(max(0.0, start + moment - time.monotonic()))
                relay.kill(signal.SIGKILL, wait_s=10)
            time.sleep(max(0.0, start + self.seconds - time.monotonic()))
        load_end = time.monotonic()
        row = tally(Row("relay SIGKILLed 3 times (supervisor restarts it)"), dsn, watch, load_end, relay)
        row.note = f"{self.tps:.0f} insert tx/s for {self.seconds:.0f} s ({load.committed / self.seconds:.0f} achieved)"
        watch.close()
        return row

    def broker_stop(self, broker: LocalBroker, stall_s: float, ledger_timeout: str) -> Row:
        """SIGSTOP the broker for `stall_s` under 200 tx/s."""
        dsn = new_database(self.primary)
        url = f"kafka://{broker.bootstrap}/stall-{uuid.uuid4().hex[:6]}"
        name = f"stall{stall_s:.0f}"
        relay = self.relay(dsn, url, name, "--ledger-timeout", ledger_timeout)
        watch = LedgerWatch(url)
        assert broker.process is not None
        with Load(dsn, 200):
            time.sleep(5)
            os.kill(broker.process.pid, signal.SIGSTOP)
            relay.mark = time.monotonic()
            time.sleep(stall_s)
            os.kill(broker.process.pid, signal.SIGCONT)
            backlog = Backlog(dsn, watch)
            time.sleep(5)
        load_end = time.monotonic()
        row = tally(Row(f"Kafka broker SIGSTOPped {stall_s:.0f} s"), dsn, watch, load_end, relay, backlog)
        row.note += (
            f"--ledger-timeout {ledger_timeout}; catch-up counted from the load's end, 5 s after SIGCONT"
            + (f"; first exit {relay.exit_seconds[0]:.0f} s into the stall" if len(relay.exits) > 1 else "")
        )
        watch.close()
        return row

    def broker_replaced(self) -> Row:
        """The broker killed; 30 s later a fresh, empty one on the same port: the topic is gone."""
        broker = LocalBroker()
        broker.start()
        dsn = new_database(self.primary)
        url = f"kafka://{broker.bootstrap}/replaced"
        relay = self.relay(dsn, url, "replaced")
        watch = LedgerWatch(url)
        fresh = LocalBroker()
        fresh.port = broker.port
        try:
            with Load(dsn, 200):
                time.sleep(5)
                # What the old broker acknowledged, read before it dies: the relay is paused for a moment
                # so that the reader has seen all of it.
                assert broker.process is not None and relay.process is not None
                relay.process.send_signal(signal.SIGSTOP)
                time.sleep(1.5)
                old_ids = set(watch.ids)
                broker.process.kill()
                broker.process.wait()
                relay.process.send_signal(signal.SIGCONT)
                killed_at = time.monotonic()
                time.sleep(30)
                fresh.start()
                relay.mark = time.monotonic()
                wait_for(lambda: relay.stopped, 90, "the relay to exit")
                exited_after = relay.exit_seconds[0]
                exited_after_kill = relay.mark + exited_after - killed_at
                said = relay.log.read_text().strip().splitlines()[-1]
                # The operator reads the sentence, recreates the topic: a relay started with --create.
                watch.close()
                with psycopg.connect(dsn) as conn:
                    lost_with_broker = conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()[0]  # type: ignore[index]
                second = self.relay(dsn, url, "replaced")
                watch = LedgerWatch(url)
                time.sleep(5)
            load_end = time.monotonic()
            catch = catch_up(dsn, watch, load_end, elsewhere=frozenset(old_ids))
            truth = outbox_ids(dsn)
            time.sleep(1)
            # The new broker cannot have what the old one acknowledged; everything else must be there.
            row = Row("Kafka broker replaced by an empty one")
            row.committed = len(truth)
            row.missing = len(truth - watch.ids - old_ids)
            row.duplicates = watch.events - len(watch.ids)
            row.catch_up_s = catch
            second.stop()
            row.exit_codes = relay.exits + second.exits
            row.note = (
                f"exited {exited_after:.1f} s after the new broker came up, {exited_after_kill:.0f} s "
                f"after the kill, saying: {said!r}; missing excludes what only the old broker held "
                f"({lost_with_broker} committed before the restart with --create)"
            )
            watch.close()
            return row
        finally:
            fresh.stop()
            broker.stop()

    def pg_outage(self, down_s: float) -> Row:
        """PostgreSQL stopped (fast shutdown) and started again after `down_s`, under load."""
        cluster = self.clusters.primary(f"pg{uuid.uuid4().hex[:4]}")
        dsn = new_database(cluster)
        url = f"sqlite://{self.work}/pg-{down_s:.0f}.db"
        relay = self.relay(dsn, url, f"pg{down_s:.0f}")
        watch = LedgerWatch(url)
        with Load(dsn, self.tps / 2) as load:
            time.sleep(5)
            cluster.stop()
            time.sleep(down_s)
            cluster.start()
            backlog = Backlog(dsn, watch)
            time.sleep(10)
        load_end = time.monotonic()
        title = "PostgreSQL restarted" if down_s == 0 else f"PostgreSQL stopped {down_s:.0f} s"
        row = tally(Row(title), dsn, watch, load_end, relay, backlog)
        row.note += f"catch-up counted from the load's end, 10 s after the restart; {load.failed} inserts refused while it was down"
        watch.close()
        cluster.stop()
        return row

    def slot_lost(self) -> Row:
        """The slot invalidated by max_slot_wal_keep_size while the relay was down; backfill closes the gap."""
        cluster = self.clusters.primary(
            f"slot{uuid.uuid4().hex[:4]}", {"wal_keep_size": "0", "max_slot_wal_keep_size": "64MB"}
        )
        dsn = new_database(cluster)
        url = f"sqlite://{self.work}/slot.db"
        state = self.work / "slot"
        relay = self.relay(dsn, url, "slot", slot="drledger_slot")
        with Load(dsn, 200):
            time.sleep(5)
        time.sleep(2)
        relay.stop()
        relayed = len(outbox_ids(dsn))
        with Load(dsn, 200):  # committed while the relay is down: the gap
            time.sleep(5)
        gap = len(outbox_ids(dsn)) - relayed
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE ballast (b text)")  # uncaptured: WAL only
            for _ in range(15):  # rows under 2 kB are never compressed: ~110 MB of WAL
                conn.execute("INSERT INTO ballast SELECT repeat('x', 1500) FROM generate_series(1, 5000)")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            status = conn.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'drledger_slot'"
            ).fetchone()
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "drledger",
                "relay",
                "--db",
                dsn,
                "--ledger",
                url,
                "--state-dir",
                str(state),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        reconcile = subprocess.run(
            [sys.executable, "-m", "drledger", "reconcile", "--db", dsn, "--ledger", url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        before = json.loads(reconcile.stdout)["counts"] if reconcile.stdout.strip().startswith("{") else {}
        hint = refused.stderr.split("--backfill-since ", 1)[-1].split(",", 1)[0].strip()
        backfill = Supervisor(
            [
                "--db",
                dsn,
                "--ledger",
                url,
                "--slot",
                "drledger_slot_2",
                "--state-dir",
                str(state),
                "--backfill-since",
                hint,
            ],
            self.work / "slot-backfill.log",
        ).start()
        watch = LedgerWatch(url)
        started = time.monotonic()
        catch = catch_up(dsn, watch, started)
        after = subprocess.run(
            [sys.executable, "-m", "drledger", "reconcile", "--db", dsn, "--ledger", url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        truth = outbox_ids(dsn)
        backfill.stop()
        row = Row("replication slot invalidated while the relay was down")
        row.committed = len(truth)
        row.missing = len(truth - watch.ids)
        row.duplicates = watch.events - len(watch.ids)
        row.catch_up_s = catch
        row.exit_codes = [*relay.exits, refused.returncode, *backfill.exits]
        after_counts = json.loads(after.stdout)["counts"] if after.stdout.strip().startswith("{") else {}
        row.note = (
            f"wal_status {status[0] if status else None}; refused saying {refused.stderr.strip()[:120]!r}…; "
            f"reconcile before the backfill: missing_in_ledger {before.get('missing_in_ledger')} of a gap of {gap} "
            f"(exit {reconcile.returncode}); after: "
            f"{after_counts.get('missing_in_ledger')} (exit {after.returncode}); catch-up counted from the backfill's start"
        )
        watch.close()
        cluster.stop()
        return row

    def disk_full(self) -> Row:
        """The SQLite ledger on a small tmpfs that fills up; space freed; the supervisor's restart catches up."""
        mount = self.work / "small"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)]).returncode != 0:
            return Row("SQLite ledger's disk full", note="skipped: mounting a tmpfs needs root")
        try:
            ballast = mount / "ballast"
            dsn = new_database(self.primary)
            url = f"sqlite://{mount}/ledger.db"
            relay = self.relay(dsn, url, "disk", "--ledger-timeout", "15s")
            watch = LedgerWatch(url)
            with Load(dsn, 500):
                time.sleep(3)
                with ballast.open("wb") as fill, contextlib.suppress(OSError):
                    while True:  # everything left but a little: the ledger runs out within seconds
                        fill.write(b"\0" * 65536)
                        fill.flush()
                relay.mark = time.monotonic()
                wait_for(lambda: relay.exits, 120, "the relay to stop on the full disk")
                first_exit = relay.exit_seconds[0]
                time.sleep(10)
                ballast.unlink()
                freed = time.monotonic()
                time.sleep(5)
            row = tally(Row("SQLite ledger's disk full"), dsn, watch, freed, relay)
            said = [line for line in relay.log.read_text().splitlines() if line.startswith("drledger:")]
            row.note = (
                f"first exit {first_exit:.0f} s after the disk filled (--ledger-timeout 15s), saying {said[0][:110]!r}…; "
                "catch-up counted from freeing the space"
            )
            watch.close()
            return row
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)

    def close(self) -> None:
        self.clusters.close()


FAULTS = [
    "kill",
    "snapshot-kill",
    "broker-stop",
    "broker-stall",
    "broker-replaced",
    "broker-back-empty",
    "pg-restart",
    "pg-down",
    "slot-lost",
    "disk-full",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    parser.add_argument("--tps", type=float, default=1000, help="insert transactions per second (kill, pg-*)")
    parser.add_argument("--seconds", type=float, default=60, help="load duration of the kill run")
    parser.add_argument(
        "--stall", type=float, default=150, help="seconds the broker stays stopped (broker-stall)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chosen = [f for f in args.only.split(",") if f]
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        raise SystemExit(f"unknown faults: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="drledger-faults-"))
    bench = Bench(work, args.tps, args.seconds)
    rows: list[Row] = []
    broker: LocalBroker | None = None
    try:
        for fault in chosen:
            print(f"… {fault}", file=sys.stderr, flush=True)
            if fault in ("broker-stop", "broker-stall") and broker is None:
                broker = LocalBroker()
                broker.start()
            if fault == "kill":
                rows.append(bench.kill())
            elif fault == "broker-stop":
                assert broker is not None
                rows.append(bench.broker_stop(broker, 30, "2m"))
            elif fault == "broker-stall":
                assert broker is not None
                rows.append(bench.broker_stop(broker, args.stall, "1m"))
            elif fault == "broker-replaced":
                rows.append(bench.broker_replaced())
            elif fault == "snapshot-kill":
                rows.append(bench.snapshot_kill())
            elif fault == "broker-back-empty":
                rows.append(bench.broker_back_empty())
            elif fault == "pg-restart":
                rows.append(bench.pg_outage(0))
            elif fault == "pg-down":
                rows.append(bench.pg_outage(60))
            elif fault == "slot-lost":
                rows.append(bench.slot_lost())
            elif fault == "disk-full":
                rows.append(bench.disk_full())
            print(json.dumps(asdict(rows[-1])), file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print(f"{'fault':<55} {'committed':>9} {'missing':>7} {'dupes':>6} {'catch-up':>9}  exit codes")
    for r in rows:
        catch = f"{r.catch_up_s:.2f} s" if r.catch_up_s is not None else "never"
        print(
            f"{r.fault:<55} {r.committed:>9,} {r.missing:>7,} {r.duplicates:>6,} {catch:>9}  {r.exit_codes}"
        )
        if r.note:
            print(f"    {r.note}")


if __name__ == "__main__":
    main()
