"""Replay on a schema shaped the way an ORM writes it (Django: every foreign key DEFERRABLE INITIALLY
DEFERRED, a unique e-mail): one source transaction that cannot apply never stops the others."""

from __future__ import annotations

import html
import json
from pathlib import Path

import psycopg

from drledger.drill.postgres.cluster import LocalCluster
from drledger.ledger import open_ledger
from drledger.replay import replay
from drledger.source.postgres.outbox import SUPPRESS_SETTING, read_window
from tests.helpers import fresh_database, lost_to_a_ledger, rendered_dom, run_cli

SCHEMA = """
CREATE TABLE shop_customer (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE TABLE shop_order (
    id bigserial PRIMARY KEY, total numeric(12,2) NOT NULL,
    customer_id bigint NOT NULL REFERENCES shop_customer (id) DEFERRABLE INITIALLY DEFERRED);
"""
#: Five source transactions, as in issue 27: A and D unrelated, B takes an e-mail the DR database gives
#: another customer after promotion, C adds an order to B's customer.
WORKLOAD = [
    "INSERT INTO shop_customer (email, name) VALUES ('a@example.com', 'A')",  # A: customer 1
    "INSERT INTO shop_customer (email, name) VALUES ('b@example.com', 'B')",  # B: customer 2
    "INSERT INTO shop_order (customer_id, total) VALUES (2, 9.99)",  # C: order 1, B's customer
    "WITH c AS (INSERT INTO shop_customer (email, name) VALUES ('d@example.com', 'D') RETURNING id) "
    "INSERT INTO shop_order (customer_id, total) SELECT id, 5 FROM c",  # D: customer 3, order 2
]


def test_a_deferred_foreign_key_holds_back_only_the_transaction_that_breaks_it(
    primary: LocalCluster, workdir: Path
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "shop_customer", "--table", "shop_order")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn) as conn:
            for statement in WORKLOAD:
                conn.execute(statement)
                conn.commit()
        # The failover lost all of it; then the promoted database registers another customer under B's
        # e-mail, before replay.
        events, url = lost_to_a_ledger(dsn, workdir / "orm.db", "shop_order, shop_customer")
        assert len(events) == 5
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (100, 'b@example.com', 'other')")
            conn.commit()

        runs = {}
        for mode in ("dry", "apply"):
            extra = ["--apply"] if mode == "apply" else []
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
            assert "Traceback" not in result.stderr and "stopped" not in result.stderr, result.stderr
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 3, (result.returncode, result.stderr)
            runs[mode] = summary
        applied = runs["apply"]
        assert applied["applied"] == 3  # A's customer, D's customer and order
        assert [(c["table"], c["key"]) for c in applied["conflicts"]] == [("public.shop_customer", "2")]
        (taken,) = applied["conflicts"]  # named by its constraint, with the DR's row and when it was written
        assert "shop_customer_email_key (the row under key 100)" in taken["why"], taken
        assert '"other"' in taken["current_row"] and taken["current_written_at"] is not None
        assert [(r["table"], r["key"]) for r in applied["refused"]] == [("public.shop_order", "1")]
        assert "shop_order_customer_id_fkey" in applied["refused"][0]["reason"]
        # The dry run was the apply's plan.
        assert runs["dry"]["would_apply"] == applied["applied"] and runs["dry"]["applied"] == 0
        for key in ("present", "conflicts", "refused"):
            assert runs["dry"][key] == applied[key], key
        with psycopg.connect(dsn) as conn:
            customers = conn.execute("SELECT id, email FROM shop_customer ORDER BY id").fetchall()
            orders = conn.execute("SELECT id, customer_id FROM shop_order ORDER BY id").fetchall()
        assert customers == [(1, "a@example.com"), (3, "d@example.com"), (100, "b@example.com")]
        assert orders == [(2, 3)]


