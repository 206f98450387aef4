"""What capture costs a single-row statement, measured inside the server (no client round trips), so the
trigger's own cost is what differs between the variants.

Each variant is a fresh database holding `t (id int PRIMARY KEY, v int, filler text)` with 100 rows; a
DO block runs N single-row UPDATEs (then N single-row INSERTs) in a loop, and the figure is the
wall time per statement. Variants, alternating round by round so each sees the same machine:

- `none`: no capture (the limit);
- `capture`: `drledger init` as it installs today (statement triggers with transition tables, the
  replay guard on the outbox firing only in a session that suppresses capture);
- `guard always`: the same, with the replay guard's function called on every outbox insert, as before
  its WHEN clause (what that clause saves);
- `row trigger`: the update captured by a row-level trigger instead (one INSERT per row, no transition
  tables, no pairing by key): an alternative design for single-row statements, for comparison only.

    .venv/bin/python benchmarks/capture_cost.py [--statements 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psycopg

from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from drledger.source.postgres.outbox import SUPPRESS_SETTING, install

_ROW_TRIGGER = """
CREATE OR REPLACE FUNCTION drledger.bench_row_capture() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE i uuid := gen_random_uuid(); a jsonb := to_jsonb(NEW.*); b jsonb := to_jsonb(OLD.*);
BEGIN
  INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, type, payload, before_image, fingerprint)
  VALUES (i, 'public.t', NEW.id::text, 'update', a, b,
          uuid_send(i) || sha256(convert_to('update' || E'\\n' || b::text || E'\\n' || a::text, 'UTF8')));
  RETURN NULL;
END $$
"""


def prepared(primary: LocalCluster, variant: str) -> str:
    name = "cost_" + variant.replace(" ", "_")
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, filler text)")
        conn.execute("INSERT INTO t SELECT g, 0, repeat('x', 80) FROM generate_series(1, 100) g")
        conn.execute("CREATE SEQUENCE ids START 1000")
    if variant == "none":
        return dsn
    install(dsn, ["public.t"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        if variant == "guard always":
            conn.execute(
                "CREATE OR REPLACE TRIGGER drledger_replay_guard BEFORE INSERT ON drledger.outbox "
                "FOR EACH STATEMENT EXECUTE FUNCTION drledger.replay_guard()"
            )
        elif variant == "row trigger":
            conn.execute(_ROW_TRIGGER)
            conn.execute("DROP TRIGGER drledger_capture_update ON public.t")
            conn.execute(
                "CREATE TRIGGER bench_row_capture AFTER UPDATE ON public.t "
                "FOR EACH ROW EXECUTE FUNCTION drledger.bench_row_capture()"
            )
    return dsn


def microseconds(dsn: str, statements: int, statement: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(f"DO $$BEGIN FOR i IN 1..{statements} LOOP {statement}; END LOOP; END$$")
        return (time.perf_counter() - started) / statements * 1e6


STATEMENTS = {
    "update": "UPDATE t SET v = v + 1 WHERE id = 1 + i % 100",
    "insert": "INSERT INTO t (id, v, filler) VALUES (nextval('ids'), i, repeat('x', 80))",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--statements", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = ["none", "capture", "guard always", "row trigger"]
    measured: dict[tuple[str, str], list[float]] = {}
    with ClusterSet() as clusters:
        primary = clusters.primary()
        dsns = {variant: prepared(primary, variant) for variant in variants}
        with psycopg.connect(dsns["capture"]) as conn:  # capture really runs, unsuppressed
            assert conn.execute("SELECT current_setting(%s, true)", (SUPPRESS_SETTING,)).fetchone() != ("on",)
        for round_ in range(args.rounds):
            for kind, statement in STATEMENTS.items():
                for variant in variants:
                    if kind == "insert" and variant == "row trigger":
                        continue  # the row trigger only captures updates
                    value = microseconds(dsns[variant], args.statements, statement)
                    measured.setdefault((kind, variant), []).append(value)
                    print(f"round {round_ + 1}, {kind}, {variant}: {value:.1f} µs a statement", flush=True)
    results: dict[str, object] = {}
    for kind in STATEMENTS:
        base = statistics.median(measured[(kind, "none")])
        results[kind] = {
            variant: {
                "us_per_statement": round(statistics.median(values), 1),
                "capture_us": round(statistics.median(values) - base, 1),
                "ratio_to_none": round(base / statistics.median(values), 3),
            }
            for (k, variant), values in measured.items()
            if k == kind
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
