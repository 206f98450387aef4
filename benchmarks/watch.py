"""What `drledger watch` costs the primary (issue #14).

1. Insert TPS with `drledger watch` running at its default interval, divided by insert TPS without
   it: the same primary, hot standby, relay and ledger, alternating runs (A B A B …) so drift in this
   shared machine's load falls on both sides; one long-running watcher, paused (SIGSTOP) for the runs
   without it. Target ≥ 0.98. Beside the median ratio: the ratio of the summed rates, and the share
   of the machine's CPU the watcher took while it ran (its process and the server backends of its
   connections, from /proc), the cost the ratio measures without this machine's round-to-round noise.
2. One watch cycle on a 10,000,000-row outbox (rows spread over the last 7 days, the newest 15 minutes
   also in an embedded ledger): the first cycle (which checks the 10-minute lookback) and the median of
   the next ones; and the outbox's sequential scans during all of them (PostgreSQL's own counter),
   which must stay 0. Target < 50 ms. The primary stands in for its replica here: the replica's reads
   are the same index reads, and a base backup of 10 M rows would only make the run slower.

Everything is real: throw-away PostgreSQL clusters, `drledger relay` and `drledger watch` as child
processes, the embedded SQLite ledger.

    .venv/bin/python benchmarks/watch.py [--seconds 15] [--rounds 3] [--rows 10000000] [--only tps|cycle]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

from drledger.drill.postgres.cluster import ClusterSet, LocalCluster, free_port
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.source import open_source
from drledger.watch.cycle import Watcher, WatchSettings

DRLEDGER = [sys.executable, "-m", "drledger"]
WRITERS = 2


def insert_tps(dsn: str, seconds: float) -> float:
    """Single-row insert transactions from WRITERS connections as fast as they go."""
    counts = [0] * WRITERS
    stop = threading.Event()

    def write(slot: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO orders (customer, amount) VALUES ('bench', 1)")
                counts[slot] += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def tps_ratio(seconds: float, rounds: int) -> dict[str, object]:
    with ClusterSet() as clusters, tempfile.TemporaryDirectory(prefix="drledger-bench-") as work:
        primary = clusters.primary("primary")
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text, amount numeric(12,2))"
            )
        open_source(primary.dsn).install(["public.orders"])
        standby = clusters.replica(primary, "standby")
        url = f"sqlite:///{work}/ledger.db"
        relay = subprocess.Popen(
            [*DRLEDGER, "relay", "--db", primary.dsn, "--ledger", url, "--state-dir", f"{work}/state"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _slot_active(primary), 120, "the relay")
            insert_tps(primary.dsn, 5)  # warm-up: caches, the relay's JIT
            without, with_watch = [], []
            # One watcher for the whole run, as in production: its start (imports, the first cycles'
            # check of the 10-minute lookback) is not what it costs the primary. Stopped (SIGSTOP) for the
            # rounds without it; on resuming it first catches up on what it missed, which it costs too.
            watch = subprocess.Popen(
                [
                    *DRLEDGER,
                    "watch",
                    "--db",
                    f"{primary.dsn}?application_name={WATCH_APP}",
                    "--replica",
                    f"{standby.dsn}?application_name={WATCH_APP}",
                    "--ledger",
                    url,
                    "--listen",
                    f"127.0.0.1:{free_port()}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            cpu_s = 0.0
            try:
                time.sleep(10)
                for _ in range(rounds):
                    watch.send_signal(signal.SIGSTOP)
                    without.append(insert_tps(primary.dsn, seconds))
                    watch.send_signal(signal.SIGCONT)
                    before = watch_cpu_s(watch.pid, primary, standby)
                    with_watch.append(insert_tps(primary.dsn, seconds))
                    cpu_s += watch_cpu_s(watch.pid, primary, standby) - before
            finally:
                watch.send_signal(signal.SIGCONT)
                watch.send_signal(signal.SIGTERM)
                watch.wait(30)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
    ratio = statistics.median(w / o for w, o in zip(with_watch, without, strict=True))
    return {
        "tps_without_watch": [round(x) for x in without],
        "tps_with_watch": [round(x) for x in with_watch],
        "ratio_median": round(ratio, 3),
        "ratio_of_sums": round(sum(with_watch) / sum(without), 3),
        # What the watcher took while it ran: its own process and the server processes serving its
        # reads, as a share of the machine's cores — the cost the ratio measures, without its noise.
        "watch_cpu_share_of_machine": round(cpu_s / (rounds * seconds) / (os.cpu_count() or 1), 4),
    }


WATCH_APP = "drledger-watch-bench"


def watch_cpu_s(pid: int, *clusters: LocalCluster) -> float:
    """CPU seconds used so far by the watcher process and by the server backends of its connections."""
    pids = [pid]
    for cluster in clusters:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            pids += [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (WATCH_APP,)
                )
            ]
    return sum(_cpu_s(p) for p in pids)


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _slot_active(primary: LocalCluster) -> bool:
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots").fetchone()
    return bool(row and row[0])


def cycle_on_big_outbox(rows: int, cycles: int) -> dict[str, object]:
    with ClusterSet() as clusters, tempfile.TemporaryDirectory(prefix="drledger-bench-") as work:
        primary = clusters.primary("primary")
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text, amount numeric(12,2))"
            )
        open_source(primary.dsn).install(["public.orders"])
        began = time.monotonic()
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            # Spread over the last 7 days, oldest first; one insert per million rows.
            span_s = 7 * 86400
            for start in range(0, rows, 1_000_000):
                conn.execute(
                    "INSERT INTO drledger.outbox (aggregatetype, aggregateid, payload, created_at) "
                    "SELECT 'public.orders', g::text, jsonb_build_object('id', g), "
                    "now() - make_interval(secs => %s * (1 - g::float8 / %s)) "
                    "FROM generate_series(%s, %s) g",
                    (span_s, rows, start + 1, min(rows, start + 1_000_000)),
                )
            conn.execute("VACUUM ANALYZE drledger.outbox")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('drledger.outbox'))"
            ).fetchone()[0]  # type: ignore[index]
            recent = conn.execute(
                "SELECT id::text, aggregateid, payload::text, txid, (extract(epoch FROM created_at) * 1000)::bigint "
                "FROM drledger.outbox WHERE created_at > now() - interval '15 minutes'"
            ).fetchall()
        load_s = time.monotonic() - began
        url = f"sqlite:///{work}/ledger.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(
                [
                    LedgerEvent.from_outbox(
                        event_id=r[0],
                        table="public.orders",
                        key=r[1],
                        op="insert",
                        row_json=r[2],
                        txid=int(r[3]),
                        lsn=1,
                        commit_ts_ms=int(r[4]),
                    )
                    for r in recent
                ]
            )
        scans_before = _seq_scans(primary)
        watcher = Watcher(WatchSettings(primary.dsn, url, primary.dsn))
        try:
            first = watcher.cycle()
            later = [watcher.cycle() for _ in range(cycles)]
        finally:
            watcher.close()
        scans = _seq_scans(primary) - scans_before
        assert first.primary.up and first.ledger.up and first.missing_in_ledger == 0, first
    times = sorted(s.cycle_seconds * 1000 for s in later)
    return {
        "outbox_rows": rows,
        "outbox_size": size,
        "ledger_events": len(recent),
        "load_seconds": round(load_s, 1),
        "first_cycle_ms": round(first.cycle_seconds * 1000, 1),
        "cycle_ms_median": round(statistics.median(times), 1),
        "cycle_ms_max": round(times[-1], 1),
        "cycles": cycles,
        "outbox_seq_scans": scans,
    }


def _seq_scans(primary: LocalCluster) -> int:
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = 'drledger' AND relname = 'outbox'"
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--only", choices=("tps", "cycle"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    if args.only in (None, "tps"):
        figures["tps"] = tps_ratio(args.seconds, args.rounds)
        if not args.json:
            print("insert TPS with / without drledger watch:", json.dumps(figures["tps"]), flush=True)
    if args.only in (None, "cycle"):
        figures["cycle"] = cycle_on_big_outbox(args.rows, args.cycles)
        if not args.json:
            print("one watch cycle on a large outbox:", json.dumps(figures["cycle"]), flush=True)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
