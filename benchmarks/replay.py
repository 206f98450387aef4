"""Replay throughput: 100,000 missing events in 10,000 source transactions → rows/s.

Reconcile's split-brain lookup (which lost events' keys the DR database holds with other content) is
timed over the same events in the first database: before replay (every key free), and after it with
1% of the rows changed (every key held, 1% taken by other content), beside that run's replay time.

Replay reads back every row it writes (and every row it finds already replayed); what that costs is
measured in the same run against a variant without it: the same replay with the INSERT returning only
the keys it wrote and "already replayed" trusting the outbox's record, as replay did before the
read-back (a benchmark-only patch; replay has no option to skip it).

Its limit, measured in the same run: a plain load of the same rows and their outbox rows (COPY, in the
same chunks, one commit each, capture triggers disabled, the rows already converted to tuples), beside
which replay's rate is a ratio (issue 23's target: replay at least half the plain load's rate).

A throw-away PostgreSQL cluster (fsync off, as the drill's) stands in for the promoted DR database.
The same events are replayed into fresh databases with different chunk sizes (how many source
transactions commit together), so the cost of per-transaction commits shows in the same run. The
default chunk (5,000 events) is replayed `--repeat` times, each into a fresh database, and the median
is its figure: on a shared two-core machine one run varies by a third.

    .venv/bin/python benchmarks/replay.py [--events 100000] [--transactions 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from unittest import mock

import psycopg
from psycopg import sql

from drledger.collisions import key_collisions
from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from drledger.drill.postgres.rig import DEMO_TABLE_DDL
from drledger.events import LedgerEvent
from drledger.replay import plan_replay, replay
from drledger.source import open_source
from drledger.source.base import CurrentRow, TableShape
from drledger.source.postgres.outbox import ident, install, key_expression
from drledger.source.postgres.session import PostgresRecoverySession, _json_array, _timestamp


def lost_events(count: int, transactions: int) -> list[LedgerEvent]:
    per_tx = count // transactions
    start_ms = 1_800_000_000_000
    events = []
    for i in range(count):
        tx = i // per_tx
        row = (
            f'{{"id": {i + 1}, "amount": {(i % 1000) * 7.25:.2f}, "customer": "customer-{i}", '
            f'"placed_at": "2027-01-15T08:00:00.{(i % 1000) * 1000 + 1:06d}+00:00", "reference": null}}'
        )
        events.append(
            LedgerEvent.from_outbox(
                event_id=str(uuid.UUID(int=i + 1)),
                table="public.orders",
                key=str(i + 1),
                op="insert",
                row_json=row,
                txid=100_000 + tx,
                lsn=1_000_000 + i,
                commit_ts_ms=start_ms + tx,
            )
        )
    return events


def cpu_seconds(server_pid: int) -> float:
    """CPU seconds used so far by this process and by the database server (its postmaster, the
    backends it has reaped and those alive): on a shared machine, steadier than the wall clock."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int, reaped: bool) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return sum(int(f) for f in fields[11 : 15 if reaped else 13])

    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(entry) == server_pid
    ]
    server = used(server_pid, True) + sum(used(pid, False) for pid in children)
    return time.process_time() + server / tick


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def without_read_back() -> Iterator[None]:
    """Replay as it was before it read back: keys from the INSERT, and the outbox's record trusted."""

    def insert_if_absent(
        self: PostgresRecoverySession,
        shape: TableShape,
        columns: Sequence[str],
        events: Sequence[LedgerEvent],
    ) -> dict[str, bool]:
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        statement = sql.SQL(
            "INSERT INTO {table} AS n ({columns}) OVERRIDING SYSTEM VALUE "
            "SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) "
            "ON CONFLICT DO NOTHING RETURNING {key}"
        ).format(table=ident(shape.name), columns=names, key=key_expression(list(shape.key_columns)))
        rows = self.conn.execute(statement, (_json_array(e.row_json for e in events),)).fetchall()
        return {r[0]: True for r in rows}

    def current_rows(
        self: PostgresRecoverySession, shape: TableShape, events: Sequence[LedgerEvent]
    ) -> dict[str, CurrentRow]:
        return {e.event_id: CurrentRow("") for e in events}

    with (
        mock.patch.object(PostgresRecoverySession, "insert_if_absent", insert_if_absent),
        mock.patch.object(PostgresRecoverySession, "current_rows", current_rows),
    ):
        yield


