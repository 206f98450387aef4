"""A failover rig: a primary, a replica trailing it through the lag injector, a relay into a ledger,
an insert workload that records every acknowledged commit, and the disaster itself.

The tests of reconcile and replay and the drill are built on it, so what they prove is proven on
real servers: physical streaming replication, the Debezium relay as its own process, a SIGKILLed
primary whose in-flight WAL is dropped, and a promoted replica.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from drledger.drill.changes import (
    ACCOUNT_COUNT,
    OPENING_BALANCE,
    STATUSES,
    Change,
    Commit,
    State,
    opening_state,
)
from drledger.drill.lag import LagInjector
from drledger.drill.postgres.cluster import ClusterSet, LocalCluster, free_port
from drledger.errors import DrledgerError
from drledger.events import LedgerEvent
from drledger.ledger import embedded_ledger_url, open_ledger, with_local_files_in
from drledger.source import open_source
from drledger.streaming import DEFAULT_SLOT, RelaySettings

DEMO_TABLE = "public.orders"
WARMUP_TABLE_DDL = "CREATE TABLE public.drill_warmup (id bigserial PRIMARY KEY, note text NOT NULL)"
# `reference` is a unique key besides the primary key (an order reference, as an application has): the
# workload gives every order one, and the dr-takes-unique-value scenario has the promoted database take
# a lost order's. Nullable, so a row written without one (tests, the old region's checks) is still valid.
DEMO_TABLE_DDL = (
    "CREATE TABLE public.orders (id bigserial PRIMARY KEY, customer text NOT NULL, "
    "amount numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL DEFAULT now(), "
    "reference text CONSTRAINT orders_reference_key UNIQUE)"
)

# With changes besides inserts (`drill --ops`, by default): orders move through statuses, some are
# deleted, and transfers move money between accounts (two updates in one transaction; the sum of the
# balances never changes).
ORDER_STATUS_DDL = "ALTER TABLE public.orders ADD COLUMN status text NOT NULL DEFAULT 'placed'"
ACCOUNTS_DDL = "CREATE TABLE public.accounts (id integer PRIMARY KEY, balance numeric(12,2) NOT NULL)"
#: Of the workload's transactions, every TRANSFER_EVERY-th also transfers, every ADVANCE_EVERY-th also
#: moves an earlier order's status on, and every DELETE_EVERY-th also deletes an earlier order.
TRANSFER_EVERY, ADVANCE_EVERY, DELETE_EVERY = 2, 3, 7


class Writer(Protocol):
    """The workload's one connection, whatever the engine."""

    def insert_orders(self, customer: str, rows: int) -> list[int]: ...

    def execute(self, statement: str, params: tuple[Any, ...]) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class TransactionalWriter:
    """What every engine's writer shares: the transaction ends on its connection."""

    conn: Any

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


def makes_changes(ops: Sequence[str] | None) -> bool:
    """Whether a workload captured with `ops` updates and deletes besides inserting."""
    return any(op != "insert" for op in ops or ())


class PostgresWriter(TransactionalWriter):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def insert_orders(self, customer: str, rows: int) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(
                "INSERT INTO public.orders (customer, amount, reference) SELECT %s || g, "
                "(g * 7.25)::numeric(12,2), 'ord-' || gen_random_uuid() "
                "FROM generate_series(1, %s) g RETURNING id",
                (customer, rows),
            ).fetchall()
        ]

    def execute(self, statement: str, params: tuple[Any, ...]) -> None:
        self.conn.execute(statement, params)


