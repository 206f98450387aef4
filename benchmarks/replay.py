"""Replay throughput: 100,000 missing events in 10,000 source transactions → rows/s.

A throw-away PostgreSQL cluster (fsync off, as the drill's) stands in for the promoted DR database.
The same events are replayed into fresh databases with different chunk sizes (how many source
transactions commit together), so the cost of per-transaction commits shows in the same run. The
default chunk (5,000 events) is replayed `--repeat` times, each into a fresh database, and the median
is its figure: on a shared two-core machine one run varies by a third.

    .venv/bin/python benchmarks/replay.py [--events 100000] [--transactions 10000]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import psycopg

from drledger.drill.cluster import ClusterSet
from drledger.drill.rig import DEMO_TABLE_DDL
from drledger.events import LedgerEvent
from drledger.replay import plan_replay, replay
from drledger.source.postgres.outbox import install


def lost_events(count: int, transactions: int) -> list[LedgerEvent]:
    per_tx = count // transactions
    start_ms = 1_800_000_000_000
    events = []
    for i in range(count):
        tx = i // per_tx
        row = (
            f'{{"id": {i + 1}, "amount": {(i % 1000) * 7.25:.2f}, "customer": "customer-{i}", '
            f'"placed_at": "2027-01-15T08:00:00.{i % 1000:03d}+00:00"}}'
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
    timings: dict[int, list[tuple[float, float]]] = {}
    with ClusterSet() as clusters:
        primary = clusters.primary()
        runs = [5_000] * args.repeat + [500, 10]
        for run, chunk in enumerate(runs):
            name = f"replay_{run}_{chunk}"
            with psycopg.connect(primary.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/{name}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(DEMO_TABLE_DDL)
            install(dsn, ["public.orders"])
            started = time.perf_counter()
            result = replay(dsn, events, apply=True, chunk_events=chunk)
            elapsed = time.perf_counter() - started
            assert result.applied == len(events), result.as_json()
            started = time.perf_counter()
            again = replay(dsn, events, apply=True, chunk_events=chunk)
            second = time.perf_counter() - started
            assert again.applied == 0 and again.already_replayed == len(events)
            print(
                f"chunk of {chunk} events: {elapsed:.2f} s, {len(events) / elapsed:,.0f} rows/s", flush=True
            )
            timings.setdefault(chunk, []).append((elapsed, second))
        for chunk, runs_of_chunk in timings.items():
            elapsed, second = sorted(runs_of_chunk)[len(runs_of_chunk) // 2]
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
