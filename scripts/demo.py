"""The shortest real use of drledger, on a throw-away PostgreSQL cluster (run by `make demo`).

It runs the same commands an operator would, prints each one, and cleans up after itself.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from drledger.drill.cluster import ClusterSet

DRLEDGER = [sys.executable, "-m", "drledger"]


def show(args: list[str]) -> None:
    print("\n$ drledger " + " ".join(shlex.quote(a) for a in args), flush=True)


def drledger(*args: str) -> None:
    show(list(args))
    subprocess.run([*DRLEDGER, *args], check=True)


def main() -> None:
    with ClusterSet() as clusters, tempfile.TemporaryDirectory(prefix="drledger-demo-") as tmp:
        primary = clusters.primary()
        dsn = primary.dsn
        ledger = f"sqlite:///{tmp}/ledger.db"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, customer text, amount numeric(10,2))")
        print(f"A throw-away PostgreSQL primary (wal_level=logical) is at {dsn}")

        drledger("init", "--db", dsn, "--table", "public.orders")
        drledger("init", "--db", dsn, "--table", "public.orders", "--check")

        relay_args = ["relay", "--db", dsn, "--ledger", ledger, "--state-dir", f"{tmp}/state"]
        show(relay_args)
        relay = subprocess.Popen([*DRLEDGER, *relay_args], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE active").fetchone():
                        break
                time.sleep(0.3)
            print("\nThe application writes 1,000 orders in 100 transactions, and one transaction rolls back:")
            with psycopg.connect(dsn) as conn:
                for _ in range(100):
                    conn.execute(
                        "INSERT INTO orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, 10) g"
                    )
                    conn.commit()
                conn.execute("INSERT INTO orders (customer) VALUES ('never committed')")
                conn.rollback()
            time.sleep(2)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
        drledger("ledger", "inspect", ledger)
        print(f"\nEvery committed insert is in the ledger {Path(tmp) / 'ledger.db'}; the rolled-back one is not.")


if __name__ == "__main__":
    main()
