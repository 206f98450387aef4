"""What init captures and refuses, and what it needs: drledger's own tables, views, partitions,
tables without a key, and a second run by an installer that may no longer create schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from drledger.drill.postgres.cluster import LocalCluster
from tests.helpers import fresh_database, run_cli

SHOP = """
CREATE TABLE orders (id bigserial PRIMARY KEY, v text);
CREATE VIEW recent_orders AS SELECT * FROM orders;
CREATE TABLE nokey (v text);
CREATE TABLE measures (region text, id int, v numeric, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE measures_eu PARTITION OF measures FOR VALUES IN ('EU');
CREATE TABLE measures_us PARTITION OF measures FOR VALUES IN ('US') PARTITION BY RANGE (id);
CREATE TABLE measures_us_low PARTITION OF measures_us FOR VALUES FROM (0) TO (1000);
"""


@pytest.fixture
def shop(primary: LocalCluster) -> Iterator[str]:
    with fresh_database(primary, SHOP) as dsn:
        yield dsn
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS drl_again")


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("drledger.outbox", "drledger's own tables"),
        ("drledger.heartbeat", "drledger's own tables"),
        ("public.recent_orders", "is a view"),
        ("public.nokey", "no primary key"),
        ("public.measures_eu", "is a partition of public.measures; capture public.measures"),
        ("public.measures_us_low", "is a partition of public.measures"),
    ],
)
def test_init_refuses_what_it_cannot_capture(shop: str, table: str, fragment: str) -> None:
    assert run_cli("init", "--db", shop, "--table", "orders").returncode == 0
    result = run_cli("init", "--db", shop, "--table", table)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (v) VALUES ('still captured, no recursion')")
        assert conn.execute("SELECT count(*) FROM drledger.outbox").fetchone() == (1,)


def test_a_partitioned_table_is_captured_with_every_partition(shop: str) -> None:
    result = run_cli("init", "--db", shop, "--table", "public.measures", "--json")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("INSERT INTO measures VALUES ('EU', 1, 1.5), ('US', 2, 2.5)")  # through the root
        conn.execute("INSERT INTO measures_eu VALUES ('EU', 3, 3.5)")  # straight into a partition
        conn.execute("INSERT INTO measures_us_low VALUES ('US', 4, 4.5)")  # a partition's partition
        rows = conn.execute(
            "SELECT aggregatetype, aggregateid FROM drledger.outbox ORDER BY aggregateid"
        ).fetchall()
    assert [r[0] for r in rows] == ["public.measures"] * 4  # each once, under the table the application knows
    assert {json.loads(r[1])["id"] for r in rows} == {1, 2, 3, 4}

    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("CREATE TABLE measures_asia PARTITION OF measures FOR VALUES IN ('ASIA')")
    check = run_cli("init", "--db", shop, "--table", "public.measures", "--check", "--json")
    assert check.returncode == 1
    missing = [f for f in json.loads(check.stdout)["findings"] if not f["ok"]]
    assert [f["what"] for f in missing if "partition" in f["what"]] == [
        "the partition public.measures_asia of public.measures has no capture trigger and no TRUNCATE refusal"
    ]
    assert run_cli("init", "--db", shop, "--table", "public.measures").returncode == 0
    again = json.loads(
        run_cli("init", "--db", shop, "--table", "public.measures", "--check", "--json").stdout
    )
    assert all(f["ok"] for f in again["findings"] if "partition" in f["what"])


def test_a_second_init_needs_no_create_on_the_database(shop: str) -> None:
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("CREATE ROLE drl_again LOGIN")
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO drl_again')
        conn.execute("GRANT TRIGGER ON orders TO drl_again")
    installer = shop.replace("postgres@", "drl_again@", 1)
    assert run_cli("init", "--db", installer, "--table", "orders").returncode == 0
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM drl_again')
        conn.execute("REVOKE CREATE ON DATABASE {} FROM PUBLIC".format(f'"{database}"'))
    rerun = run_cli("init", "--db", installer, "--table", "orders")
    assert rerun.returncode == 0, rerun.stderr
    with psycopg.connect(shop) as conn:
        owner = conn.execute(
            "SELECT p.proowner::regrole::text, p.prosecdef, p.proconfig FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgname = 'drledger_capture'"
        ).fetchone()
    assert owner == ("drl_again", True, ["search_path=pg_catalog, pg_temp"])


MOOD = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE FUNCTION mood_json(mood) RETURNS json LANGUAGE sql AS $$ SELECT to_json($1::text) $$;
CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
CREATE TYPE feeling AS (m mood, since timestamptz);
"""


@pytest.mark.parametrize("column", ["m mood", "ms mood[]", "f feeling"])
def test_a_column_captured_through_a_users_cast_to_json_is_refused(
    primary: LocalCluster, column: str
) -> None:
    # to_jsonb calls a user type's cast to json: in the trigger, with drledger's rights.
    with fresh_database(primary, MOOD + f"CREATE TABLE items (id int PRIMARY KEY, {column});") as dsn:
        result = run_cli("init", "--db", dsn, "--table", "items")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "cast to json (mood_json(mood))" in lines[0] and "drledger's rights" in lines[0], lines[0]
        with psycopg.connect(dsn) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'drledger_capture'"
            ).fetchone() == (0,)


