"""The whole runbook on tables with every kind of name PostgreSQL allows, through a real failover.

init (names typed the SQL way), the Debezium relay, a lagging streaming replica, the disaster, then
fence, reconcile, replay and prune on the promoted database; every lost row that reached the ledger
comes back exactly as PostgreSQL printed it on the primary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from drledger.drill.postgres.rig import FailoverRig
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from tests.helpers import failover_aftermath, run_cli

pytestmark = pytest.mark.debezium

TABLES = {
    '"Sales"."Order"': 'CREATE TABLE "Sales"."Order" (region text, id int, amount numeric(38,10), '
    "placed timestamptz, doc jsonb, blob bytea, tags int[], PRIMARY KEY (region, id))",
    "public.customer": "CREATE TABLE public.customer (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "name text NOT NULL, name_len int GENERATED ALWAYS AS (length(name)) STORED)",
    "public.line": "CREATE TABLE public.line (id bigserial PRIMARY KEY, "
    "customer_id bigint NOT NULL REFERENCES public.customer (id), qty int)",
    'public."my table"': 'CREATE TABLE public."my table" (id serial PRIMARY KEY, v text)',
    'public."we""ird"': 'CREATE TABLE public."we""ird" (id serial PRIMARY KEY, v text)',
    'public."dot.ted"': 'CREATE TABLE public."dot.ted" (id serial PRIMARY KEY, v text)',
    'public."select"': 'CREATE TABLE public."select" (id serial PRIMARY KEY, "from" text)',
    "public." + "x" * 63: "CREATE TABLE public." + "x" * 63 + " (id serial PRIMARY KEY, v text)",
}


def images(dsn: str) -> dict[str, set[str]]:
    with psycopg.connect(dsn) as conn:
        return {
            name: {r[0] for r in conn.execute(f"SELECT to_jsonb(t)::text FROM {name} t").fetchall()}
            for name in TABLES
        }


def workload(dsn: str, seconds: float, tps: float = 100) -> dict[str, set[str]]:
    """Inserts into every table in turn, some multi-row, an FK chain; each committed row's image."""
    truth: dict[str, set[str]] = {name: set() for name in TABLES}
    statements = [
        (
            '"Sales"."Order"',
            """INSERT INTO "Sales"."Order" SELECT r, %(i)s, %(i)s * 1234567.0123456789,
            now(), jsonb_build_object('ü', %(i)s, 'e', '😀'), '\\x00ff'::bytea, ARRAY[%(i)s, NULL]
            FROM unnest(ARRAY['EU', 'US']) r RETURNING to_jsonb("Order")::text""",
        ),
        (
            "public.customer",
            "INSERT INTO public.customer (name) VALUES ('c' || %(i)s) RETURNING to_jsonb(customer)::text",
        ),
        (
            'public."my table"',
            """INSERT INTO public."my table" (v) VALUES (%(s)s), (NULL) RETURNING to_jsonb("my table")::text""",
        ),
        (
            'public."we""ird"',
            """INSERT INTO public."we""ird" (v) VALUES (%(s)s) RETURNING to_jsonb("we""ird")::text""",
        ),
        (
            'public."dot.ted"',
            """INSERT INTO public."dot.ted" (v) VALUES (%(s)s) RETURNING to_jsonb("dot.ted")::text""",
        ),
        (
            'public."select"',
            """INSERT INTO public."select" ("from") VALUES (%(s)s) RETURNING to_jsonb("select")::text""",
        ),
        (
            "public." + "x" * 63,
            "INSERT INTO public."
            + "x" * 63
            + " (v) VALUES (%(s)s) RETURNING to_jsonb("
            + "x" * 63
            + ")::text",
        ),
    ]
    with psycopg.connect(dsn) as conn:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < seconds:
            i += 1
            pause = started + i / tps - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            name, statement = statements[i % len(statements)]
            rows = [r[0] for r in conn.execute(statement, {"i": i, "s": f"naïve {i} 'q'"}).fetchall()]
            extra: list[str] = []
            if name == "public.customer":  # an FK chain in the same transaction
                customer_id = json.loads(rows[0])["id"]
                extra = [
                    r[0]
                    for r in conn.execute(
                        "INSERT INTO public.line (customer_id, qty) SELECT %s, g FROM generate_series(1, 2) g "
                        "RETURNING to_jsonb(line)::text",
                        (customer_id,),
                    ).fetchall()
                ]
            conn.commit()
            truth[name].update(rows)
            truth["public.line"].update(extra)
    return truth


