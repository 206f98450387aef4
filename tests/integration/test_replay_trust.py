"""Replay, fence and reconcile against what real users bring: odd names, awkward types, and ledgers that
were damaged or forged. Nothing replay cannot prove is written; every bad input is one sentence.

Each test builds a "world" on the shared primary: a database whose tables have quoted mixed-case names,
reserved words, composite keys, identity, generated and array columns and an FK chain; rows inserted
through the capture trigger; their outbox rows turned into ledger events; then the rows, their outbox
rows and the sequences taken back to where a lagging replica would have left them. The events are what
the failover lost; the database is the promoted DR database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import stat
import subprocess
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest

from drledger.drill.postgres.cluster import LocalCluster
from drledger.errors import ReplayInterrupted
from drledger.events import LedgerEvent, row_digest
from drledger.ledger import open_ledger
from drledger.replay import replay
from drledger.source.postgres.outbox import read_window
from tests.helpers import REPO, dsn_for, fresh_database, lost_to_a_ledger, run_cli

SOURCE = REPO / "src"
SCHEMA = r"""
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Order" (
    region text, id int, amount numeric(38,10), placed timestamptz, doc jsonb, blob bytea, tags int[],
    note text, PRIMARY KEY (region, id));
CREATE TABLE public.customer (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
    name_len int GENERATED ALWAYS AS (length(name)) STORED);
CREATE TABLE public.line (
    id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES public.customer (id),
    qty int CHECK (qty > 0), status text NOT NULL DEFAULT 'new');
CREATE TABLE public."my table" (id serial PRIMARY KEY, v text);
CREATE TABLE public."we""ird" (id int PRIMARY KEY, v text);
CREATE TABLE public."dot.ted" (id int PRIMARY KEY, v text);
CREATE TABLE public."select" (id int PRIMARY KEY, "from" text);
CREATE SCHEMA secret;
CREATE TABLE secret.accounts (id int PRIMARY KEY, balance numeric);
"""
CAPTURED = [
    '"Sales"."Order"',
    "public.customer",
    "public.line",
    'public."my table"',
    'public."we""ird"',
    'public."dot.ted"',
    'public."select"',
]
WORKLOAD = [
    """INSERT INTO "Sales"."Order" VALUES
        ('EU', 1, 12345678901234567890.0123456789, '2026-11-29 10:00:00.123456+05:30', '{"a": [1, {"b": null}], "ü": "😀"}',
         '\\x00ff10', '{1,NULL,3}', 'quote '' and backslash \\ and tab	'),
        ('US', 1, -0.0000000001, '1999-12-31 23:59:59+00', 'null', NULL, '{}', NULL),
        ('EU', 2, 0, 'infinity', '[]', '\\x', NULL, 'naïve — ünïcödé')""",
    # An FK chain in one transaction: the customer, then its lines.
    """WITH c AS (INSERT INTO public.customer (name) VALUES ('Zoë') RETURNING id)
       INSERT INTO public.line (customer_id, qty) SELECT id, g FROM c, generate_series(1, 3) g""",
    "INSERT INTO public.customer (name) VALUES ('a'), ('bb'), ('ccc')",
    """INSERT INTO public."my table" (v) VALUES ('x'), ('y')""",
    """INSERT INTO public."we""ird" VALUES (1, 'w1'), (2, 'w2')""",
    """INSERT INTO public."dot.ted" VALUES (1, 'd')""",
    """INSERT INTO public."select" VALUES (1, 'reserved')""",
]


def table_images(dsn: str) -> dict[str, set[str]]:
    """Every captured table's rows as jsonb text, as PostgreSQL prints them."""
    with psycopg.connect(dsn) as conn:
        return {
            name: {r[0] for r in conn.execute(f"SELECT to_jsonb(t)::text FROM {name} t").fetchall()}
            for name in [*CAPTURED, "secret.accounts"]
        }


def outbox_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()[0]  # type: ignore[index]


@dataclass
class World:
    dsn: str
    events: list[LedgerEvent]
    originals: dict[str, set[str]]
    workdir: Path

    def ledger(self, name: str, events: list[LedgerEvent] | None = None, raw: list[bytes] = ()) -> str:  # type: ignore[assignment]
        url = f"sqlite:///{self.workdir}/{name}.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(events if events is not None else self.events)
        if raw:
            with sqlite3.connect(self.workdir / f"{name}.db") as db:
                db.executemany("INSERT INTO ledger_events (body) VALUES (?)", [(r,) for r in raw])
        return url

    def saved(self, name: str, events: list[LedgerEvent], extra: list[object] = ()) -> Path:  # type: ignore[assignment]
        path = self.workdir / f"{name}.json"
        docs = [orjson.loads(e.to_wire()) for e in events] + list(extra)
        path.write_bytes(orjson.dumps({"format": "drledger-reconcile/1", "summary": {}, "events": docs}))
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--db", self.dsn, timeout=300)

    def event(self, table: str, key: str | None = None) -> LedgerEvent:
        return next(e for e in self.events if e.table == table and (key is None or e.key == key))


@pytest.fixture
def world(primary: LocalCluster, workdir: Path) -> Iterator[World]:
    with fresh_database(primary, SCHEMA) as dsn:
        yield from _build_world(dsn, workdir)
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS drl_no_sequences")