def test_an_older_version_left_by_the_failover_is_stale_and_only_a_write_since_is_split_brain(
    primary: LocalCluster, workdir: Path
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "shop_customer").returncode == 0
        with psycopg.connect(dsn) as conn:
            # Key 1 reached the DR database; in the lost window it was deleted and registered again.
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (1, 'one@example.com', 'old')")
            conn.commit()
            conn.execute("DELETE FROM shop_customer WHERE id = 1")
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (1, 'one@example.com', 'new')")
            conn.commit()
            # Key 2 was lost, and the promoted database gave it to another row afterwards.
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (2, 'two@example.com', 'lost')")
            conn.commit()
        lost = [e for e in (r.as_event() for r in read_window(dsn, None, None)) if "old" not in e.row_json]
        assert len(lost) == 2
        with psycopg.connect(dsn) as conn:
            # What the DR database holds: key 1's older version (and its capture), nothing of key 2 —
            # as the failover left it, never written there (capture suppressed, as for the recoverer) …
            conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
            conn.execute("UPDATE shop_customer SET name = 'old' WHERE id = 1")
            conn.execute("DELETE FROM shop_customer WHERE id = 2")
            conn.execute(
                "DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", ([e.event_id for e in lost],)
            )
            conn.commit()
            # … until the application, writing to it after promotion, takes key 2.
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (2, 'dr@example.com', 'after')")
            conn.commit()
        url = f"sqlite:///{workdir}/stale.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(lost)
        result = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json")
        assert result.returncode == 3, result.stderr
        report = json.loads(result.stdout)
        assert [c["key"] for c in report["stale"]] == ["1"] and report["counts"]["stale"] == 1
        assert [c["key"] for c in report["split_brain"]] == ["2"] and report["counts"]["split_brain"] == 1
        assert "older version" in report["verdict"] and "split brain" in report["verdict"]


def test_what_depends_on_a_held_back_transaction_is_held_back_behind_it_named(
    primary: LocalCluster, workdir: Path
) -> None:
    """#27 item 2: B conflicts on its e-mail; C (an order of B's customer) and E (a later change of B's
    customer row) are held back behind B's event, named; A, D and F apply; dry run == apply."""
    workload = [
        *WORKLOAD[:3],
        "UPDATE shop_customer SET name = 'B again' WHERE id = 2",  # E: the same row as B
        WORKLOAD[3],
        "INSERT INTO shop_customer (email, name) VALUES ('f@example.com', 'F')",  # F: customer 4
    ]
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "shop_customer", "--table", "shop_order")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn) as conn:
            for statement in workload:
                conn.execute(statement)
                conn.commit()
        events, url = lost_to_a_ledger(dsn, workdir / "orm-hold.db", "shop_order, shop_customer")
        assert len(events) == 7
        b_event = next(
            e for e in events if e.table == "public.shop_customer" and e.key == "2" and e.op == "insert"
        )
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (100, 'b@example.com', 'other')")
            conn.commit()

        behind = (
            f"held back behind event {b_event.event_id} (txid {b_event.txid}, public.shop_customer key 2)"
        )
        expected = {
            (
                "public.shop_order",
                "1",
            ): f"{behind}: it references that row through shop_order_customer_id_fkey",
            ("public.shop_customer", "2"): f"{behind}: it writes the same row",
        }
        # One source transaction a chunk: the held-back set carries over from chunk to chunk.
        one_by_one = replay(dsn, events, chunk_events=1)
        assert {(r.event.table, r.event.key): r.reason for r in one_by_one.refused} == expected
        assert one_by_one.exit_code == 3 and len(one_by_one.conflicts) == 1

        runs = {}
        for mode in ("dry", "apply"):
            extra = ["--apply"] if mode == "apply" else []
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
            assert "Traceback" not in result.stderr, result.stderr
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 3, (result.returncode, result.stderr)
            runs[mode] = summary
        applied = runs["apply"]
        assert applied["applied"] == 4  # A's customer, D's customer and order, F's customer
        assert [(c["table"], c["key"]) for c in applied["conflicts"]] == [("public.shop_customer", "2")]
        refused = {(r["table"], r["key"]): r["reason"] for r in applied["refused"]}
        behind = (
            f"held back behind event {b_event.event_id} (txid {b_event.txid}, public.shop_customer key 2)"
        )
        assert refused == {
            (
                "public.shop_order",
                "1",
            ): f"{behind}: it references that row through shop_order_customer_id_fkey",
            ("public.shop_customer", "2"): f"{behind}: it writes the same row",
        }
        for key in ("conflicts", "refused"):
            assert runs["dry"][key] == applied[key], key
        assert runs["dry"]["would_apply"] == applied["applied"]
        text = run_cli(
            "replay", "--db", dsn, "--ledger", url, "--since", "1h", "--html", str(workdir / "r.html")
        )
        assert text.returncode == 3 and behind in text.stdout, text.stdout
        # The same chain on the HTML page, as Chromium renders it.
        dom = rendered_dom(workdir / "r.html")
        assert 'id="refused"' in dom and 'id="conflicts"' in dom
        assert html.escape(f"{behind}: it references that row through shop_order_customer_id_fkey") in dom
        with psycopg.connect(dsn) as conn:
            customers = conn.execute("SELECT id, name FROM shop_customer ORDER BY id").fetchall()
            orders = conn.execute("SELECT id, customer_id FROM shop_order ORDER BY id").fetchall()
        assert customers == [(1, "A"), (3, "D"), (4, "F"), (100, "other")]
        assert orders == [(2, 3)]


