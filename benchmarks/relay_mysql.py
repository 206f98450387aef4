"""Relay figures on MySQL (MariaDB with version=8.0.2, the code path of Aurora MySQL 3), in one run.

1. sustained relay throughput: rows inserted as fast as one client can (500 a transaction), events/s
   from the first commit to the last event in the embedded ledger, the relay's JVM warmed up first;
2. commit → ledger lag p50/p99 at a steady rate (default 100 TPS), from the relay's own histogram
   (ledger acknowledgement minus the row's commit time, which on MySQL is the later of the binlog's
   whole-second timestamp and the outbox row's microsecond created_at);
3. single-row insert TPS with and without the capture trigger, same server, as a ratio.

    .venv/bin/python benchmarks/relay_mysql.py [--rows 100000] [--tps 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drledger.drill.mysql.server import LocalMariaDB, MariaDBSet
from drledger.relay.engine import lag_percentile, read_stats
from drledger.source import open_source

TABLE = (
    "CREATE TABLE bench.{name} (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(100) NOT NULL, "
    "amount DECIMAL(12,2) NOT NULL, placed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
)


def ledger_count(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM ledger_events").fetchone()[0])
    except sqlite3.Error:
        return 0


def insert_batches(server: LocalMariaDB, table: str, rows: int, per_tx: int = 500) -> float:
    conn = server.connect("bench", autocommit=False)
    started = time.monotonic()
    try:
        with conn.cursor() as cursor:
            for start in range(0, rows, per_tx):
                values = ", ".join(
                    f"('c{i}', {i % 1000 * 7.25:.2f})" for i in range(start, min(rows, start + per_tx))
                )
                cursor.execute(f"INSERT INTO {table} (customer, amount) VALUES {values}")
                conn.commit()
    finally:
        conn.close()
    return time.monotonic() - started


def single_row_tps(server: LocalMariaDB, table: str, seconds: float) -> float:
    conn = server.connect("bench", autocommit=True)
    done = 0
    deadline = time.monotonic() + seconds
    try:
        with conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(f"INSERT INTO {table} (customer, amount) VALUES ('c', 1.25)")
                done += 1
    finally:
        conn.close()
    return done / seconds


def wait_for_ledger(path: Path, count: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while ledger_count(path) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the ledger holds {ledger_count(path)} of {count} events after {timeout} s")
        time.sleep(0.01)
    return time.monotonic()


def steady(server: LocalMariaDB, table: str, tps: int, seconds: float) -> None:
    conn = server.connect("bench", autocommit=True)
    try:
        with conn.cursor() as cursor:
            started = time.monotonic()
            for i in range(int(tps * seconds)):
                pause = started + i / tps - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                cursor.execute(f"INSERT INTO {table} (customer, amount) VALUES ('steady', 2.50)")
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tps", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with MariaDBSet() as servers, tempfile.TemporaryDirectory(prefix="drledger-bench-") as scratch:
        server = servers.server("primary")
        server.execute("CREATE DATABASE bench")
        for name in ("orders", "plain", "warm"):
            server.execute(TABLE.format(name=name))
        dsn = server.dsn("bench")
        open_source(dsn).install(["bench.orders", "bench.warm"])

        plain = single_row_tps(server, "plain", args.seconds / 2)
        captured = single_row_tps(server, "orders", args.seconds / 2)
        results["trigger_cost"] = {
            "insert_tps_without_trigger": round(plain),
            "insert_tps_with_trigger": round(captured),
            "ratio": round(captured / plain, 3),
        }
        print(
            f"trigger cost: {captured:,.0f} / {plain:,.0f} single-row inserts/s = {captured / plain:.3f}",
            flush=True,
        )

        ledger = Path(scratch) / "ledger.db"
        state = Path(scratch) / "state"
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drledger",
                "relay",
                "--db",
                dsn,
                "--ledger",
                f"sqlite://{ledger}",
                "--state-dir",
                str(state),
                "--snapshot",
                "no_data",
            ],
            stdout=(Path(scratch) / "relay.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            while server.execute("SELECT COUNT(*) FROM drledger.heartbeat") != [(1,)]:
                if relay.poll() is not None:
                    raise SystemExit((Path(scratch) / "relay.log").read_text()[-2000:])
                time.sleep(0.2)
            base = ledger_count(ledger)
            insert_batches(server, "warm", 20_000)  # the JVM's hot paths compiled before measuring
            wait_for_ledger(ledger, base + 20_000)

            base = ledger_count(ledger)
            started = time.monotonic()
            writing = insert_batches(server, "orders", args.rows)
            finished = wait_for_ledger(ledger, base + args.rows)
            elapsed = finished - started
            results["throughput"] = {
                "rows": args.rows,
                "insert_seconds": round(writing, 2),
                "relay_seconds": round(elapsed, 2),
                "events_per_s": round(args.rows / elapsed),
            }
            print(
                f"throughput: {args.rows:,} events in {elapsed:.2f} s = {args.rows / elapsed:,.0f}/s "
                f"(inserting took {writing:.2f} s)",
                flush=True,
            )

            before = read_stats(state / "drledger_slot.stats.json")
            steady(server, "orders", args.tps, args.seconds)
            time.sleep(2)
            after = read_stats(state / "drledger_slot.stats.json")
            histogram = {lag: after.get(lag, 0) - before.get(lag, 0) for lag in after}
            histogram = {lag: n for lag, n in histogram.items() if n > 0}
            results["lag_ms"] = {
                "p50": lag_percentile(histogram, 50),
                "p99": lag_percentile(histogram, 99),
                "events": sum(histogram.values()),
            }
            print(
                f"lag at {args.tps} TPS: p50 {results['lag_ms']['p50']} ms, p99 {results['lag_ms']['p99']} ms",
                flush=True,
            )
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