def lost_updates(inserted: list[LedgerEvent], transactions: int) -> list[LedgerEvent]:
    """One update of every inserted row (its amount changed), in `transactions` source transactions
    after the inserts: what replay applies onto rows that hold their before image."""
    per_tx = len(inserted) // transactions
    start_ms = inserted[-1].commit_ts_ms + 1_000
    events = []
    for i, before in enumerate(inserted):
        tx = i // per_tx
        row = before.row_json.replace('"amount": ', '"amount": 1', 1)
        events.append(
            LedgerEvent.from_outbox(
                event_id=str(uuid.UUID(int=10_000_000 + i)),
                table=before.table,
                key=before.key,
                op="update",
                row_json=row,
                before_json=before.row_json,
                txid=900_000 + tx,
                lsn=5_000_000 + i,
                commit_ts_ms=start_ms + tx,
            )
        )
    return events


def captured_database(primary: LocalCluster, name: str) -> str:
    """A fresh database named `name` holding the demo table, captured; its DSN."""
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DEMO_TABLE_DDL)
    install(dsn, ["public.orders"])
    return dsn


def plain_load(dsn: str, events: list[LedgerEvent], chunk_events: int) -> float:
    """Seconds to COPY the same rows and outbox rows in the same chunks, one commit each: replay's limit."""
    rows = []
    for event in events:
        row = event.row
        rows.append((row["id"], row["customer"], row["amount"], row["placed_at"], row["reference"]))
    outbox = [
        (e.event_id, e.table, e.key, e.op, e.row_json, e.txid, _timestamp(e.commit_ts_ms), e.fingerprint)
        for e in events
    ]
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE public.orders DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE drledger.outbox DISABLE TRIGGER USER")
        conn.commit()
        started = time.perf_counter()
        for start in range(0, len(events), chunk_events):
            with conn.cursor() as cursor:
                with cursor.copy(
                    "COPY public.orders (id, customer, amount, placed_at, reference) FROM STDIN"
                ) as copy:
                    for values in rows[start : start + chunk_events]:
                        copy.write_row(values)
                with cursor.copy(
                    "COPY drledger.outbox (id, aggregatetype, aggregateid, type, payload, txid, created_at, "
                    "fingerprint) FROM STDIN"
                ) as copy:
                    for outbox_row in outbox[start : start + chunk_events]:
                        copy.write_row(outbox_row)
            conn.commit()
        return time.perf_counter() - started


