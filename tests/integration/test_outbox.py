"""The outbox and its capture triggers, against a real PostgreSQL cluster."""

from __future__ import annotations

import json

import psycopg
import pytest

from drledger.errors import DrledgerError
from drledger.events import fingerprint, row_digest
from drledger.source.postgres import outbox as postgres


def outbox_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT aggregatetype, aggregateid, type, payload, txid FROM drledger.outbox ORDER BY length(aggregateid), aggregateid"
        ).fetchall()


def test_init_is_idempotent_and_captures_the_full_row_image(database: str) -> None:
    assert postgres.install(database, ["public.orders"]) == ["public.orders"]
    assert postgres.install(database, ["orders"]) == ["public.orders"]  # twice: no error, one trigger
    with psycopg.connect(database) as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass AND tgname = 'drledger_capture'"
        ).fetchone()
        assert triggers == (1,)
        conn.execute(
            "INSERT INTO orders (customer, amount, tags) VALUES ('ada', 12.50, '{\"vip\": true}'), ('bob', 3, NULL)"
        )
        table_rows = conn.execute("SELECT to_jsonb(o) FROM orders o ORDER BY id").fetchall()
        txid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
    rows = outbox_rows(database)
    assert [r[:3] for r in rows] == [("public.orders", "1", "insert"), ("public.orders", "2", "insert")]
    assert [r[3] for r in rows] == [t[0] for t in table_rows]
    assert {r[4] for r in rows} == {txid}  # written in the inserting transaction


def test_rolled_back_insert_leaves_no_outbox_row(database: str) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO orders (customer) VALUES ('ghost')")
        conn.rollback()
    assert outbox_rows(database) == []


def test_multi_row_insert_fires_the_trigger_once(database: str) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")
        conn.execute("INSERT INTO orders (customer) SELECT 'c' || g FROM generate_series(1, 500) g")
        conn.execute("SELECT pg_stat_force_next_flush()")
        calls = conn.execute(
            "SELECT sum(calls) FROM pg_stat_user_functions "
            "WHERE schemaname = 'drledger' AND funcname LIKE 'capture%'"
        ).fetchone()[0]  # type: ignore[index]
    assert calls == 1
    assert len(outbox_rows(database)) == 500


def test_suppressed_capture_writes_nothing(database: str) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database) as conn:
        conn.execute(f"SET LOCAL {postgres.SUPPRESS_SETTING} = on")
        conn.execute("INSERT INTO orders (customer) VALUES ('replayed')")
        conn.commit()
        conn.execute("INSERT INTO orders (customer) VALUES ('captured')")
        conn.commit()
    rows = outbox_rows(database)
    assert [r[3]["customer"] for r in rows] == ["captured"]


def test_composite_key_is_a_json_object(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sales")
        conn.execute(
            "CREATE TABLE sales.lines (order_id int, line int, sku text, PRIMARY KEY (order_id, line))"
        )
    postgres.install(database, ["sales.lines"])
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO sales.lines VALUES (7, 2, 'x')")
    (row,) = outbox_rows(database)
    assert row[0] == "sales.lines"
    assert json.loads(row[1]) == {"order_id": 7, "line": 2}


def test_unknown_table_and_table_without_key_are_refused(database: str) -> None:
    with pytest.raises(DrledgerError, match="does not exist"):
        postgres.install(database, ["public.nope"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE heap (x int)")
    with pytest.raises(DrledgerError, match="no primary key"):
        postgres.install(database, ["public.heap"])


def test_check_names_what_is_missing(database: str) -> None:
    before = {f.what: f.ok for f in postgres.check(database, ["public.orders"])}
    assert before["the drledger.outbox table is missing"] is False
    assert before["the capture trigger on public.orders is missing"] is False
    assert before["wal_level is 'logical'"] is True
    postgres.install(database, ["public.orders"])
    after = postgres.check(database, ["public.orders"])
    assert all(f.ok for f in after), after


def test_prune_counts_then_deletes_old_rows(database: str) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO orders (customer) SELECT 'c' FROM generate_series(1, 5)")
        conn.execute(
            "UPDATE drledger.outbox SET created_at = now() - interval '10 days' WHERE aggregateid IN ('1','2')"
        )
    cutoff = int(__import__("time").time() * 1000) - 7 * 86400 * 1000
    assert postgres.prune(database, cutoff, apply=False) == 2
    assert len(outbox_rows(database)) == 5
    assert postgres.prune(database, cutoff, apply=True) == 2
    assert [r[1] for r in outbox_rows(database)] == ["3", "4", "5"]


def test_the_database_fingerprints_rows_exactly_as_the_ledger_does(database: str) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders (customer, amount, tags) VALUES "
            "('zoë', 1234567890.12, '{\"b\": [1, 2.50], \"a\": \"ünïcode\"}'), ('bob', 3, NULL)"
        )
        rows = conn.execute("SELECT id::text, payload::text, created_at FROM drledger.outbox").fetchall()
        stored = {bytes(r[0]) for r in conn.execute("SELECT fingerprint FROM drledger.outbox")}
        conn.execute("ALTER TABLE drledger.outbox DROP COLUMN fingerprint")  # an outbox from before it
        unstored = postgres.read_fingerprints(database, None, None)
    expected = {fingerprint(event_id, row_digest(payload)) for event_id, payload, _ in rows}
    assert stored == expected  # the capture trigger wrote each row's own fingerprint
    assert unstored and set(unstored) == expected
    postgres.install(database, ["public.orders"])  # init again brings the column back, empty
    assert set(postgres.read_fingerprints(database, None, None)) == expected
    created = postgres.created_at(database, {p[:16] for p in expected})
    exact = sorted(r[2].timestamp() * 1000 for r in rows)
    assert all(abs(a - b) <= 1 for a, b in zip(sorted(created.values()), exact, strict=True))
    first = int(exact[0])  # the millisecond the first row was created in
    assert postgres.read_fingerprints(database, first, first) != []
    assert postgres.read_fingerprints(database, first + 1_000, None) == []
    assert postgres.read_fingerprints(database, None, first - 1) == []