def test_a_change_that_takes_a_unique_value_a_held_back_one_gives_up_waits_behind_it(
    primary: LocalCluster, workdir: Path
) -> None:
    """#27 item 2, by unique value: T1 moves customer 1 off its e-mail and conflicts (the DR application
    renamed that customer after promotion); T2 registers customer 2 under the e-mail T1 gave up, T3 is
    an order of customer 2, T4 is unrelated. T2 is held back behind T1 by the unique key, T3 behind T2
    by the foreign key, T4 applies; the dry run says the same."""
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "shop_customer", "--table", "shop_order")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (1, 'x@example.com', 'X')")
            conn.commit()
        reached_dr = {r.as_event().event_id for r in read_window(dsn, None, None)}
        with psycopg.connect(dsn) as conn:
            for statement in (
                "UPDATE shop_customer SET email = 'x-old@example.com' WHERE id = 1",  # T1
                "INSERT INTO shop_customer (id, email, name) VALUES (2, 'x@example.com', 'Y')",  # T2
                "INSERT INTO shop_order (id, customer_id, total) VALUES (1, 2, 9.99)",  # T3
                "INSERT INTO shop_customer (id, email, name) VALUES (4, 'z@example.com', 'Z')",  # T4
            ):
                conn.execute(statement)
                conn.commit()
        lost = [
            e for e in (r.as_event() for r in read_window(dsn, None, None)) if e.event_id not in reached_dr
        ]
        assert [(e.table, e.key, e.op) for e in lost] == [
            ("public.shop_customer", "1", "update"),
            ("public.shop_customer", "2", "insert"),
            ("public.shop_order", "1", "insert"),
            ("public.shop_customer", "4", "insert"),
        ]
        t1, t2 = lost[0], lost[1]
        with psycopg.connect(dsn) as conn:
            # The DR database as the failover left it (never written there: capture suppressed) …
            conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
            conn.execute("DELETE FROM shop_order")
            conn.execute("DELETE FROM shop_customer WHERE id <> 1")
            conn.execute("UPDATE shop_customer SET email = 'x@example.com' WHERE id = 1")
            conn.execute(
                "DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", ([e.event_id for e in lost],)
            )
            conn.commit()
            # … and then the DR application renames customer 1.
            conn.execute("UPDATE shop_customer SET name = 'X renamed' WHERE id = 1")
            conn.commit()
        url = f"sqlite:///{workdir}/unique-held.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(lost)

        runs = {}
        for mode in ("dry", "apply"):
            extra = ["--apply"] if mode == "apply" else []
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
            assert "Traceback" not in result.stderr, result.stderr
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 3, (result.returncode, result.stderr)
            runs[mode] = summary
        applied = runs["apply"]
        assert [(c["table"], c["key"]) for c in applied["conflicts"]] == [("public.shop_customer", "1")]
        behind_t1 = f"held back behind event {t1.event_id} (txid {t1.txid}, public.shop_customer key 1)"
        behind_t2 = f"held back behind event {t2.event_id} (txid {t2.txid}, public.shop_customer key 2)"
        assert {(r["table"], r["key"]): r["reason"] for r in applied["refused"]} == {
            ("public.shop_customer", "2"): f"{behind_t1}: it takes the value x@example.com of "
            "shop_customer_email_key, which that change gives up",
            (
                "public.shop_order",
                "1",
            ): f"{behind_t2}: it references that row through shop_order_customer_id_fkey",
        }
        assert applied["applied"] == 1  # T4
        for key in ("conflicts", "refused"):
            assert runs["dry"][key] == applied[key], key
        assert runs["dry"]["would_apply"] == applied["applied"]
        with psycopg.connect(dsn) as conn:
            customers = conn.execute("SELECT id, email, name FROM shop_customer ORDER BY id").fetchall()
            orders = conn.execute("SELECT id FROM shop_order").fetchall()
        assert customers == [(1, "x@example.com", "X renamed"), (4, "z@example.com", "Z")]
        assert orders == []