class ChangeMaker:
    """The updates and deletes of the workload's i-th transaction, and what each leaves, client-side."""

    RECENT = 300

    def __init__(self, opening: State, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.balances = {key: Decimal(str(v)) for (table, key), v in opening.items() if table == "accounts"}
        self.statuses: dict[int, str] = {}
        self.recent: list[int] = []

    def plan(self, i: int) -> list[tuple[Change, str, tuple[Any, ...]]]:
        """The changes (with their statements) the i-th transaction makes besides its inserts."""
        planned: list[tuple[Change, str, tuple[Any, ...]]] = []
        if i % TRANSFER_EVERY == TRANSFER_EVERY - 1:
            a, b = self.rng.sample(sorted(self.balances), 2)
            amount = Decimal(self.rng.randint(1, 5000)) / 100
            for key, delta in ((a, -amount), (b, amount)):
                value = str((self.balances[key] + delta).quantize(Decimal("0.01")))
                statement = "UPDATE accounts SET balance = balance + %s WHERE id = %s"
                planned.append((Change("update", "accounts", key, value), statement, (delta, key)))
        movable = [k for k in self.recent if self.statuses.get(k, STATUSES[-1]) != STATUSES[-1]]
        advanced = None
        if i % ADVANCE_EVERY == ADVANCE_EVERY - 1 and movable:
            advanced = self.rng.choice(movable)
            status = STATUSES[STATUSES.index(self.statuses[advanced]) + 1]
            statement = "UPDATE orders SET status = %s WHERE id = %s"
            planned.append((Change("update", "orders", advanced, status), statement, (status, advanced)))
        deletable = [k for k in self.recent if k in self.statuses and k != advanced]
        if i % DELETE_EVERY == DELETE_EVERY - 1 and deletable:
            gone = self.rng.choice(deletable)
            planned.append(
                (Change("delete", "orders", gone, None), "DELETE FROM orders WHERE id = %s", (gone,))
            )
        return planned

    def committed(self, keys: list[int], changes: Sequence[Change]) -> None:
        for key in keys:
            self.statuses[key] = STATUSES[0]
        for change in changes:
            if change.table == "accounts":
                self.balances[change.key] = Decimal(str(change.value))
            elif change.value is None:
                self.statuses.pop(change.key, None)
            else:
                self.statuses[change.key] = change.value
        self.recent = [k for k in [*self.recent, *keys] if k in self.statuses][-self.RECENT :]


@dataclass
class GroundTruth:
    commits: list[Commit] = field(default_factory=list)
    rolled_back: set[int] = field(default_factory=set)
    # The rows the workload's updates start from (the accounts), when it makes changes besides inserts.
    opening: State = field(default_factory=dict)
    # The transaction whose COMMIT was in flight when the primary died: committed or not, nobody knows.
    in_flight: Commit | None = None

    @property
    def keys(self) -> set[int]:
        return {k for c in self.commits for k in c.keys}


def _state(orders: Sequence[Sequence[Any]], accounts: Sequence[Sequence[Any]]) -> State:
    state: State = {("orders", int(key)): str(status) for key, status in orders}
    state.update({("accounts", int(key)): str(balance) for key, balance in accounts})
    return state


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise DrledgerError(f"Timed out waiting for {what}.")


class FailoverRig:
    """PostgreSQL's failover rig; `MySQLFailoverRig` (drill/mysql/rig.py) is MySQL's, with the same face."""

    engine = "postgresql"
    demo_table = DEMO_TABLE
    #: The demo table's unique key besides the primary key, as replay names it in a conflict.
    reference_constraint = "orders_reference_key"

    def __init__(self, base: Path | None = None, lag_s: float = 2.0, ledger_url: str | None = None) -> None:
        self.clusters: Any = self._servers(base)
        self.lag_s = lag_s
        # Whatever a ledger keeps on local disk (an SQS index) goes in the rig's directory, so a drill
        # leaves none behind; without a URL, the ledger is an embedded file there.
        self.ledger_url = (
            with_local_files_in(ledger_url, self.clusters.base)
            if ledger_url
            else embedded_ledger_url(self.clusters.base)
        )
        self.primary: LocalCluster | None = None
        self.replica: LocalCluster | None = None
        self.old_primary: LocalCluster | None = None
        self.injector: LagInjector | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.relay_log = self.clusters.base / "relay.log"
        self.truth = GroundTruth()
        self.changes = False

    def _servers(self, base: Path | None) -> Any:
        return ClusterSet(base)

    @property
    def primary_dsn(self) -> str:
        assert self.primary is not None
        return self.primary.dsn

    @property
    def dr_dsn(self) -> str:
        assert self.replica is not None
        return self.replica.dsn

    def start(self, *, relay: bool = True, capture: bool = True, ops: Sequence[str] | None = None) -> None:
        """The primary with the demo tables, the lagging replica, and the relay; without `capture`,
        the outbox is left for the caller to install (as a role of its own, say). With `ops` holding
        an update or a delete, the workload makes those too (see `ChangeMaker`), captured with `ops`."""
        self.primary = self.clusters.primary("primary")
        self.changes = makes_changes(ops)
        with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
            conn.execute(DEMO_TABLE_DDL)
            conn.execute(WARMUP_TABLE_DDL)
            if self.changes:
                conn.execute(ORDER_STATUS_DDL)
                conn.execute(ACCOUNTS_DDL)
        if self.changes:
            self._open_accounts()
        if capture:
            tables = ["public.orders", "public.drill_warmup", *(["public.accounts"] if self.changes else [])]
            open_source(self.primary.dsn).install(tables, *([ops] if ops else []))
        # The base backup takes dozens of round trips; the lag starts once the replica streams.
        self.injector = LagInjector(self.primary.port, 0.0)
        self.injector.start()
        self.replica = self.clusters.replica(self.primary, "replica", source_port=self.injector.port)
        _wait(lambda: self._replica_streaming(), 60, "the replica to stream")
        self.injector.set_delay(self.lag_s)
        if relay:
            self.start_relay()

    def _open_accounts(self) -> None:
        """The accounts the transfers move money between, before capture: the replica starts with them."""
        with self._writer() as writer:
            for n in range(1, ACCOUNT_COUNT + 1):
                writer.execute("INSERT INTO accounts (id, balance) VALUES (%s, %s)", (n, OPENING_BALANCE))
            writer.commit()
        self.truth.opening = opening_state()

    @contextlib.contextmanager
    def _writer(self, dsn: str | None = None) -> Iterator[Writer]:
        with psycopg.connect(dsn or self.primary_dsn) as conn:
            yield PostgresWriter(conn)

    def state_in(self, dsn: str) -> State:
        """Every order's status and every account's balance in a database."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            orders = conn.execute("SELECT id, status FROM public.orders").fetchall()
            accounts = conn.execute("SELECT id, balance FROM public.accounts").fetchall()
        return _state(orders, accounts)

    def replica_replication(self) -> str | None:
        """How the replica replicates, as the drill reports it."""
        return "physical streaming"

    def _replica_streaming(self) -> bool:
        with psycopg.connect(self.dr_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        return bool(row and row[0] == "streaming")

    def start_relay(self, *extra: str, dsn: str | None = None, slot: str = DEFAULT_SLOT) -> None:
        target = dsn or self.primary_dsn
        self.relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drledger",
                "relay",
                "--db",
                target,
                "--ledger",
                self.ledger_url,
                "--slot",
                slot,
                "--state-dir",
                str(self.clusters.base / f"state-{slot}"),
                "--create",
                *extra,
            ],
            stdout=self.relay_log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        def active() -> bool:
            if self.relay is not None and self.relay.poll() is not None:
                raise DrledgerError(f"The relay exited at start: {self.relay_log.read_text()[-500:]}")
            return self._relay_streaming(target, slot)

        _wait(active, 120, "the relay to open its replication slot")

    def _relay_streaming(self, dsn: str, slot: str) -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
        return bool(row and row[0])

    @property
    def relay_stats_file(self) -> Path:
        return RelaySettings(
            slot=DEFAULT_SLOT, state_dir=self.clusters.base / f"state-{DEFAULT_SLOT}"
        ).stats_file

    def warm_up(self, rows: int = 20_000) -> None:
        """Push rows of a side table through the relay until it has them all.

        A relay that has run for days has its JVM's hot paths compiled; a freshly started one spends its
        first seconds compiling. Measuring lag on a cold one would report the JIT, not the relay.
        """
        self._write_warm_up_rows(rows)

        def relayed() -> bool:
            try:
                return int(json.loads(self.relay_stats_file.read_text())["events"]) >= rows
            except (OSError, ValueError, KeyError):
                return False

        _wait(relayed, 120, "the relay to warm up")

    def _write_warm_up_rows(self, rows: int) -> None:
        with psycopg.connect(self.primary_dsn, autocommit=True) as conn:
            for _ in range(rows // 500):
                conn.execute(
                    "INSERT INTO public.drill_warmup (note) SELECT 'warm-up' FROM generate_series(1, 500)"
                )

    def stop_command(self) -> str:
        """How to stop the servers a kept drill left running, and remove them."""
        base = self.clusters.base
        data_dir = self.replica.data_dir if self.replica is not None else base
        run_as = "runuser -u postgres -- " if os.geteuid() == 0 else ""
        return f"{run_as}{self.clusters.bin_dir}/pg_ctl -D {data_dir} stop && rm -rf {base}"

    def stop_relay(self, sig: int = signal.SIGTERM) -> None:
        if self.relay is not None:
            if self.relay.poll() is None:
                self.relay.send_signal(sig)
                if sig != signal.SIGKILL:
                    self.relay.send_signal(signal.SIGCONT)  # a paused relay cannot act on SIGTERM
            try:
                self.relay.wait(60)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait()
            self.relay = None

    def run_workload(
        self,
        tps: float,
        seconds: float,
        *,
        dsn: str | None = None,
        rollback_every: int = 0,
        multi_row_every: int = 4,
        on_tick: Callable[[float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GroundTruth:
        """Insert at `tps` transactions per second; every `multi_row_every`-th inserts three rows.

        With `rollback_every=n`, every n-th transaction is rolled back instead of committed: its keys
        are recorded as `rolled_back`, never as commits. Only what COMMIT acknowledged is ground truth,
        so when the primary dies mid-workload the transaction in flight simply ends the run.
        """
        truth = GroundTruth(opening=self.truth.opening)
        try:
            self._write_loop(truth, tps, seconds, dsn, rollback_every, multi_row_every, on_tick, stop)
        except Exception:  # the primary died under the writer: the end of the run, if it was meant to
            if stop is None or not stop.is_set():
                raise
        self.truth.commits.extend(truth.commits)
        self.truth.rolled_back.update(truth.rolled_back)
        self.truth.in_flight = truth.in_flight
        return truth

    def _write_loop(
        self,
        truth: GroundTruth,
        tps: float,
        seconds: float,
        dsn: str | None,
        rollback_every: int,
        multi_row_every: int,
        on_tick: Callable[[float], None] | None,
        stop: threading.Event | None,
    ) -> None:
        changes = ChangeMaker(self.truth.opening) if self.changes else None
        if changes is not None:
            for commit in self.truth.commits:  # a second run of the workload goes on from the first's state
                changes.committed(commit.keys, commit.changes)
        with self._writer(dsn) as writer:
            started = time.monotonic()
            for i in range(int(tps * seconds)):
                if stop is not None and stop.is_set():
                    return
                pause = started + i / tps - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                rows = 3 if multi_row_every and i % multi_row_every == multi_row_every - 1 else 1
                doomed = rollback_every > 0 and i % rollback_every == rollback_every - 1
                keys = writer.insert_orders("rolled-back-" if doomed else "customer-", rows)
                planned = changes.plan(i) if changes is not None and not doomed else []
                for _, statement, params in planned:
                    writer.execute(statement, params)
                if doomed:
                    writer.rollback()
                    truth.rolled_back.update(keys)
                    continue
                made = [change for change, _, _ in planned]
                truth.in_flight = Commit(keys, 0, made)
                writer.commit()
                truth.in_flight = None
                truth.commits.append(Commit(keys, time.time_ns() // 1_000_000, made))
                if changes is not None:
                    changes.committed(keys, made)
                if on_tick is not None and i % 50 == 0:
                    on_tick(min(1.0, (time.monotonic() - started) / seconds))

    def pause_relay(self) -> None:
        """The relay falls behind: SIGSTOP, as a stalled process or a saturated link would."""
        if self.relay is not None:
            self.relay.send_signal(signal.SIGSTOP)

    def disaster(self, *, kill_relay: bool = True) -> int:
        """The region dies: in-flight WAL is dropped, the primary (and its relay) SIGKILLed."""
        assert self.injector is not None and self.primary is not None
        dropped = self.injector.drop()
        self.primary.kill()
        if kill_relay:
            self.stop_relay(signal.SIGKILL)
        return dropped

    def failover(self) -> None:
        assert self.replica is not None
        self.replica.promote()
        _wait(lambda: self._promoted(), 60, "the replica to be promoted")

    def old_region_returns(self) -> str:
        """The failed region is back: the killed primary's data directory starts again, isolated (a port
        of its own, no application, not a replica of the new primary, so nothing rewinds it) and
        read-only. Crash recovery replays its WAL: it holds every commit it acknowledged. Its DSN."""
        assert self.primary is not None and self.primary.pid is None, "the primary is still running"
        old = LocalCluster(self.primary.data_dir, free_port(), self.clusters.bin_dir, "old-primary")
        old.configure({"default_transaction_read_only": "on"})
        self.clusters.clusters.append(old)
        old.start()
        self.old_primary = old
        return old.dsn

    def _promoted(self) -> bool:
        with psycopg.connect(self.dr_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row is not None and not row[0])

    def keys_in_ledger(self) -> set[int]:
        """Keys of the demo table's rows whose insert the ledger holds (the warm-up table's not counted)."""
        with open_ledger(self.ledger_url) as ledger:
            return {
                int(r.key)
                for r in ledger.read()
                if isinstance(r, LedgerEvent) and r.table == self.demo_table and r.op == "insert"
            }

    def replication_lag_sample(self) -> float | None:
        """How far the replica's replay trails the primary's commits, in seconds, if it can tell."""
        try:
            with psycopg.connect(self.dr_dsn, autocommit=True, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                ).fetchone()
        except psycopg.Error:
            return None
        return float(row[0]) if row and row[0] is not None else None

    def ledger_row(self, key: int) -> dict[str, Any]:
        """The demo table's row under `key` as the ledger holds it (its newest image)."""
        with open_ledger(self.ledger_url) as ledger:
            rows = [
                r.row_json
                for r in ledger.read()
                if isinstance(r, LedgerEvent)
                and r.table == self.demo_table
                and int(r.key) == key
                and r.op != "delete"
            ]
        if not rows:
            raise DrledgerError(f"The ledger holds no row of {self.demo_table} under key {key}.")
        return dict(json.loads(rows[-1]))

    def dr_takes_reference_of(self, key: int) -> tuple[int, str]:
        """The DR application, after promotion, places an order under the reference the lost order `key`
        holds in the ledger: the key of the DR's own row, and the reference."""
        reference = str(self.ledger_row(key)["reference"])
        return self._insert_on_dr(reference), reference

    def _insert_on_dr(self, reference: str) -> int:
        with psycopg.connect(self.dr_dsn, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO public.orders (customer, amount, reference) VALUES ('dr-application', 1, %s) "
                "RETURNING id",
                (reference,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def plain_load_seconds(self, events: Sequence[LedgerEvent], chunk_events: int) -> float:
        """Seconds a plain load of the same row images and their outbox rows takes in the promoted
        database, in replay's chunks, one durable commit each: replay's limit, measured in the same place
        on the same data. Into scratch copies of the tables (schema drill_plain, dropped afterwards); an
        update's after image and a delete's image load as rows too, so it is the same amount of writing."""
        tables = sorted({e.table for e in events})
        scratch = {table: sql.Identifier("drill_plain", f"t{n}") for n, table in enumerate(tables)}
        with psycopg.connect(self.dr_dsn) as conn:
            conn.execute("DROP SCHEMA IF EXISTS drill_plain CASCADE")
            conn.execute("CREATE SCHEMA drill_plain")
            for table, name in scratch.items():
                schema, _, relation = table.partition(".")
                # Without its constraints: the same rows may load twice (a row's insert, then its update).
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {})").format(name, sql.Identifier(schema, relation))
                )
            conn.execute("CREATE TABLE drill_plain.outbox (LIKE drledger.outbox)")
            conn.commit()
            started = time.perf_counter()
            for start in range(0, len(events), chunk_events):
                chunk = events[start : start + chunk_events]
                for table, name in scratch.items():
                    rows = [e.row_json for e in chunk if e.table == table]
                    if rows:
                        conn.execute(
                            sql.SQL(
                                "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, %s::jsonb)"
                            ).format(name),
                            ("[" + ",".join(rows) + "]",),
                        )
                with conn.cursor().copy(
                    "COPY drill_plain.outbox (id, aggregatetype, aggregateid, type, payload, before_image, txid, "
                    "created_at, fingerprint) FROM STDIN"
                ) as copy:
                    for e in chunk:
                        at = datetime.datetime.fromtimestamp(e.commit_ts_ms / 1000, datetime.UTC)
                        copy.write_row(
                            (
                                e.event_id,
                                e.table,
                                e.key,
                                e.op,
                                e.row_json,
                                e.before_json,
                                e.txid,
                                at,
                                e.fingerprint,
                            )
                        )
                conn.commit()
            seconds = time.perf_counter() - started
            conn.execute("DROP SCHEMA drill_plain CASCADE")
            conn.commit()
        return seconds

    def keys_in(self, dsn: str) -> set[int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT id FROM public.orders").fetchall()}

    def close(self) -> None:
        self.stop_relay(signal.SIGKILL)
        if self.injector is not None:
            self.injector.stop()
        self.clusters.close()

    def __enter__(self) -> FailoverRig:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
