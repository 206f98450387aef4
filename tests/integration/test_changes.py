"""Every change, not only inserts (issue 22, first part): with `init --ops insert,update,delete`, a
table's updates and deletes reach the ledger through the relay with their images, reconcile counts a
lost one by its operation, and replay never applies a source transaction in part: one that holds a
lost update or delete is held back whole, so a database that was behind is never made wrong."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_lost_transaction_with_updates_is_held_back_whole_and_counted_by_operation(
    primary: LocalCluster, workdir: Path
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli(
            "init", "--db", dsn, "--table", "account", "--table", "history", "--ops", "insert,update,delete"
        )
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO account (id, balance) VALUES (1, 100), (2, 50)")
            conn.commit()
            conn.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
            conn.execute("UPDATE account SET balance = balance + 10 WHERE id = 2")
            conn.execute("INSERT INTO history (account_id, delta) VALUES (1, -10)")
            conn.commit()
            conn.execute("INSERT INTO account (id, balance) VALUES (3, 1)")  # an unrelated insert
            conn.commit()
        events = [r.as_event() for r in read_window(dsn, None, None)]
        url = f"sqlite:///{workdir}/ledger.db"
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(events)
        # The failover: the DR database holds the state before the transfer and before account 3.
        lost = [e.event_id for e in events if e.op != "insert" or e.table == "public.history" or e.key == "3"]
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT set_config(%s, 'on', false)", (SUPPRESS_SETTING,))
            conn.execute(
                "UPDATE account SET balance = CASE id WHEN 1 THEN 100 ELSE 50 END WHERE id IN (1, 2)"
            )
            conn.execute("DELETE FROM account WHERE id = 3")
            conn.execute("TRUNCATE history")
            conn.execute("DELETE FROM drledger.outbox WHERE id = ANY(%s::uuid[])", (lost,))
            conn.commit()
        result = run_cli("reconcile", "--db", dsn, "--ledger", url, "--since", "1h", "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 3 and report["exit_code"] == 3, result.stdout + result.stderr
        assert report["missing_by_op"] == {"insert": 2, "update": 2}, report["missing_by_op"]
        assert "2 lost events are updates or deletes (2 updates)" in report["verdict"], report["verdict"]
        replayed = run_cli("replay", "--db", dsn, "--ledger", url, "--since", "1h", "--apply", "--json")
        outcome = json.loads(replayed.stdout)
        assert replayed.returncode == 3 and outcome["applied"] == 1, replayed.stdout + replayed.stderr
        held = {(r["table"], r["key"]): r["reason"] for r in outcome["refused"]}
        assert set(held) == {("public.account", "1"), ("public.account", "2"), ("public.history", "1")}
        assert "a lost update" in held[("public.account", "1")]
        assert "was refused or held back" in held[("public.history", "1")]  # the transfer's insert waits too
        with psycopg.connect(dsn) as conn:
            # Behind, still consistent: the transfer is not half applied; the unrelated insert is back.
            assert conn.execute("SELECT id, balance FROM account ORDER BY id").fetchall() == [
                (1, 100),
                (2, 50),
                (3, 1),
            ]
            assert conn.execute("SELECT count(*) FROM history").fetchone() == (0,)


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