def test_a_key_column_captured_through_a_users_cast_to_text_is_refused(primary: LocalCluster) -> None:
    # The capture trigger prints a one-column key with ::text: a user type's cast to text would run
    # there with drledger's rights. On a column that is not the key it never runs, and is left alone.
    cast = (
        "CREATE FUNCTION mood_text(mood) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;"
        "CREATE CAST (mood AS text) WITH FUNCTION mood_text(mood);"
    )
    with fresh_database(
        primary,
        MOOD.split("CREATE FUNCTION")[0] + cast + "CREATE TABLE keyed (m mood PRIMARY KEY);"
        "CREATE TABLE other (id int PRIMARY KEY, m mood);",
    ) as dsn:
        keyed = run_cli("init", "--db", dsn, "--table", "keyed")
        assert keyed.returncode == 2 and "cast to text (mood_text(mood))" in keyed.stderr, keyed.stderr
        assert run_cli("init", "--db", dsn, "--table", "other").returncode == 0


def test_a_cast_to_json_made_after_init_is_named_by_the_check(primary: LocalCluster) -> None:
    with fresh_database(primary, MOOD + "CREATE TABLE items (id int PRIMARY KEY, v text);") as dsn:
        assert run_cli("init", "--db", dsn, "--table", "items").returncode == 0
        plain = run_cli("init", "--db", dsn, "--table", "items", "--check")
        assert plain.returncode == 0, plain.stdout
        # Without --as, the connecting user (a superuser here) is not called the relay: it is checked for its duty.
        assert "postgres (checked for the relay's duty; --as names another)" in plain.stdout, plain.stdout
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE items ADD COLUMN m mood")
        check = run_cli("init", "--db", dsn, "--table", "items", "--check", "--json")
        assert check.returncode == 1, check.stdout + check.stderr
        assert "DROP CAST (mood AS json)" in check.stdout and "column m of public.items" in check.stdout


def test_an_outbox_row_the_trigger_did_not_write_is_never_an_event_when_read_as_a_ledger(shop: str) -> None:
    assert run_cli("init", "--db", shop, "--table", "orders").returncode == 0
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (v) VALUES ('genuine')")
        # Written past the trigger (as code running with drledger's rights could): no fingerprint.
        conn.execute(
            "INSERT INTO drledger.outbox (aggregatetype, aggregateid, payload) "
            """VALUES ('public.orders', '99', '{"id": 99, "v": "forged"}')"""
        )
    inspect = run_cli("ledger", "inspect", f"{shop}?writable=accept", "--json")
    assert inspect.returncode == 0, inspect.stderr
    census = json.loads(inspect.stdout)
    assert census["events"] == 1 and census["malformed"] == 1, census
    reconcile = run_cli(
        "reconcile", "--db", shop, "--ledger", f"{shop}?writable=accept", "--since", "1h", "--json"
    )
    samples = json.loads(reconcile.stdout)["malformed_samples"]
    assert [s["reason"] for s in samples] == ["it has no fingerprint: the capture trigger did not write it"]