def _build_world(dsn: str, workdir: Path) -> Iterator[World]:
    init = run_cli("init", "--db", dsn, *(arg for t in CAPTURED for arg in ("--table", t)), "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["installed"] == CAPTURED  # typed the SQL way, printed canonically
    with psycopg.connect(dsn) as conn:
        for statement in WORKLOAD:
            conn.execute(statement)
            conn.commit()
        conn.execute("INSERT INTO secret.accounts VALUES (1, 100)")
        conn.commit()
    originals = table_images(dsn)
    events = [r.as_event() for r in read_window(dsn, None, None)]
    assert len(events) == 16
    # The failover: the rows and their outbox rows never reached the replica, nor did the sequences.
    with psycopg.connect(dsn) as conn:
        # init refuses a TRUNCATE of a captured table; replication's own role (a superuser's) passes it.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            'TRUNCATE public.line, public.customer, "Sales"."Order", public."my table", '
            'public."we""ird", public."dot.ted", public."select", drledger.outbox RESTART IDENTITY'
        )
        conn.commit()
    yield World(dsn, events, originals, workdir)


def forged(event: LedgerEvent, **fields: object) -> LedgerEvent:
    """The event with fields changed and, unless row_sha256 is given, its hash made to fit: a forgery a
    hash alone cannot catch."""
    changed = dataclasses.replace(event, **fields)  # type: ignore[arg-type]
    if "row_json" in fields and "row_sha256" not in fields:
        changed = dataclasses.replace(changed, row_sha256=row_digest(changed.row_json))
    return changed


def replay_json(world: World, *args: str) -> tuple[int, dict]:
    result = world.cli("replay", *args, "--json")
    assert result.returncode in (0, 3), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def test_every_odd_name_and_type_comes_back_exactly(world: World) -> None:
    url = world.ledger("ledger")
    reconcile = world.cli(
        "reconcile", "--ledger", url, "--since", "1h", "--save", str(world.workdir / "lost.json"), "--json"
    )
    assert reconcile.returncode == 1, reconcile.stderr
    summary = json.loads(reconcile.stdout)
    assert summary["counts"]["missing_in_dr"] == 16
    assert set(summary["missing_by_table"]) == set(CAPTURED)
    assert (os.stat(world.workdir / "lost.json").st_mode & 0o777) == 0o600

    code, dry = replay_json(world, "--from", str(world.workdir / "lost.json"))
    assert code == 0 and dry["dry_run"] and dry["would_apply"] == 16 and dry["applied"] == 0, [
        r["reason"] for r in dry["refused"]
    ]
    assert (
        table_images(world.dsn)["public.customer"] == set() and outbox_count(world.dsn) == 0
    )  # rehearsal only

    code, applied = replay_json(world, "--from", str(world.workdir / "lost.json"), "--apply")
    assert code == 0, applied
    assert (applied["applied"], applied["conflicts"], applied["refused"]) == (16, [], [])
    assert table_images(world.dsn) == world.originals  # every value, byte for byte as PostgreSQL prints it
    fenced = {f["sequence"]: f["after"] for f in applied["fenced"]}
    assert fenced["public.customer_id_seq"] == 4 + 1000 and fenced["public.line_id_seq"] == 3 + 1000
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        new_id = conn.execute("INSERT INTO public.customer (name) VALUES ('after') RETURNING id").fetchone()[
            0
        ]  # type: ignore[index]
    assert new_id > 1000  # fenced before the application writes

    again = world.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert again.returncode == 3  # the row written after failover never reached this ledger …
    assert json.loads(again.stdout)["counts"]["missing_in_dr"] == 0  # … and nothing is missing any more
    code, twice = replay_json(world, "--ledger", url, "--since", "1h", "--apply")
    assert code == 0 and twice["applied"] == 0
    fence = world.cli("fence", "--ledger", url, "--since", "1h", "--json")
    assert fence.returncode == 0, fence.stderr
    assert all(not f["after"] > f["before"] for f in json.loads(fence.stdout)["fenced"])  # idempotent
    prune = world.cli("prune", "--older-than", "0s", "--json")
    assert prune.returncode == 0 and json.loads(prune.stdout)["rows"] == 17