def test_a_child_pointing_at_a_held_back_row_by_its_unique_value_waits_behind_it(
    primary: LocalCluster, workdir: Path
) -> None:
    """A foreign key to a unique column other than the parent's key (Django's `to_field`): B registers
    customer 2 under an e-mail the DR application has taken since, so B conflicts; C, a note pointing at
    B's customer by that e-mail, would otherwise land on the DR's customer. C is held back behind B; A
    applies."""
    schema = SCHEMA + (
        "CREATE TABLE shop_note (id bigint PRIMARY KEY, body text, customer_email text NOT NULL "
        "REFERENCES shop_customer (email) DEFERRABLE INITIALLY DEFERRED);"
    )
    with fresh_database(primary, schema) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "shop_customer", "--table", "shop_note")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn) as conn:
            for statement in (
                "INSERT INTO shop_customer (id, email, name) VALUES (1, 'a@example.com', 'A')",  # A
                "INSERT INTO shop_customer (id, email, name) VALUES (2, 'b@example.com', 'B')",  # B
                "INSERT INTO shop_note (id, body, customer_email) VALUES (1, 'vip', 'b@example.com')",  # C
            ):
                conn.execute(statement)
                conn.commit()
        events, url = lost_to_a_ledger(dsn, workdir / "to-field.db", "shop_note, shop_order, shop_customer")
        b_event = next(e for e in events if e.table == "public.shop_customer" and e.key == "2")
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (100, 'b@example.com', 'other')")
            conn.commit()
        result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", "--apply")
        summary = json.loads(result.stdout)
        assert result.returncode == summary["exit_code"] == 3, result.stderr
        assert [(c["table"], c["key"]) for c in summary["conflicts"]] == [("public.shop_customer", "2")]
        assert {(r["table"], r["key"]): r["reason"] for r in summary["refused"]} == {
            ("public.shop_note", "1"): f"held back behind event {b_event.event_id} (txid {b_event.txid}, "
            "public.shop_customer key 2): it references that row through shop_note_customer_email_fkey"
        }
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM shop_note").fetchone() == (0,)
            assert conn.execute("SELECT id FROM shop_customer ORDER BY id").fetchall() == [(1,), (100,)]


