"""Replay throughput: 100,000 missing events in 10,000 source transactions → rows/s.

Reconcile's split-brain lookup (which lost events' keys the DR database holds with other content) is
timed over the same events in the first database: before replay (every key free), and after it with
1% of the rows changed (every key held, 1% taken by other content), beside that run's replay time.

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

from drledger.collisions import key_collisions
from drledger.drill.postgres.cluster import ClusterSet
from drledger.drill.postgres.rig import DEMO_TABLE_DDL
from drledger.events import LedgerEvent
from drledger.replay import plan_replay, replay
from drledger.source import open_source
from drledger.source.postgres.outbox import install


def lost_events(count: int, transactions: int) -> list[LedgerEvent]:
    per_tx = count // transactions
    start_ms = 1_800_000_000_000
    events = []
    for i in range(count):
        tx = i // per_tx
        row = (
            f'{{"id": {i + 1}, "amount": {(i % 1000) * 7.25:.2f}, "customer": "customer-{i}", '
            f'"placed_at": "2027-01-15T08:00:00.{(i % 1000) * 1000 + 1:06d}+00:00"}}'
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
            if run == 0:
                free = split_brain_lookup(dsn, events, 0)
            started = time.perf_counter()
            result = replay(dsn, events, apply=True, chunk_events=chunk)
            elapsed = time.perf_counter() - started
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
            started = time.perf_counter()
            again = replay(dsn, events, apply=True, chunk_events=chunk)
            second = time.perf_counter() - started
            # The rows changed for the split-brain lookup no longer hold their images: conflicts, not
            # "already replayed" (replay reads back what it finds, too).
            changed = len(events) // 100 if run == 0 else 0
            assert again.applied == 0 and again.already_replayed == len(events) - changed
            assert len(again.conflicts) == changed
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