def test_a_forged_ledger_writes_nothing_it_cannot_prove(world: World) -> None:
    weird = world.event('public."we""ird"', "1")
    good = world.event('public."dot.ted"')
    forgeries = [
        # a table never captured, and drledger's own tables
        forged(weird, table="secret.accounts", row_json='{"id": 2, "balance": 1000000}', key="2"),
        forged(weird, table="drledger.outbox", event_id=str(uuid.uuid4())),
        forged(weird, table="drledger.heartbeat", event_id=str(uuid.uuid4())),
        # the image's key is not the event's key
        forged(weird, event_id=str(uuid.uuid4()), key="7", row_json='{"id": 8, "v": "w8"}'),
        # two JSON objects in one image
        forged(
            weird, event_id=str(uuid.uuid4()), key="9", row_json='{"id": 9, "v": "a"}{"id": 10, "v": "b"}'
        ),
        # columns the table lacks; values that do not fit
        forged(weird, event_id=str(uuid.uuid4()), key="11", row_json='{"id": 11, "v": "x", "admin": true}'),
        forged(weird, event_id=str(uuid.uuid4()), key="12", row_json='{"id": "twelve", "v": "x"}'),
        forged(weird, event_id=str(uuid.uuid4()), key="13", row_json='{"id": 99999999999, "v": "x"}'),
        forged(weird, event_id=str(uuid.uuid4()), key="14", row_json='{"id": 14, "v": "nul \\u0000 inside"}'),
        forged(weird, event_id=str(uuid.uuid4()), key="15", row_json="1"),
        forged(weird, event_id=str(uuid.uuid4()), key="16", row_json="[1, 2]"),
        # a line whose customer never existed: the database rejects its transaction
        forged(
            world.event("public.line"),
            event_id=str(uuid.uuid4()),
            txid=999_999,
            key="50",
            row_json='{"id": 50, "qty": 1, "status": "new", "customer_id": 777}',
        ),
    ]
    # Each in a source transaction of its own, so each is refused for its own reason.
    forgeries = [dataclasses.replace(f, txid=500_000 + i) for i, f in enumerate(forgeries)]
    # A hash that does not match its row (all zeros here): unreadable, never even an event.
    zeroed = forged(
        weird, event_id=str(uuid.uuid4()), key="17", row_json='{"id": 17, "v": "x"}', row_sha256="0" * 64
    )
    path = world.saved("forged", [*forgeries, good, zeroed])
    before = table_images(world.dsn)
    code, dry = replay_json(world, "--from", str(path))
    assert code == 3 and dry["would_apply"] == 1 and dry["applied"] == 0
    code, result = replay_json(world, "--from", str(path), "--apply")
    assert code == 3
    assert result["applied"] == 1  # the one proven event, in a table the forgeries did not reach
    assert {r["event_id"] for r in result["refused"]} == {f.event_id for f in forgeries}, [
        (f.table, f.key, f.row_json)
        for f in forgeries
        if f.event_id not in {r["event_id"] for r in result["refused"]}
    ]
    refused = {r["key"]: r["reason"] for r in result["refused"]}
    assert "not captured" in refused["2"] and "drledger's own tables" in refused[weird.key]
    assert "holds key 8" in refused["7"] and "not one JSON document" in refused["9"]
    assert "lacks: admin" in refused["11"] and "database rejects" in refused["12"]
    assert "database rejects" in refused["13"] and "database rejects" in refused["14"]
    assert "not a JSON object" in refused["15"] and "not a JSON object" in refused["16"]
    assert "rejected its source transaction" in refused["50"]
    assert [m["reason"] for m in result["malformed"]] == ["the row does not match its row_sha256"]
    after = table_images(world.dsn)
    assert after['public."dot.ted"'] == world.originals['public."dot.ted"']
    assert {k: v for k, v in after.items() if k != 'public."dot.ted"'} == {
        k: v for k, v in before.items() if k != 'public."dot.ted"'
    }  # no forged row anywhere, secret.accounts untouched
    assert outbox_count(world.dsn) == 1  # no forged outbox row either
    assert dry["refused"] == result["refused"]  # the dry run showed exactly what --apply did


def test_conflicting_versions_are_held_back_and_reported_by_reconcile_too(world: World) -> None:
    original = world.event('public."we""ird"', "1")
    other_key_version = world.event('public."we""ird"', "2")
    events = [
        original,
        forged(original, row_json='{"id": 1, "v": "forged twin"}'),  # one id, two contents
        other_key_version,
        forged(
            other_key_version, event_id=str(uuid.uuid4()), row_json='{"id": 2, "v": "another w2"}'
        ),  # one key
        world.event('public."select"'),
    ]
    url = world.ledger("twins", events)
    reconcile = world.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert reconcile.returncode == 3
    summary = json.loads(reconcile.stdout)
    assert summary["counts"]["missing_in_dr"] == 1 and summary["counts"]["conflicting"] == 4
    inspect = run_cli("ledger", "inspect", url, "--json")
    assert json.loads(inspect.stdout)["conflicting"] == 1 and json.loads(inspect.stdout)["duplicates"] == 0
    code, result = replay_json(world, "--ledger", url, "--since", "1h", "--apply")
    assert code == 3 and result["applied"] == 1
    assert sorted(len(g["versions"]) for g in result["conflicting"]) == [2, 2]
    assert table_images(world.dsn)['public."we""ird"'] == set()  # neither version of either row written


def test_a_damaged_ledger_is_counted_malformed_never_applied(world: World) -> None:
    target = world.event('public."my table"', "1")
    url = world.ledger("damaged", [e for e in world.events if e is not target])
    changed = orjson.loads(target.to_wire())
    changed["row"] = changed["row"].replace('"x"', '"changed in place"')  # row_sha256 left intact
    truncated = world.event('public."my table"', "2").to_wire()[:60]
    with sqlite3.connect(world.workdir / "damaged.db") as db:
        db.execute(
            "DELETE FROM ledger_events WHERE event_id = ?", (world.event('public."my table"', "2").event_id,)
        )
        db.executemany(
            "INSERT INTO ledger_events (commit_ts_ms, body) VALUES (NULL, ?)",
            [(orjson.dumps(changed),), (truncated,)],
        )
    reconcile = world.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert reconcile.returncode == 3, reconcile.stderr
    summary = json.loads(reconcile.stdout)
    # the changed body, the truncated one, and the row its block lists but the file lost
    assert summary["counts"]["malformed"] == 3 and summary["counts"]["missing_in_dr"] == 14
    code, result = replay_json(world, "--ledger", url, "--since", "1h", "--apply")
    assert code == 3 and result["applied"] == 14
    assert table_images(world.dsn)['public."my table"'] == set()


