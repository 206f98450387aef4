"""Every change, not only inserts (issue 22, first part): with `init --ops insert,update,delete`, a
table's updates and deletes reach the ledger through the relay with their images, reconcile counts a
lost one by its operation, and replay never applies a source transaction in part: one that holds a
lost update or delete is held back whole, so a database that was behind is never made wrong."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from drledger.drill.postgres.cluster import LocalCluster
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.source.postgres.outbox import SUPPRESS_SETTING, read_window
from tests.helpers import RelayFactory, fresh_database, run_cli, wait_for

SCHEMA = (
    "CREATE TABLE account (id int PRIMARY KEY, balance numeric(38,18) NOT NULL, tags jsonb, "
    "opened timestamptz, note text);"
    "CREATE TABLE history (id bigserial PRIMARY KEY, account_id int NOT NULL, delta numeric(38,18) NOT NULL)"
)


def ledger_events(url: str) -> list[LedgerEvent]:
    if not Path(url.removeprefix("sqlite:///")).exists():
        return []  # the relay has not made it yet
    with open_ledger(url) as ledger:
        return [r for r in ledger.read() if isinstance(r, LedgerEvent)]


def test_updates_and_deletes_reach_the_ledger_with_their_images(
    primary: LocalCluster, workdir: Path, relay_factory: RelayFactory
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli(
            "init", "--db", dsn, "--table", "account", "--table", "history", "--ops", "insert,update,delete"
        )
        assert init.returncode == 0 and "capturing insert, update, delete on public.account" in init.stdout
        check = run_cli("init", "--db", dsn, "--table", "account", "--check", "--json")
        findings = [f["what"] for f in json.loads(check.stdout)["findings"]]
        assert any("public.account is installed (capturing insert, update, delete)" in f for f in findings), (
            findings
        )
        url = f"sqlite:///{workdir}/ledger.db"
        relay = relay_factory(dsn, url)
        try:
            _transfer_and_check(dsn, url)
        finally:
            relay.kill()


def _transfer_and_check(dsn: str, url: str) -> None:
    """The application's changes, as the relay carries them into the ledger at `url`."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO account VALUES (1, 100.000000000000000001, '{\"vip\": true}', '2026-01-01 00:00+02', NULL),"
            " (2, 50, NULL, NULL, 'ünïcode'), (3, 7, '[1, 2]', NULL, NULL)"
        )
        conn.commit()
        # A transfer: two updates and a history row, one transaction.
        conn.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
        conn.execute("UPDATE account SET balance = balance + 10, note = NULL WHERE id = 2")
        conn.execute("INSERT INTO history (account_id, delta) VALUES (1, -10)")
        conn.commit()
        conn.execute("DELETE FROM account WHERE id = 3")
        conn.commit()
        conn.execute("UPDATE account SET id = 20 WHERE id = 2")  # a key that changes
        conn.commit()
    events = wait_for(
        lambda: (e := ledger_events(url)) and len(e) >= 9 and e, 120, "nine events in the ledger"
    )
    by_order = sorted(events, key=lambda e: (e.commit_ts_ms, e.lsn))
    assert [(e.op, e.table, e.key) for e in by_order] == [
        ("insert", "public.account", "1"),
        ("insert", "public.account", "2"),
        ("insert", "public.account", "3"),
        ("update", "public.account", "1"),
        ("update", "public.account", "2"),
        ("insert", "public.history", "1"),
        ("delete", "public.account", "3"),
        ("delete", "public.account", "2"),
        ("insert", "public.account", "20"),
    ]
    first_update = by_order[3]
    assert first_update.before_json is not None
    assert '"balance": 100.000000000000000001' in first_update.before_json
    assert '"balance": 90.000000000000000001' in first_update.row_json
    assert by_order[6].before_json is None and '"tags": [1, 2]' in by_order[6].row_json
    assert len({e.txid for e in by_order[3:6]}) == 1  # the transfer is one source transaction
    # The database's own fingerprints of these changes are the ledger's: nothing is missing.
    result = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["counts"]["missing_in_dr"] == 0


def lost_changes(dsn: str, workdir: Path, lose: Callable[[LedgerEvent], bool], restore: list[str]) -> str:
    """A failover's loss, in small: the outbox's events into an embedded ledger; then the events `lose`
    picks taken out of the outbox and the DR's rows set back by `restore` (capture suppressed, as the
    recoverer's session would: the DR never made those changes). The ledger's URL."""
    events = [r.as_event() for r in read_window(dsn, None, None)]
    url = f"sqlite:///{workdir}/ledger-{len(events)}.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(events)
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config(%s, 'on', false)", (SUPPRESS_SETTING,))
        for statement in restore:
            conn.execute(statement)
        lost = [e.event_id for e in events if lose(e)]
        conn.execute("DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", (lost,))
        conn.commit()
    return url