def test_a_commit_the_database_refuses_holds_back_only_the_transaction_that_causes_it(
    primary: LocalCluster, workdir: Path
) -> None:
    """A constraint checked only at COMMIT, despite replay's SET CONSTRAINTS ALL IMMEDIATE (a user
    trigger defers them again): the chunk's COMMIT fails, replay retries it one source transaction at a
    time and holds back only the order whose customer the DR database lacks; the dry run, which checks
    the deferred constraints where it would commit, says the same."""
    schema = SCHEMA + (
        "CREATE FUNCTION defer_again() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN SET CONSTRAINTS ALL DEFERRED; RETURN NULL; END$$;"
        "CREATE TRIGGER defer_again BEFORE INSERT ON shop_order FOR EACH STATEMENT EXECUTE FUNCTION defer_again();"
    )
    with fresh_database(primary, schema) as dsn:
        # Only the orders are captured; the customers are there on both sides — but for customer 2.
        assert run_cli("init", "--db", dsn, "--table", "shop_order").returncode == 0
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "INSERT INTO shop_customer (id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com')"
            )
            conn.commit()
            for order, customer in ((1, 1), (2, 2), (3, 1)):
                conn.execute(
                    "INSERT INTO shop_order (id, customer_id, total) VALUES (%s, %s, 1)", (order, customer)
                )
                conn.commit()
        events, url = lost_to_a_ledger(dsn, workdir / "commit.db", "shop_order")
        assert len(events) == 3
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM shop_customer WHERE id = 2")
            conn.commit()
        runs = {}
        for mode in ("dry", "apply"):
            extra = ["--apply"] if mode == "apply" else []
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
            assert "Traceback" not in result.stderr and "stopped" not in result.stderr, result.stderr
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 3, (result.returncode, result.stderr)
            runs[mode] = summary
        applied = runs["apply"]
        (refused,) = applied["refused"]
        assert (refused["table"], refused["key"]) == ("public.shop_order", "2")
        assert refused["reason"].startswith("the database rejected its source transaction at commit: ")
        assert "shop_order_customer_id_fkey" in refused["reason"], refused
        assert applied["applied"] == 2 == runs["dry"]["would_apply"]
        assert runs["dry"]["refused"] == applied["refused"]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT id FROM shop_order ORDER BY id").fetchall() == [(1,), (3,)]


def test_a_key_deleted_and_inserted_again_with_deletes_captured_is_replayed_over_in_order(
    primary: LocalCluster, workdir: Path
) -> None:
    """#27 item 5 with every change captured: the DR database holds the version the failover left; the
    ledger holds its delete and the new insert. Nothing collides (the delete's image is the DR's row);
    replay applies the delete, then the insert; a second run changes nothing."""
    with fresh_database(primary, SCHEMA) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "shop_customer").returncode == 0
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (1, 'one@example.com', 'old')")
            conn.commit()
        reached_dr = {r.as_event().event_id for r in read_window(dsn, None, None)}
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM shop_customer WHERE id = 1")
            conn.execute("INSERT INTO shop_customer (id, email, name) VALUES (1, 'one@example.com', 'new')")
            conn.commit()
        lost = [
            e for e in (r.as_event() for r in read_window(dsn, None, None)) if e.event_id not in reached_dr
        ]
        assert [(e.op, e.key) for e in lost] == [("delete", "1"), ("insert", "1")]
        with psycopg.connect(dsn) as conn:  # the DR database as the failover left it
            conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
            conn.execute("UPDATE shop_customer SET name = 'old' WHERE id = 1")
            conn.execute(
                "DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", ([e.event_id for e in lost],)
            )
            conn.commit()
        url = f"sqlite:///{workdir}/over.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(lost)
        report = json.loads(
            run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json").stdout
        )
        assert (
            report["stale"] == [] and report["split_brain"] == [] and report["counts"]["missing_in_dr"] == 2
        )
        for _ in range(2):
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", "--apply")
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 0, result.stderr
            assert summary["conflicts"] == [] and summary["refused"] == []
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT id, name FROM shop_customer").fetchall()
        assert rows == [(1, "new")]
        assert summary["applied"] == 0  # the second run: nothing left to write