def test_fence_refuses_keys_beyond_the_sequence_and_bad_margins(world: World) -> None:
    customer = world.event("public.customer", "1")
    huge = forged(
        customer,
        event_id=str(uuid.uuid4()),
        key=str(2**63 - 5000),
        row_json=customer.row_json.replace('"id": 1', f'"id": {2**63 - 5000}'),
    )
    url = world.ledger("huge", [*world.events, huge])
    result = world.cli("fence", "--ledger", url, "--since", "1h", "--json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert [(u["column"], u["highest"]) for u in report["unfenced"]] == [("id", str(2**63 - 5000))]
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT last_value FROM public.customer_id_seq").fetchone()[0] == 4 + 1000  # type: ignore[index]
    for margin in ("-15000", "99999999999999999999"):
        bad = world.cli("fence", "--ledger", url, "--margin", margin)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    # Replay holds such a key back before anything is written: in its own source transaction, only it.
    alone = dataclasses.replace(huge, txid=700_000)
    code, summary = replay_json(
        world, "--ledger", world.ledger("huge-alone", [*world.events, alone]), "--since", "1h", "--apply"
    )
    assert code == 3 and summary["applied"] == 16, summary
    assert [(r["key"], "too close to the end" in r["reason"]) for r in summary["refused"]] == [
        (alone.key, True)
    ]
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT max(id) FROM public.customer").fetchone()[0] == 4  # type: ignore[index]


def test_fence_needs_the_outbox(primary: LocalCluster, workdir: Path, world: World) -> None:
    url = world.ledger("any")
    bare = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {bare}")
    try:
        with psycopg.connect(dsn_for(primary, bare), autocommit=True) as conn:
            conn.execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text)")
        result = run_cli("fence", "--db", dsn_for(primary, bare), "--ledger", url, "--since", "1h")
        assert result.returncode == 2 and "no drledger.outbox" in result.stderr
        with psycopg.connect(dsn_for(primary, bare)) as conn:
            assert conn.execute("SELECT last_value FROM customer_id_seq").fetchone()[0] == 1  # type: ignore[index]
    finally:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {bare} WITH (FORCE)")


def test_a_fence_it_may_not_make_stops_replay_before_any_row_and_a_rerun_finishes(world: World) -> None:
    path = world.saved("lost", world.events)
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE drl_no_sequences LOGIN")
        conn.execute('GRANT USAGE ON SCHEMA drledger, "Sales" TO drl_no_sequences')
        conn.execute(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA drledger, public, "Sales" '
            "TO drl_no_sequences"
        )
        conn.execute("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO drl_no_sequences")
    limited = world.dsn.replace("postgres@", "drl_no_sequences@")
    # fence checks the same list before it moves anything, and says that it is fence that stopped.
    fenced = run_cli(
        "fence", "--db", limited, "--ledger", world.ledger("all"), "--since", "2000-01-01T00:00:00Z"
    )
    assert fenced.returncode == 2 and fenced.stderr.startswith(
        "drledger: drledger fence as drl_no_sequences lacks SELECT and UPDATE on sequence"
    ), fenced.stderr
    assert "GRANT SELECT, UPDATE ON SEQUENCE public.customer_id_seq TO" in fenced.stderr
    result = run_cli("replay", "--db", limited, "--from", str(path), "--apply")
    # Checked against the recoverer's printed list before any write: the GRANT that fixes it, named.
    assert result.returncode == 2 and "lacks SELECT and UPDATE on sequence" in result.stderr, result.stderr
    assert "GRANT SELECT, UPDATE ON SEQUENCE public.customer_id_seq TO" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert outbox_count(world.dsn) == 0  # nothing applied before the fence
    code, rerun = replay_json(world, "--from", str(path), "--apply")
    assert (
        code == 0
        and rerun["applied"] == 16
        and {f["sequence"] for f in rerun["fenced"]} >= {"public.customer_id_seq"}
    )


def test_a_failure_mid_run_leaves_what_was_committed_and_a_rerun_resumes(world: World) -> None:
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.refuse_select() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the disk is full (simulated)' USING ERRCODE = '53100'; END $$"
        )
        conn.execute(
            'CREATE TRIGGER refuse BEFORE INSERT ON public."select" FOR EACH ROW EXECUTE FUNCTION public.refuse_select()'
        )
    with pytest.raises(ReplayInterrupted) as stopped:
        replay(world.dsn, world.events, apply=True, chunk_events=1)
    partial = stopped.value.result
    assert "run the same command again to resume" in str(stopped.value)
    assert 0 < partial.transactions < 7 and partial.applied == outbox_count(world.dsn)
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute('DROP TRIGGER refuse ON public."select"')
    resumed = replay(world.dsn, world.events, apply=True, chunk_events=1)
    assert resumed.applied + resumed.already_replayed == 16 and resumed.already_replayed == partial.applied
    assert table_images(world.dsn) == world.originals