def captured_bank(dsn: str) -> None:
    init = run_cli(
        "init", "--db", dsn, "--table", "account", "--table", "history", "--ops", "insert,update,delete"
    )
    assert init.returncode == 0, init.stderr
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO account (id, balance, opened) VALUES (1, 100, '2026-01-01 00:00+02'), (2, 50, NULL)"
        )
        conn.commit()


def transfer(conn: psycopg.Connection[Any], amount: int) -> None:
    conn.execute("UPDATE account SET balance = balance - %s WHERE id = 1", (amount,))
    conn.execute("UPDATE account SET balance = balance + %s WHERE id = 2", (amount,))
    conn.execute("INSERT INTO history (account_id, delta) VALUES (1, %s)", (-amount,))
    conn.commit()


def bank(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT id, balance, opened, note FROM account ORDER BY id").fetchall(),
            conn.execute("SELECT id, account_id, delta FROM history ORDER BY id").fetchall(),
        )


def replay_json(dsn: str, url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--json", *extra)
    return result.returncode, json.loads(result.stdout)


def printed_recoverer(dsn: str) -> tuple[str, str]:
    """A recoverer made of exactly what `init --print-grants` prints for it (run as the superuser, once
    init has run); its name and its DSN."""
    role = f"rec_{uuid.uuid4().hex[:6]}"
    printed = run_cli(
        "init",
        "--db",
        dsn,
        "--table",
        "account",
        "--table",
        "history",
        "--print-grants",
        "--role",
        f"recoverer={role}",
    )
    assert printed.returncode == 0, printed.stderr
    mine = [line.rstrip(";") for line in printed.stdout.splitlines() if f'"{role}"' in line]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in mine:
            conn.execute(statement)
    return role, dsn.replace("postgres@", f"{role}@", 1)


def test_lost_updates_and_deletes_are_replayed_in_order_onto_the_rows_they_changed(
    primary: LocalCluster, workdir: Path
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        captured_bank(dsn)
        # Replayed by a recoverer holding exactly the printed grants: updates and deletes need their own.
        role, recoverer = printed_recoverer(dsn)
        with psycopg.connect(dsn) as conn:
            transfer(conn, 10)
            for _ in range(300):  # a hot row: one transaction each
                conn.execute("UPDATE account SET balance = balance + 0.000000000000000001 WHERE id = 1")
                conn.commit()
            conn.execute("INSERT INTO account (id, balance) VALUES (3, 1)")
            conn.commit()
            conn.execute("UPDATE account SET note = 'closing' WHERE id = 3")
            conn.execute("DELETE FROM account WHERE id = 3")
            conn.commit()
        truth = bank(dsn)
        url = lost_changes(
            dsn,
            workdir,
            lambda e: e.op != "insert" or e.table == "public.history" or e.key == "3",
            [
                "UPDATE account SET balance = CASE id WHEN 1 THEN 100 ELSE 50 END",
                "DELETE FROM account WHERE id = 3",
                "DELETE FROM history",
            ],
        )
        saved = workdir / "lost.json"
        found = run_cli(
            "reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json", "--save", str(saved)
        )
        report = json.loads(found.stdout)
        assert report["exit_code"] == 1, report["verdict"]
        assert report["missing_by_op"] == {"insert": 2, "update": 303, "delete": 1}
        code, dry = replay_json(recoverer, url)
        assert code == 0 and dry["would_apply"] == 306 and bank(dsn) != truth, dry  # a rehearsal only
        code, applied = replay_json(recoverer, url, "--apply")
        assert code == 0 and applied["applied"] == 306, applied
        assert (applied["conflicts"], applied["refused"]) == ([], [])
        assert bank(dsn) == truth  # every balance, the history, the deleted row gone
        code, again = replay_json(dsn, url, "--apply")
        assert code == 0 and again["planned_transactions"] == 0, again  # nothing is missing any more
        # The same lost changes applied again from the report saved before: every one already replayed
        # (a row changed again later in the plan is proven by the outbox's record, the last by the row).
        rerun = run_cli("replay", "--db", dsn, "--from", str(saved), "--apply", "--json")
        document = json.loads(rerun.stdout)
        assert rerun.returncode == 0 and document["applied"] == 0, rerun.stdout
        assert document["already_replayed"] == 306, document
        assert bank(dsn) == truth
        verdict = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json")
        assert verdict.returncode == 0, verdict.stdout
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_a_change_the_dr_row_never_saw_holds_its_whole_transaction_back(
    primary: LocalCluster, workdir: Path
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        captured_bank(dsn)
        with psycopg.connect(dsn) as conn:
            transfer(conn, 10)
            conn.execute("INSERT INTO account (id, balance) VALUES (4, 4)")  # unrelated
            conn.commit()
        url = lost_changes(
            dsn,
            workdir,
            lambda e: e.op != "insert" or e.table == "public.history" or e.key == "4",
            [
                "UPDATE account SET balance = CASE id WHEN 1 THEN 100 ELSE 50 END",
                "DELETE FROM account WHERE id = 4",
                "DELETE FROM history",
            ],
        )
        with psycopg.connect(dsn) as conn:  # after promotion, the DR's application moved account 1
            conn.execute("UPDATE account SET balance = 55 WHERE id = 1")
            conn.commit()
        # Reconcile lists it beforehand: the row is neither before nor after the lost update, and the
        # DR's own capture wrote it since (split brain), with all three versions.
        found = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json")
        report = json.loads(found.stdout)
        assert found.returncode == 3 and [c["key"] for c in report["split_brain"]] == ["1"], found.stdout
        (collision,) = report["split_brain"]
        assert collision["op"] == "update" and '"balance": 100' in collision["ledger_before"]
        assert '"balance": 90' in collision["ledger_row"] and '"balance": 55' in collision["dr_row"]
        assert report["stale"] == []  # account 2 holds its before image: a plain loss
        code, dry = replay_json(dsn, url)
        code, applied = replay_json(dsn, url, "--apply")
        assert code == 3 and applied["applied"] == 1, applied  # the unrelated insert
        (conflict,) = applied["conflicts"]
        assert (
            conflict["key"] == "1"
            and "neither the change's before image nor its after image" in conflict["why"]
        )
        assert '"balance": 100' in conflict["ledger_before"] and '"balance": 90' in conflict["ledger_row"]
        assert '"balance": 55' in conflict["current_row"], conflict
        held = {(r["table"], r["key"]): r["reason"] for r in applied["refused"]}
        assert set(held) == {("public.account", "2"), ("public.history", "1")}, held
        assert all("held back with its source transaction" in reason for reason in held.values())
        assert (dry["would_apply"], len(dry["conflicts"]), len(dry["refused"])) == (1, 1, 2)  # the plan
        accounts, history = bank(dsn)
        assert [(a[0], a[1]) for a in accounts] == [(1, 55), (2, 50), (4, 4)] and history == []


def test_an_update_that_moves_a_row_between_partitions_is_a_delete_and_an_insert(
    primary: LocalCluster,
) -> None:
    ddl = (
        "CREATE TABLE visit (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
        "CREATE TABLE visit_eu PARTITION OF visit FOR VALUES IN ('eu');"
        "CREATE TABLE visit_us PARTITION OF visit FOR VALUES IN ('us')"
    )
    with fresh_database(primary, ddl) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "visit", "--ops", "update,insert,delete")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO visit VALUES (1, 'eu', 1)")
            conn.execute("UPDATE visit SET region = 'us' WHERE id = 1")  # to another partition: a new key
            conn.execute("UPDATE visit_us SET v = 5 WHERE id = 1")  # straight into the partition
            conn.execute("DELETE FROM visit WHERE id = 1")
        changes = [(r.op, r.key, r.before_json is not None) for r in read_window(dsn, None, None)]
        eu, us = '{"id": 1, "region": "eu"}', '{"id": 1, "region": "us"}'
        assert changes == [
            ("insert", eu, False),
            ("delete", eu, False),
            ("insert", us, False),
            ("update", us, True),
            ("delete", us, False),
        ]
        assert run_cli("init", "--db", dsn, "--table", "visit", "--ops", "delete").returncode == 2


TRUNCATABLE = (
    "CREATE TABLE customer (id int PRIMARY KEY);"
    "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customer);"
    "CREATE TABLE visit (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
    "CREATE TABLE visit_eu PARTITION OF visit FOR VALUES IN ('eu');"
    "CREATE TABLE scratch (id int PRIMARY KEY);"
    "INSERT INTO customer VALUES (1); INSERT INTO orders VALUES (1, 1); INSERT INTO visit VALUES (1, 'eu');"
    "INSERT INTO scratch VALUES (1)"
)


def refused(conn: psycopg.Connection[Any], statement: str) -> tuple[str, str]:
    """The message and hint `statement` fails with (rolled back): drledger's refusal, not a missing
    privilege."""
    try:
        conn.execute(statement)
    except psycopg.errors.ProhibitedSqlStatementAttempted as exc:
        conn.rollback()
        return exc.diag.message_primary or "", exc.diag.message_hint or ""
    raise AssertionError(f"{statement} was not refused")


def test_a_truncate_of_a_captured_table_is_refused_in_one_sentence_and_the_rows_stay(
    primary: LocalCluster,
) -> None:
    """Issue 22: TRUNCATE fires no row trigger, so nothing of it could reach the ledger. On PostgreSQL
    init refuses it on every captured table and partition, for every role, however it is reached."""
    app = f"app_{uuid.uuid4().hex[:6]}"
    with fresh_database(primary, TRUNCATABLE) as dsn:
        for _ in range(2):  # init twice: one refusal trigger per table all the same
            init = run_cli("init", "--db", dsn, "--table", "orders", "--table", "visit")
            assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            triggers = conn.execute(
                "SELECT tgrelid::regclass::text, count(*) FROM pg_trigger WHERE tgname = 'drledger_capture_truncate' "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert triggers == [("orders", 1), ("visit", 1), ("visit_eu", 1)]
            # It only raises: it runs with the truncating role's rights, never drledger's (issue 21).
            assert conn.execute(
                "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'drledger.refuse_truncate'::regproc"
            ).fetchone() == (False, ["search_path=pg_catalog, pg_temp"])
            conn.execute(f"CREATE ROLE {app} LOGIN")
            conn.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {app}"
            )
        try:
            with psycopg.connect(dsn.replace("postgres@", f"{app}@", 1)) as conn:
                message, hint = refused(conn, "TRUNCATE orders")
                assert message == (
                    "drledger captures public.orders: TRUNCATE would leave no trace in the DR ledger; "
                    "use DELETE, which is captured, or stop capturing the table first"
                )
                assert hint == (
                    "To stop capturing public.orders, its owner drops the drledger_capture triggers on it "
                    "and on its partitions."
                )
                # The partitioned table, a partition, a list of tables, and a cascade from an uncaptured one.
                assert refused(conn, "TRUNCATE visit")[0].startswith("drledger captures public.visit")
                assert refused(conn, "TRUNCATE visit_eu")[0].startswith(
                    "drledger captures public.visit_eu (a partition of public.visit): TRUNCATE would leave"
                )
                assert "public.orders" in refused(conn, "TRUNCATE scratch, orders")[0]
                assert "public.orders" in refused(conn, "TRUNCATE customer CASCADE")[0]
                conn.execute("TRUNCATE scratch")  # an uncaptured table truncates as ever
                conn.commit()
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP OWNED BY {app}")
                conn.execute(f"DROP ROLE {app}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM orders), "
                "(SELECT count(*) FROM visit), (SELECT count(*) FROM scratch), (SELECT count(*) FROM drledger.outbox)"
            ).fetchone()
            assert counts == (1, 1, 1, 0, 0)  # every captured row stays, and no event was minted

            # init --check shows the refusal, and names one taken away as it names a missing capture trigger.
            def check(table: str = "orders") -> tuple[int, dict[str, tuple[bool, str | None]]]:
                result = run_cli("init", "--db", dsn, "--table", table, "--check", "--json")
                findings = json.loads(result.stdout)["findings"]
                return result.returncode, {
                    f["what"]: (f["ok"], f["fix"]) for f in findings if "TRUNCATE" in f["what"]
                }

            assert check()[1] == {
                "TRUNCATE of public.orders is refused (it would leave no trace in the ledger)": (True, None)
            }
            conn.execute("ALTER TABLE orders DISABLE TRIGGER drledger_capture_truncate")
            code, said = check()
            assert code == 1 and said == {
                "TRUNCATE of public.orders is not refused: its drledger_capture_truncate trigger is disabled, "
                "and a TRUNCATE would leave no trace in the ledger": (
                    False,
                    "run drledger init --table public.orders",
                )
            }, said
            conn.execute("DROP TRIGGER drledger_capture_truncate ON orders")
            conn.execute("DROP TRIGGER drledger_capture_truncate ON visit_eu")
            assert "public.orders is not refused: its drledger_capture_truncate trigger is missing" in str(
                check()
            )
            code, said = check("visit")
            assert code == 1 and said == {
                "TRUNCATE of public.visit is refused (it would leave no trace in the ledger)": (True, None),
                "the partition public.visit_eu of public.visit has no TRUNCATE refusal": (
                    False,
                    "run drledger init --table 'public.visit' again",
                ),
            }, said
            assert run_cli("init", "--db", dsn, "--table", "orders", "--table", "visit").returncode == 0
            assert check()[0] == 0 and check("visit")[0] == 0
