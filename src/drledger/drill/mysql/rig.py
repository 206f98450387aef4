"""The failover rig on MySQL: a MariaDB primary, a replica behind the lag injector, the relay.

The same face as PostgreSQL's rig (rig.py), so the drill and its scenarios run on either. The replica
asks for MariaDB's GTID replication (`MASTER_USE_GTID=slave_pos`) but, its primary reporting
`version=8.0.2`, replicates by binlog file and position; the drill reports which (`replica_replication`).
Its IO thread connects through the lag
injector with no delay first (it makes a dozen round trips at connect), and the delay is set once it
replicates. Promotion is what Aurora's failover amounts to: replication stopped and forgotten, and
the replica writable. `Seconds_Behind_Master` is not trusted for lag (it reads 0 while hundreds of
rows behind): the lag sample is the age of the newest replicated row.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from drledger.drill.changes import State
from drledger.drill.lag import LagInjector
from drledger.drill.mysql.server import LocalMariaDB, MariaDBSet
from drledger.drill.postgres.cluster import free_port
from drledger.drill.postgres.rig import (
    FailoverRig,
    TransactionalWriter,
    Writer,
    _state,
    _wait,
    makes_changes,
)
from drledger.events import LedgerEvent
from drledger.source import open_source

DATABASE = "drill"
DEMO_TABLE_DDL = (
    "CREATE TABLE drill.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(100) NOT NULL, "
    "amount DECIMAL(12,2) NOT NULL, placed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
    "reference VARCHAR(64) NULL, CONSTRAINT reference UNIQUE (reference))"
)
WARMUP_TABLE_DDL = (
    "CREATE TABLE drill.drill_warmup (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT NOT NULL)"
)


ORDER_STATUS_DDL = "ALTER TABLE drill.orders ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'placed'"
ACCOUNTS_DDL = "CREATE TABLE drill.accounts (id INT PRIMARY KEY, balance DECIMAL(12,2) NOT NULL)"


class MySQLWriter(TransactionalWriter):
    def __init__(self, conn: Any, cursor: Any) -> None:
        self.conn = conn
        self.cursor = cursor

    def insert_orders(self, customer: str, rows: int) -> list[int]:
        values = ", ".join(
            f"('{customer}{g}', {g * 7.25:.2f}, CONCAT('ord-', UUID()))" for g in range(1, rows + 1)
        )
        self.cursor.execute(f"INSERT INTO orders (customer, amount, reference) VALUES {values}")
        # A multi-row insert takes consecutive keys (innodb_autoinc_lock_mode 1 or 2 alike for a lone
        # writer), the first of them LAST_INSERT_ID().
        first = int(self.cursor.lastrowid)
        return list(range(first, first + rows))

    def execute(self, statement: str, params: tuple[Any, ...]) -> None:
        self.cursor.execute(statement, params)


class MySQLFailoverRig(FailoverRig):
    engine = "mysql"
    demo_table = "drill.orders"
    reference_constraint = "reference"

    def old_region_returns(self) -> str:
        """The killed primary's data directory starts again on a port of its own, read-only, replicating
        from nothing: InnoDB's crash recovery gives back every commit it acknowledged. Its DSN."""
        primary = self.primary
        assert isinstance(primary, LocalMariaDB) and primary.process is None, "the primary is still running"
        old = LocalMariaDB(primary.base, primary.name, free_port(), primary.server_id)
        old.write_config({"read-only": "ON", "skip-slave-start": "ON"})
        self.clusters.servers.append(old)
        old.start()
        self.old_primary = old
        return old.dsn(DATABASE)

    def _servers(self, base: Path | None) -> Any:
        return MariaDBSet(base)

    @property
    def primary_dsn(self) -> str:
        assert isinstance(self.primary, LocalMariaDB)
        return self.primary.dsn(DATABASE)

    @property
    def dr_dsn(self) -> str:
        assert isinstance(self.replica, LocalMariaDB)
        return self.replica.dsn(DATABASE)

    def start(self, *, relay: bool = True, capture: bool = True, ops: Sequence[str] | None = None) -> None:
        primary: LocalMariaDB = self.clusters.server("primary")
        self.primary = primary  # type: ignore[assignment]
        self.changes = makes_changes(ops)
        primary.execute(f"CREATE DATABASE {DATABASE}")
        primary.execute(DEMO_TABLE_DDL)
        primary.execute(WARMUP_TABLE_DDL)
        if self.changes:
            primary.execute(ORDER_STATUS_DDL)
            primary.execute(ACCOUNTS_DDL)
            self._open_accounts()
        if capture:
            tables = [self.demo_table, "drill.drill_warmup", *(["drill.accounts"] if self.changes else [])]
            open_source(self.primary_dsn).install(tables, *([ops] if ops else []))
        self.injector = LagInjector(primary.port, 0.0)
        self.injector.start()
        replica: LocalMariaDB = self.clusters.server("replica", {"read-only": "ON"})
        self.replica = replica  # type: ignore[assignment]
        # The replica reads the binlog as an account of its own: the watcher tells the relay alive by
        # its account's binlog dump threads, and the relay here runs as root.
        primary.execute("CREATE USER IF NOT EXISTS 'drill_replica'@'%'")
        primary.execute("GRANT REPLICATION SLAVE ON *.* TO 'drill_replica'@'%'")
        replica.replicate_from(self.injector.port, user="drill_replica")
        _wait(lambda: self._caught_up(primary, replica), 120, "the replica to replicate")
        self.injector.set_delay(self.lag_s)
        if relay:
            self.start_relay()

    @staticmethod
    def _caught_up(primary: LocalMariaDB, replica: LocalMariaDB) -> bool:
        """The replica replicates and has every table the primary has (and drledger's)."""
        try:
            if not replica.replicating():
                return False
            wanted = {r[0] for r in primary.execute("SHOW TABLES FROM drill")}
            return wanted <= {r[0] for r in replica.execute("SHOW TABLES FROM drill")}
        except Exception:  # the database is not there yet
            return False

    def _relay_streaming(self, dsn: str, slot: str) -> bool:
        # Streaming once its heartbeat (a query the connector runs only while streaming) has written.
        assert isinstance(self.primary, LocalMariaDB)
        return self.primary.execute("SELECT COUNT(*) FROM drledger.heartbeat") == [(1,)]

    def _connect(self, dsn: str | None = None, **kwargs: Any) -> Any:
        server = self.primary if dsn is None or dsn == self.primary_dsn else self.replica
        assert isinstance(server, LocalMariaDB)
        conn = server.connect(DATABASE, **kwargs)
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
        return conn

    def _write_warm_up_rows(self, rows: int) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                for _ in range(rows // 500):
                    cursor.execute(
                        "INSERT INTO drill_warmup (note) VALUES " + ", ".join(["('warm-up')"] * 500)
                    )
        finally:
            conn.close()

    @contextlib.contextmanager
    def _writer(self, dsn: str | None = None) -> Iterator[Writer]:
        conn = self._connect(dsn, autocommit=False)
        try:
            with conn.cursor() as cursor:
                yield MySQLWriter(conn, cursor)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def state_in(self, dsn: str) -> State:
        conn = self._connect(dsn)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT id, status FROM orders")
                orders = cursor.fetchall()
                cursor.execute("SELECT id, balance FROM accounts")
                accounts = cursor.fetchall()
        finally:
            conn.close()
        return _state(orders, accounts)

    def replica_replication(self) -> str | None:
        """How the replica replicates, from its SHOW SLAVE STATUS: GTID or binlog file and position."""
        assert isinstance(self.replica, LocalMariaDB)
        using = self.replica.replica_status().get("Using_Gtid")
        if using is None:
            return None
        if str(using).lower() == "no":
            return "binlog file and position (Using_Gtid=No)"
        return f"GTID (Using_Gtid={using})"

    def failover(self) -> None:
        assert isinstance(self.replica, LocalMariaDB)
        self.replica.promote()
        replica = self.replica
        _wait(lambda: replica.execute("SELECT @@read_only") == [(0,)], 60, "the replica to be promoted")

    def replication_lag_sample(self) -> float | None:
        with contextlib.suppress(Exception):
            conn = self._connect(self.dr_dsn, connect_timeout=3)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(
                        "SELECT TIMESTAMPDIFF(MICROSECOND, MAX(placed_at), UTC_TIMESTAMP(6)) / 1e6 FROM orders"
                    )
                    row = cursor.fetchone()
            finally:
                conn.close()
            return float(row[0]) if row and row[0] is not None else None
        return None

    def _insert_on_dr(self, reference: str) -> int:
        conn = self._connect(self.dr_dsn)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO orders (customer, amount, reference) VALUES ('dr-application', 1, %s)",
                    (reference,),
                )
                return int(cursor.lastrowid)
        finally:
            conn.close()

    def keys_in(self, dsn: str) -> set[int]:
        conn = self._connect(dsn)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT id FROM orders")
                return {int(r[0]) for r in cursor.fetchall()}
        finally:
            conn.close()

    def plain_load_seconds(self, events: Sequence[LedgerEvent], chunk_events: int) -> float:
        """As PostgreSQL's rig: multi-row INSERTs of the same row images and outbox rows into scratch
        copies of the tables (database drill_plain, dropped afterwards), in replay's chunks, one durable
        commit each."""
        tables = sorted({e.table for e in events})
        scratch = {table: f"drill_plain.t{n}" for n, table in enumerate(tables)}
        conn = self._connect(self.dr_dsn, autocommit=False)
        try:
            with conn.cursor() as cursor:
                cursor.execute("DROP DATABASE IF EXISTS drill_plain")
                cursor.execute("CREATE DATABASE drill_plain")
                for table, name in scratch.items():
                    schema, _, relation = table.partition(".")
                    cursor.execute(
                        f"CREATE TABLE {name} AS SELECT * FROM `{schema}`.`{relation}` WHERE FALSE"
                    )
                cursor.execute("CREATE TABLE drill_plain.outbox LIKE drledger.outbox")
                conn.commit()
                started = time.perf_counter()
                for start in range(0, len(events), chunk_events):
                    chunk = events[start : start + chunk_events]
                    for table, name in scratch.items():
                        rows = [json.loads(e.row_json) for e in chunk if e.table == table]
                        if rows:
                            columns = list(rows[0])
                            cursor.executemany(
                                f"INSERT INTO {name} ({', '.join(f'`{c}`' for c in columns)}) VALUES "
                                f"({', '.join(['%s'] * len(columns))})",
                                [tuple(_plain(row.get(c)) for c in columns) for row in rows],
                            )
                    cursor.executemany(
                        "INSERT INTO drill_plain.outbox (id, aggregatetype, aggregateid, type, payload, before_image, "
                        "txid, created_at, fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s, "
                        "TIMESTAMPADD(MICROSECOND, %s, '1970-01-01 00:00:00'), %s)",
                        [
                            (
                                e.event_id,
                                e.table,
                                e.key,
                                e.op,
                                e.row_json,
                                e.before_json,
                                e.txid,
                                e.commit_ts_ms * 1000,
                                e.fingerprint,
                            )
                            for e in chunk
                        ],
                    )
                    conn.commit()
                seconds = time.perf_counter() - started
                cursor.execute("DROP DATABASE drill_plain")
            return seconds
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def stop_command(self) -> str:
        pids = " ".join(
            str(server.process.pid) for server in self.clusters.servers if server.process is not None
        )
        return f"kill {pids} && rm -rf {self.clusters.base}"


def _plain(value: Any) -> Any:
    """A JSON image's value as a plain INSERT takes it (a nested document as its text)."""
    return json.dumps(value) if isinstance(value, dict | list) else value