def test_ledger_text_is_never_read_as_markup(world: World) -> None:
    odd = forged(
        world.event('public."select"'),
        event_id=str(uuid.uuid4()),
        table="public.orders[/]",
        key="[red on red]1",
    )
    url = world.ledger("markup", [odd])
    for command in (
        world.cli("reconcile", "--ledger", url, "--since", "1h"),
        world.cli("replay", "--ledger", url, "--since", "1h"),
        run_cli("ledger", "inspect", url),
    ):
        assert command.returncode in (0, 1, 3) and "Traceback" not in command.stderr, command.stderr
    assert "public.orders[/]" in world.cli("reconcile", "--ledger", url, "--since", "1h").stdout
    assert "[red on red]1" in world.cli("replay", "--ledger", url, "--since", "1h").stdout


def test_readers_never_change_the_file_they_read(world: World, workdir: Path) -> None:
    other = workdir / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    result = run_cli("ledger", "inspect", f"sqlite:///{other}")
    assert result.returncode == 2 and "not a drledger ledger" in result.stderr
    assert hashlib.sha256(other.read_bytes()).hexdigest() == digest
    with sqlite3.connect(other) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    world.ledger("kept")
    ledger_file = workdir / "kept.db"
    assert stat.S_IMODE(os.stat(ledger_file).st_mode) == 0o600  # row images: the owner's only
    archive = workdir / "archive"
    archive.mkdir()
    copy = archive / "kept.db"
    copy.write_bytes(ledger_file.read_bytes())
    os.chmod(copy, 0o444)
    os.chmod(archive, 0o555)
    os.chmod(workdir, 0o755)
    # A reader that may not write next to the file (an archived copy). Root may write anywhere, so the
    # reader runs as nobody, on the system's Python with this environment's packages.
    system_python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not system_python.exists():
        pytest.skip("needs root and /usr/bin/python3 to run the reader as another user")
    packages = sysconfig.get_paths()["purelib"]
    inspect = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "env",
            f"PYTHONPATH={packages}:{SOURCE}",
            str(system_python),
            "-m",
            "drledger",
            "ledger",
            "inspect",
            f"sqlite:///{copy}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["events"] == 16
    assert sorted(p.name for p in archive.iterdir()) == ["kept.db"]


def test_bad_input_is_one_sentence_and_exit_2(world: World) -> None:
    url = world.ledger("inputs")
    cases = [
        (("reconcile", "--ledger", url, "--since", "99999999999d"), "century"),
        (("reconcile", "--ledger", url, "--skew", "99999999999d"), "century"),
        (("reconcile", "--ledger", url, "--lookback", "99999999999d"), "century"),
        (("prune", "--older-than", "99999999999d"), "century"),
        (("replay", "--ledger", url, "--fence-margin", "99999999999999999999"), "margin"),
        (("replay", "--ledger", url, "--on-conflict", "maybe"), "--on-conflict"),
        (("reconcile", "--ledger", "kafka://[::1/x"), "cannot be parsed"),
        (("reconcile", "--ledger", "kafka://user:hunter2@127.0.0.1:1/t"), "credentials"),
        (("reconcile", "--ledger", f"sqlite:///{world.workdir}/{'n' * 5000}.db"), "File name too long"),
        (("replay", "--from", "/dev/zero"), "is a device"),
    ]
    for args, fragment in cases:
        result = world.cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, result.stderr)
        assert "hunter2" not in result.stderr
    for dsn in (
        "postgresql://:hunter2@127.0.0.1:1/x",
        "postgresql://u@127.0.0.1:1/x?%70assword=hunter2",
        "postgresql://u:hunter2@127.0.0.1:1/x?bogus=1",
        "host=127.0.0.1 port=1 sslpassword=hunter2 password=hunter2",
    ):
        result = run_cli("reconcile", "--db", dsn, "--ledger", url)
        assert (
            result.returncode == 2
            and "hunter2" not in result.stderr
            and len(result.stderr.strip().splitlines()) == 1
        ), result.stderr
    saved = world.workdir / "report.json"
    html = world.workdir / "report.html"
    world.cli("reconcile", "--ledger", url, "--since", "1h", "--save", str(saved), "--html", str(html))
    for path in (saved, html):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_column_the_image_lacks_gets_its_default_as_the_original_insert_would(world: World) -> None:
    customer = next(e for e in world.events if e.table == "public.customer" and e.row["name"] == "Zoë")
    line = next(e for e in world.events if e.table == "public.line" and e.txid == customer.txid)
    image = {k: v for k, v in line.row.items() if k != "status"}
    short = forged(line, row_json=json.dumps(image, default=str))
    code, result = replay_json(world, "--from", str(world.saved("short", [customer, short])), "--apply")
    assert code == 0 and result["applied"] == 2, result
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT status FROM public.line WHERE id = %s", (int(line.key),)).fetchone() == (
            "new",
        )


#: Columns named like every alias drledger's capture and replay SQL uses, and words that read like SQL.
ALIAS_COLUMNS = [
    "n",
    "e",
    "j",
    "k",
    "item",
    "doc",
    "ord",
    "key",
    "value",
    "payload",
    "row",
    "id",
    "drledger_new_rows",
    # … and those of the update and delete capture, and of replay's updates and deletes.
    "o",
    "a",
    "b",
    "i",
    "c",
    "g",
    "image",
    "op",
    "before_image",
    "gone",
    "changed",
    "drledger_old_rows",
]


