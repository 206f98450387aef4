"""Capture's cost under a real client: PostgreSQL's own pgbench, its built-in TPC-B-like script (three
balance updates and one history insert per transaction), with and without drledger's capture.

Variants, each in a fresh database (`pgbench -i`, scale 1, a primary key added to pgbench_history so it
can be captured), alternating round by round so each sees the same machine:

- `none`: no capture;
- `inserts`: `drledger init` on the four tables, capturing inserts (the default: only the history row);
- `every change`: `init --ops insert,update,delete` (three updates and an insert, four events a
  transaction).

For each client count, TPS of each variant and its ratio to `none` (issue 22's target for every change:
at least 0.75). A throw-away cluster (fsync off, as the drill's), where the trigger's CPU is all there is
to the difference; with --durable, fsync and full-page writes on, as a production database commits.

    .venv/bin/python benchmarks/pgbench.py [--clients 1,4] [--seconds 10] [--rounds 3] [--durable]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess

import psycopg

from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from drledger.source.postgres.outbox import install

TABLES = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
]
VARIANTS = {"none": None, "inserts": ("insert",), "every change": ("insert", "update", "delete")}


def prepared(primary: LocalCluster, name: str, ops: tuple[str, ...] | None) -> str:
    """A fresh pgbench database named `name`, captured with `ops` (None: not at all); its DSN."""
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/{name}"
    subprocess.run(
        [str(primary.bin_dir / "pgbench"), "-i", "-s", "1", "-q", dsn], check=True, capture_output=True
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        conn.execute("VACUUM ANALYZE")
    if ops is not None:
        install(dsn, TABLES, ops)
    return dsn


def tps(primary: LocalCluster, dsn: str, clients: int, seconds: int) -> float:
    run = subprocess.run(
        [
            str(primary.bin_dir / "pgbench"),
            "-n",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(seconds),
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", run.stdout)
    assert found, run.stdout
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--durable", action="store_true", help="fsync and full_page_writes on, as a production database"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    measured: dict[tuple[str, int], list[float]] = {}
    with ClusterSet() as clusters:
        durable = {"fsync": "on", "full_page_writes": "on"} if args.durable else None
        primary = clusters.primary(settings=durable)
        made = 0
        for round_ in range(args.rounds):
            for clients in counts:
                for variant, ops in VARIANTS.items():
                    made += 1
                    dsn = prepared(primary, f"bench_{made}", ops)
                    rate = tps(primary, dsn, clients, args.seconds)
                    if ops is not None and "update" in ops:
                        with psycopg.connect(dsn) as conn:
                            events = conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()
                        assert events and events[0] > 0
                    measured.setdefault((variant, clients), []).append(rate)
                    print(f"round {round_ + 1}, {clients} clients, {variant}: {rate:,.0f} TPS", flush=True)
    results: dict[str, object] = {}
    for clients in counts:
        base = statistics.median(measured[("none", clients)])
        results[f"{clients}_clients"] = {
            variant: {
                "tps": round(statistics.median(measured[(variant, clients)])),
                "ratio_to_none": round(statistics.median(measured[(variant, clients)]) / base, 3),
            }
            for variant in VARIANTS
        }
    results["durable"] = args.durable
    results["target_every_change_ratio"] = 0.75
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