def capture_every_name_then_write(rig: FailoverRig) -> dict[str, set[str]]:
    """The tables created, captured by init under every name, the relay started; the workload's truth."""
    with psycopg.connect(rig.primary_dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Sales"')
        for ddl in TABLES.values():
            conn.execute(ddl)
    init = run_cli("init", "--db", rig.primary_dsn, *(a for t in TABLES for a in ("--table", t)), "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["installed"] == list(TABLES)
    rig.start_relay()
    return workload(rig.primary_dsn, seconds=6)


@pytest.fixture(scope="module")
def aftermath() -> Iterator[tuple[FailoverRig, dict[str, set[str]], dict[str, set[str]]]]:
    with failover_aftermath(capture_every_name_then_write, relay=False) as (rig, truth):
        yield rig, truth, images(rig.dr_dsn)


def test_the_runbook_recovers_every_name(
    aftermath: tuple[FailoverRig, dict[str, set[str]], dict[str, set[str]]],
) -> None:
    rig, truth, at_failover = aftermath
    dsn, url = rig.dr_dsn, rig.ledger_url
    with open_ledger(url) as ledger:
        in_ledger: dict[str, set[str]] = {}
        for record in ledger.read():
            if isinstance(record, LedgerEvent):
                in_ledger.setdefault(record.table, set()).add(record.row_json)
    assert set(in_ledger) >= set(TABLES), "the relay did not publish every table's events under its name"
    lost = {name: truth[name] - at_failover[name] for name in TABLES}
    assert sum(len(rows) for rows in lost.values()) > 20, "the failover lost too little to prove anything"

    fence = run_cli("fence", "--db", dsn, "--ledger", url, "--json")
    assert fence.returncode == 0, fence.stderr
    assert {f["table"] for f in json.loads(fence.stdout)["fenced"]} >= {"public.customer", 'public."we""ird"'}

    reconcile = run_cli("reconcile", "--db", dsn, "--ledger", url, "--json")
    assert reconcile.returncode == 1, reconcile.stderr
    by_table = json.loads(reconcile.stdout)["missing_by_table"]
    recoverable = {name: lost[name] & in_ledger.get(name, set()) for name in TABLES}
    assert by_table == {name: len(rows) for name, rows in recoverable.items() if rows}

    replay = run_cli("replay", "--db", dsn, "--ledger", url, "--apply", "--json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert json.loads(replay.stdout)["refused"] == []
    after = images(dsn)
    for name in TABLES:
        assert after[name] == at_failover[name] | recoverable[name], name  # exact, and no phantoms
        assert len(truth[name] - after[name]) <= 5, name  # only what never reached the ledger

    again = run_cli("reconcile", "--db", dsn, "--ledger", url, "--json")
    assert json.loads(again.stdout)["counts"]["missing_in_dr"] == 0
    prune = run_cli("prune", "--db", dsn, "--older-than", "1d", "--json")
    assert prune.returncode == 0 and json.loads(prune.stdout)["rows"] == 0


def test_a_name_past_the_63_byte_limit_is_refused_not_truncated(
    aftermath: tuple[FailoverRig, dict[str, set[str]], dict[str, set[str]]],
) -> None:
    rig = aftermath[0]
    result = run_cli("init", "--db", rig.dr_dsn, "--table", "public." + "x" * 65)
    assert (
        result.returncode == 2 and "63-byte" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )
    result = run_cli("init", "--db", rig.dr_dsn, "--table", "public.Order")
    assert result.returncode == 2 and 'did you mean "Sales"."Order"' not in result.stderr  # different schema
    result = run_cli("init", "--db", rig.dr_dsn, "--table", "Sales.Order")
    assert result.returncode == 2 and 'did you mean "Sales"."Order"?' in result.stderr, result.stderr