def test_no_column_name_changes_what_is_captured_or_replayed(primary: LocalCluster, workdir: Path) -> None:
    columns = ", ".join(f'"{c}" text' for c in ALIAS_COLUMNS if c != "id")
    with fresh_database(primary, f"CREATE TABLE public.items (id int PRIMARY KEY, {columns})") as dsn:
        assert run_cli("init", "--db", dsn, "--table", "public.items").returncode == 0
        names = ", ".join(f'"{c}"' for c in ALIAS_COLUMNS if c != "id")
        values = ", ".join(f"'{c}-' || g" for c in ALIAS_COLUMNS if c != "id")
        with psycopg.connect(dsn) as conn:
            conn.execute(
                f"INSERT INTO public.items (id, {names}) SELECT g, {values} FROM generate_series(1, 4) g"
            )
            conn.commit()
            inserted = {r[0] for r in conn.execute("SELECT to_jsonb(t.*)::text FROM public.items t")}
            # Updates and a delete, each column named like an alias changed.
            conn.execute(
                f"UPDATE public.items SET {', '.join(f'{n} = {n} || ' + repr('!') for n in names.split(', '))}"
            )
            conn.execute("DELETE FROM public.items WHERE id = 4")
            conn.commit()
            images = {r[0] for r in conn.execute("SELECT to_jsonb(t.*)::text FROM public.items t")}
            captured = {
                (r[0], r[1], r[2])
                for r in conn.execute("SELECT type, before_image::text, payload::text FROM drledger.outbox")
            }
        # The whole row, before and after, whatever its columns are called.
        (deleted,) = [after for op, _, after in captured if op == "delete"]  # row 4, as updated
        assert '"id": 4' in deleted and "!" in deleted
        assert {after for op, _, after in captured if op == "update"} == images | {deleted}
        assert {before for op, before, _ in captured if op == "update"} == inserted
        assert {after for op, _, after in captured if op == "insert"} == inserted
        _events, url = lost_to_a_ledger(dsn, workdir / "aliases.db", "public.items")
        for expected in (9, 0):  # 4 inserts, 4 updates, a delete; then nothing left to write
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--apply", "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["applied"] == expected
        with psycopg.connect(dsn) as conn:
            assert {r[0] for r in conn.execute("SELECT to_jsonb(t.*)::text FROM public.items t")} == images


def test_a_row_image_nested_past_any_parser_is_one_refused_event(world: World) -> None:
    deep = forged(
        world.event('public."we""ird"', "1"),
        event_id=str(uuid.uuid4()),
        txid=600_000,
        key="40",
        row_json='{"id": 40, "v": ' + "[" * 10_000 + "]" * 10_000 + "}",
    )
    url = world.ledger("deep", [deep, world.event('public."select"')])
    for command in ("reconcile", "fence"):
        result = world.cli(command, "--ledger", url, "--since", "1h", "--json")
        assert "Traceback" not in result.stderr and result.returncode in (0, 1, 3), (command, result.stderr)
    code, summary = replay_json(world, "--ledger", url, "--since", "1h", "--apply")
    assert code == 3 and summary["applied"] == 1
    assert [r["reason"] for r in summary["refused"]] == [
        "its row image nests deeper than drledger reads (1,024 levels)"
    ]


def test_what_replay_writes_is_read_back_and_a_changed_value_holds_its_transaction_back(world: World) -> None:
    # The DR database's own trigger changes a value on the way in: the row would not be the image.
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.shout() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.v := upper(NEW.v); RETURN NEW; END$$"
        )
        conn.execute(
            'CREATE TRIGGER shout BEFORE INSERT ON public."we""ird" FOR EACH ROW EXECUTE FUNCTION public.shout()'
        )
    url = world.ledger("read-back")
    for apply in ((), ("--apply",)):
        result = world.cli("replay", "--ledger", url, "--since", "1h", *apply, "--json")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        summary = json.loads(result.stdout)
        assert summary["exit_code"] == 2 and summary["would_apply" if not apply else "applied"] == 14
        reasons = {r["key"]: r["reason"] for r in summary["refused"] if r["table"] == 'public."we""ird"'}
        assert set(reasons) == {"1", "2"}  # both rows came in one source transaction: both held back
        assert all(
            re.search(r'key \d column v: the ledger holds "w\d", the database stored "W\d"', r)
            for r in reasons.values()
        ), reasons
    assert table_images(world.dsn)['public."we""ird"'] == set()  # rolled back, not left changed
    assert table_images(world.dsn)['public."dot.ted"'] == world.originals['public."dot.ted"']

    # Someone edits a replayed row; a second apply does not call it "already replayed".
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute("""UPDATE public."select" SET "from" = 'edited' WHERE id = 1""")
    again = world.cli("replay", "--from", str(world.saved("all", world.events)), "--apply", "--json")
    summary = json.loads(again.stdout)
    edited = [c for c in summary["conflicts"] if c["table"] == 'public."select"']
    assert len(edited) == 1 and edited[0]["why"] == "the row replayed before no longer holds its image", (
        summary
    )
    assert '"edited"' in edited[0]["current_row"] and summary["already_replayed"] == 13