def split_brain_lookup(dsn: str, events: list[LedgerEvent], expected: int) -> float:
    """Seconds reconcile's split-brain lookup takes over `events`; it must find `expected` collisions."""
    started = time.perf_counter()
    with open_source(dsn).recovery_session() as session:
        found = key_collisions(session, events)
    took = time.perf_counter() - started
    assert len(found) == expected, len(found)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = lost_events(args.events, args.transactions)
    plan = plan_replay(events)
    results = {}
    timings: dict[tuple[bool, int], list[tuple[float, float]]] = {}
    cpu_used: dict[tuple[bool, int], list[float]] = {}
    with ClusterSet() as clusters:
        primary = clusters.primary()
        # The default chunk with and without the read-back, alternating, so both see the same machine.
        runs = [(True, 5_000), (False, 5_000)] * args.repeat + [(True, 500), (True, 10)]
        for run, (read_back, chunk) in enumerate(runs):
            dsn = captured_database(primary, f"replay_{run}_{chunk}")
            if run == 0:
                free = split_brain_lookup(dsn, events, 0)
            variant = contextlib.nullcontext() if read_back else without_read_back()
            assert primary.pid is not None
            cpu_before = cpu_seconds(primary.pid)
            started = time.perf_counter()
            with variant:
                result = replay(dsn, events, apply=True, chunk_events=chunk)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(primary.pid) - cpu_before
            assert result.applied == len(events), result.as_json()
            if run == 0:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("UPDATE public.orders SET customer = 'after-failover' WHERE id % 100 = 0")
                held = split_brain_lookup(dsn, events, len(events) // 100)
                results["split_brain_lookup"] = {
                    "events": len(events),
                    "keys_free_seconds": round(free, 2),
                    "keys_held_seconds": round(held, 2),
                    "replay_seconds_same_database": round(elapsed, 2),
                    "held_over_replay": round(held / elapsed, 3),
                }
                print(
                    f"split-brain lookup over {len(events):,} lost events: keys free {free:.2f} s, keys held "
                    f"(1% taken) {held:.2f} s; replay of the same {elapsed:.2f} s (ratio {held / elapsed:.3f})",
                    flush=True,
                )
            variant = contextlib.nullcontext() if read_back else without_read_back()
            started = time.perf_counter()
            with variant:
                again = replay(dsn, events, apply=True, chunk_events=chunk)
            second = time.perf_counter() - started
            # The rows changed for the split-brain lookup no longer hold their images: conflicts, not
            # "already replayed" (replay reads back what it finds, too).
            changed = len(events) // 100 if run == 0 else 0
            assert again.applied == 0 and again.already_replayed == len(events) - changed
            assert len(again.conflicts) == changed
            label = "" if read_back else " (without the read-back)"
            print(
                f"chunk of {chunk} events{label}: {elapsed:.2f} s ({cpu:.2f} CPU s), "
                f"{len(events) / elapsed:,.0f} rows/s; again {second:.2f} s",
                flush=True,
            )
            timings.setdefault((read_back, chunk), []).append((elapsed, second))
            cpu_used.setdefault((read_back, chunk), []).append(cpu)
        medians = {variant: sorted(runs)[len(runs) // 2] for variant, runs in timings.items()}
        with_it, without_it = medians[(True, 5_000)], medians[(False, 5_000)]
        cpu_with = sorted(cpu_used[(True, 5_000)])[args.repeat // 2]
        cpu_without = sorted(cpu_used[(False, 5_000)])[args.repeat // 2]
        results["read_back_cost"] = {
            "runs_each": args.repeat,
            "replay_cpu_seconds": round(cpu_with, 2),
            "replay_cpu_seconds_without_read_back": round(cpu_without, 2),
            "replay_cpu_ratio": round(cpu_with / cpu_without, 3),
            "replay_seconds": round(with_it[0], 2),
            "replay_seconds_without_read_back": round(without_it[0], 2),
            "replay_ratio": round(with_it[0] / without_it[0], 3),
            "second_run_seconds": round(with_it[1], 2),
            "second_run_seconds_without_read_back": round(without_it[1], 2),
            "second_run_ratio": round(with_it[1] / without_it[1], 3),
        }
        # Updates: the same number of lost updates, one a row, onto the rows the inserts made.
        updates = lost_updates(events, args.transactions)
        update_runs = []
        for run in range(args.repeat):
            dsn = captured_database(primary, f"updates_{run}")
            assert replay(dsn, events, apply=True).applied == len(events)
            started = time.perf_counter()
            result = replay(dsn, updates, apply=True)
            update_runs.append(time.perf_counter() - started)
            assert result.applied == len(updates) and not result.conflicts, result.as_json()
            print(f"{len(updates):,} lost updates replayed: {update_runs[-1]:.2f} s", flush=True)
        update_seconds = sorted(update_runs)[len(update_runs) // 2]
        results["updates"] = {
            "runs": args.repeat,
            "updates": len(updates),
            "seconds": round(update_seconds, 2),
            "rows_per_s": round(len(updates) / update_seconds),
            "inserts_rows_per_s_same_run": round(len(events) / with_it[0]),
            "target_rows_per_s": 20_000,
        }
        # The limit: the same rows loaded plainly, in the default chunks, in fresh databases.
        plain = []
        for run in range(args.repeat):
            dsn = captured_database(primary, f"plain_{run}")
            plain.append(plain_load(dsn, events, 5_000))
            print(f"plain load of the same rows, 5000-event chunks: {plain[-1]:.2f} s", flush=True)
        plain_seconds = sorted(plain)[len(plain) // 2]
        results["replay_against_plain_load"] = {
            "runs_each": args.repeat,
            "replay_seconds": round(with_it[0], 2),
            "plain_load_seconds": round(plain_seconds, 2),
            "replay_rate_over_plain_rate": round(plain_seconds / with_it[0], 3),
            "target": 0.5,
        }
        for (read_back, chunk), runs_of_chunk in timings.items():
            if not read_back:
                continue
            elapsed, second = medians[(read_back, chunk)]
            results[f"chunk_{chunk}_events"] = {
                "runs": len(runs_of_chunk),
                "seconds": round(elapsed, 2),
                "rows_per_s": round(len(events) / elapsed),
                "transactions_per_s": round(len(plan) / elapsed),
                "second_run_seconds": round(second, 2),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