def test_a_many_to_many_through_table_with_a_unique_pair(primary: LocalCluster, workdir: Path) -> None:
    """Django's many-to-many: a through table with its own key and a unique (order, tag) pair. After
    promotion the DR application tags order 1 with tag 1 itself. Lost: T1 tags order 1 with tag 1 (row
    10): a conflict on the pair; T2 removes row 10 and tags tag 2 instead (row 11): held back behind T1,
    it writes the same row; T3 tags tag 1 again (row 12): held back behind T2, whose delete gives up the
    pair; T4, unrelated, applies. Dry run == apply."""
    schema = SCHEMA + (
        "CREATE TABLE shop_tag (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);"
        "CREATE TABLE shop_order_tags (id bigserial PRIMARY KEY, "
        "order_id bigint NOT NULL REFERENCES shop_order (id) DEFERRABLE INITIALLY DEFERRED, "
        "tag_id bigint NOT NULL REFERENCES shop_tag (id) DEFERRABLE INITIALLY DEFERRED, UNIQUE (order_id, tag_id));"
    )
    with fresh_database(primary, schema) as dsn:
        tables = ["--table", "shop_order_tags", "--table", "shop_tag"]
        assert run_cli("init", "--db", dsn, *tables).returncode == 0
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO shop_customer (id, email) VALUES (1, 'a@example.com')")
            conn.execute("INSERT INTO shop_order (id, customer_id, total) VALUES (1, 1, 5)")
            conn.execute("INSERT INTO shop_tag VALUES (1, 'gift'), (2, 'rush')")
            conn.commit()
        reached_dr = {r.as_event().event_id for r in read_window(dsn, None, None)}
        with psycopg.connect(dsn) as conn:
            for statements in (
                ["INSERT INTO shop_order_tags (id, order_id, tag_id) VALUES (10, 1, 1)"],  # T1
                [  # T2
                    "DELETE FROM shop_order_tags WHERE id = 10",
                    "INSERT INTO shop_order_tags (id, order_id, tag_id) VALUES (11, 1, 2)",
                ],
                ["INSERT INTO shop_order_tags (id, order_id, tag_id) VALUES (12, 1, 1)"],  # T3
                ["INSERT INTO shop_tag VALUES (3, 'fragile')"],  # T4
            ):
                for statement in statements:
                    conn.execute(statement)
                conn.commit()
        lost = [
            e for e in (r.as_event() for r in read_window(dsn, None, None)) if e.event_id not in reached_dr
        ]
        assert [(e.key, e.op) for e in lost] == [
            ("10", "insert"),
            ("10", "delete"),
            ("11", "insert"),
            ("12", "insert"),
            ("3", "insert"),
        ]
        t1, t2_delete = lost[0], lost[1]
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
            conn.execute("DELETE FROM shop_order_tags")
            conn.execute("DELETE FROM shop_tag WHERE id = 3")
            conn.execute(
                "DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", ([e.event_id for e in lost],)
            )
            conn.commit()
            conn.execute(
                "INSERT INTO shop_order_tags (id, order_id, tag_id) VALUES (100, 1, 1)"
            )  # the DR application
            conn.commit()
        url = f"sqlite:///{workdir}/m2m.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(lost)
        runs = {}
        for mode in ("dry", "apply"):
            extra = ["--apply"] if mode == "apply" else []
            result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
            summary = json.loads(result.stdout)
            assert result.returncode == summary["exit_code"] == 3, (result.returncode, result.stderr)
            runs[mode] = summary
        applied = runs["apply"]
        (conflict,) = applied["conflicts"]
        assert (conflict["key"], conflict["why"].split(":")[0]) == (
            "10",
            "another unique key of the table holds a clashing row",
        )
        assert "shop_order_tags_order_id_tag_id_key (the row under key 100)" in conflict["why"], conflict
        behind_t1 = f"held back behind event {t1.event_id} (txid {t1.txid}, public.shop_order_tags key 10)"
        behind_t2 = f"held back behind event {t2_delete.event_id} (txid {t2_delete.txid}, public.shop_order_tags key 10)"
        assert [(r["key"], r["reason"]) for r in applied["refused"]] == [
            ("10", f"{behind_t1}: it writes the same row"),
            ("11", f"{behind_t1}: it writes the same row"),
            (
                "12",
                f'{behind_t2}: it takes the value {{"tag_id": 1, "order_id": 1}} of shop_order_tags_order_id_tag_id_key, which that change gives up',
            ),
        ]
        assert applied["applied"] == 1 == runs["dry"]["would_apply"]
        assert (
            runs["dry"]["refused"] == applied["refused"] and runs["dry"]["conflicts"] == applied["conflicts"]
        )
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT id FROM shop_order_tags").fetchall() == [(100,)]
            assert conn.execute("SELECT id FROM shop_tag ORDER BY id").fetchall() == [(1,), (2,), (3,)]