def test_an_instant_captured_in_one_time_zone_is_the_same_instant_read_in_another(
    primary: LocalCluster, workdir: Path
) -> None:
    ddl = "CREATE TABLE public.stamp (id int PRIMARY KEY, at timestamptz, ats timestamptz[], t timetz)"
    with fresh_database(primary, ddl) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "public.stamp").returncode == 0
        with psycopg.connect(dsn) as conn:
            conn.execute("SET TimeZone = 'Asia/Kolkata'")
            conn.execute(
                "INSERT INTO public.stamp VALUES (1, '2026-11-29 10:00:00.123456+00', "
                "'{2026-01-01 00:00:00+00,NULL}', '10:00:00+02')"
            )
            conn.commit()
        events, url = lost_to_a_ledger(dsn, workdir / "zones.db", "public.stamp")
        assert "+05:30" in events[0].row_json  # printed in the capturing session's zone
        saved = workdir / "lost.json"
        reconcile = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--save", str(saved))
        assert reconcile.returncode == 1, reconcile.stderr
        for expected in ("applied", "already_replayed"):  # read in this session's zone, not the capture's
            result = run_cli("replay", "--db", dsn, "--from", str(saved), "--apply", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            assert json.loads(result.stdout)[expected] == 1, result.stdout


def test_a_user_trigger_that_writes_the_outbox_during_replay_holds_its_transaction_back(world: World) -> None:
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.mint() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "INSERT INTO drledger.outbox (aggregatetype, aggregateid, payload) "
            """VALUES ('public."my table"', '77', '{"id": 77, "v": "forged"}'); RETURN NEW; END$$"""
        )
        conn.execute(
            'CREATE TRIGGER mint BEFORE INSERT ON public."my table" FOR EACH ROW EXECUTE FUNCTION public.mint()'
        )
    url = world.ledger("minted")
    code, result = replay_json(world, "--ledger", url, "--since", "1h", "--apply")
    assert code == 3 and result["applied"] == 14, result
    reasons = {r["reason"] for r in result["refused"]}
    assert len(reasons) == 1 and "a trigger wrote drledger.outbox while replay applied" in reasons.pop()
    assert table_images(world.dsn)['public."my table"'] == set()
    assert outbox_count(world.dsn) == 14  # replay's own rows, nothing minted
    # Outside replay the application's own writes are captured as ever, trigger or not.
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute("""INSERT INTO public."we""ird" VALUES (50, 'after')""")
    assert outbox_count(world.dsn) == 15


def test_a_generated_column_the_dr_database_computes_otherwise_is_read_back_and_held_back(
    primary: LocalCluster, workdir: Path
) -> None:
    """A stored generated column is the DR database's to compute (replay leaves it out); where its
    expression differs from the primary's (schema drift), the row read back is not the image: its
    source transaction is held back, the column named, exit 2, nothing written."""
    ddl = "CREATE TABLE public.line (id int PRIMARY KEY, qty int NOT NULL, total int GENERATED ALWAYS AS (qty * 2) STORED)"
    with fresh_database(primary, ddl) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "public.line").returncode == 0
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO public.line (id, qty) VALUES (1, 5), (2, 7)")
            conn.commit()
        events, url = lost_to_a_ledger(dsn, workdir / "generated.db", "public.line")
        assert '"total": 10' in events[0].row_json
        with psycopg.connect(dsn, autocommit=True) as conn:  # the DR database computes it otherwise
            conn.execute("ALTER TABLE public.line DROP COLUMN total")
            conn.execute("ALTER TABLE public.line ADD COLUMN total int GENERATED ALWAYS AS (qty * 3) STORED")
        for apply in ((), ("--apply",)):
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", *apply, "--json")
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
            summary = json.loads(result.stdout)
            reasons = {r["key"]: r["reason"] for r in summary["refused"]}
            assert set(reasons) == {"1", "2"}, summary
            # Both rows came in one source transaction: both held back, named by the row that differed.
            named = r"key (1|2) column total: the ledger holds (10|14), the database stored (15|21)"
            assert all(re.search(named, reason) for reason in reasons.values()), reasons
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.line").fetchone() == (0,)


def test_a_replay_whose_database_goes_away_part_way_says_exit_2_in_its_json_and_exits_2(
    primary: LocalCluster, workdir: Path
) -> None:
    """Through the CLI, as an operator's script reads it: the JSON's exit_code is the process's, and what
    it says was committed is what the database holds. The database goes away deterministically: a trigger
    on a row of the second chunk (replay commits 5,000 events a chunk) terminates replay's own backend."""
    with fresh_database(primary, "CREATE TABLE public.items (id int PRIMARY KEY, note text)") as dsn:
        assert run_cli("init", "--db", dsn, "--table", "public.items").returncode == 0
        with psycopg.connect(dsn) as conn:
            for first in range(1, 6001, 1000):  # six source transactions of 1,000 rows
                conn.execute(
                    "INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(%s::int, %s::int) g",
                    (first, first + 999),
                )
                conn.commit()
        _events, url = lost_to_a_ledger(dsn, workdir / "ledger.db", "public.items")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION public.goodbye() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NEW; END$$"
            )
            conn.execute(
                "CREATE TRIGGER goodbye BEFORE INSERT ON public.items FOR EACH ROW "
                "WHEN (NEW.id > 5000) EXECUTE FUNCTION public.goodbye()"
            )
        result = run_cli(
            "replay", "--db", dsn, "--ledger", url, "--since", "1h", "--apply", "--json", timeout=300
        )
        assert "Traceback" not in result.stderr, result.stderr
        summary = json.loads(result.stdout)
        assert result.returncode == summary["exit_code"] == 2, (
            result.returncode,
            result.stdout,
            result.stderr,
        )
        assert "run the same command again to resume" in result.stderr, result.stderr
        with psycopg.connect(dsn) as conn:
            held = conn.execute("SELECT count(*), min(id), max(id) FROM public.items").fetchone()
        # The first chunk (five transactions) committed, the second rolled back with the connection.
        assert (summary["transactions"], summary["applied"]) == (5, 5000), summary
        assert held == (5000, 1, 5000)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER goodbye ON public.items")
        resumed = run_cli(
            "replay", "--db", dsn, "--ledger", url, "--since", "1h", "--apply", "--json", timeout=300
        )
        again = json.loads(resumed.stdout)
        # Reconcile finds only the last transaction missing now; the rerun finishes it.
        assert resumed.returncode == again["exit_code"] == 0, resumed.stderr
        assert (again["planned_transactions"], again["applied"]) == (1, 1000)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.items").fetchone() == (6000,)


#: A table of the types issue 26 names, added to the world for the recoverer's replay.
PRECISE = 'public."Precise Ledger"'
PRECISE_ROWS = r"""
CREATE TABLE public."Precise Ledger" (id int PRIMARY KEY, amount numeric(38,18), doc jsonb, tags text[],
    blob bytea, at timestamptz, note text);
"""
PRECISE_INSERT = r"""INSERT INTO public."Precise Ledger" VALUES
    (1, 12345678901234567890.123456789012345678, '{"k": [1.5, "ü😀", null], "n": 1e-30, "": {}}',
     '{"a b","ü",NULL,"{}"}', '\x00ff00', '2026-12-05 12:34:56.789012+09', 'naïve 😀 "q" \ back'),
    (2, -0.000000000000000001, '"just a string"', '{}', '\x', '-infinity', ''),
    (3, NULL, NULL, NULL, NULL, NULL, NULL)"""


def test_every_odd_name_and_type_comes_back_exactly_as_the_printed_recoverer(world: World) -> None:
    """Issue 26: the replay of test_every_odd_name_and_type_comes_back_exactly, run not as a superuser
    but as exactly the recoverer `init --print-grants` prints (the script run by psql, as an
    administrator would), with a table of numeric(38,18), jsonb, text[], bytea and timestamptz values,
    NULLs and unicode added: every row reads back, as to_jsonb prints it, exactly as committed."""
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute(PRECISE_ROWS)
    tables = [*CAPTURED, PRECISE]
    init = world.cli("init", *(a for t in tables for a in ("--table", t)))
    assert init.returncode == 0, init.stderr
    with psycopg.connect(world.dsn) as conn:
        conn.execute(PRECISE_INSERT)
        conn.commit()
    precise = {r[0] for r in _rows(world.dsn, f"SELECT to_jsonb(t)::text FROM {PRECISE} t")}
    assert len(precise) == 3
    added = [r.as_event() for r in read_window(world.dsn, None, None)]
    assert len(added) == 3
    with psycopg.connect(world.dsn) as conn:  # lost with the rest
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(f"TRUNCATE {PRECISE}, drledger.outbox")
        conn.commit()

    suffix = uuid.uuid4().hex[:6]
    roles = {duty: f"drl_{duty}_{suffix}" for duty in ("installer", "relay", "reader", "recoverer")}
    printed = world.cli(
        "init",
        *(a for t in tables for a in ("--table", t)),
        "--print-grants",
        *(a for duty, role in roles.items() for a in ("--role", f"{duty}={role}")),
    )
    assert printed.returncode == 0, printed.stderr
    script = world.workdir / "grants.sql"
    script.write_text(printed.stdout)
    try:
        ran = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", world.dsn, "-f", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        recoverer = world.dsn.replace("postgres@", f"{roles['recoverer']}@", 1)
        # Not a superuser, and no more than printed (and what PUBLIC holds).
        assert _rows(recoverer, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
        url = world.ledger("ledger", [*world.events, *added])
        result = run_cli("replay", "--db", recoverer, "--ledger", url, "--since", "1h", "--apply", "--json")
        assert "Traceback" not in result.stderr, result.stderr
        summary = json.loads(result.stdout)
        assert result.returncode == summary["exit_code"] == 0, (result.stderr, summary.get("refused"))
        assert (summary["applied"], summary["conflicts"], summary["refused"]) == (19, [], [])
        assert table_images(world.dsn) == world.originals  # every value, as to_jsonb prints it
        assert {r[0] for r in _rows(world.dsn, f"SELECT to_jsonb(t)::text FROM {PRECISE} t")} == precise
        again = run_cli("replay", "--db", recoverer, "--ledger", url, "--since", "1h", "--apply", "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["applied"] == 0, again.stderr
    finally:
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            for role in roles.values():
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")


def _rows(dsn: str, statement: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement).fetchall()
