"""The command line as an operator meets it: one clear sentence and exit code 2 on bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg

from drledger.drill.postgres.cluster import LocalCluster
from tests.helpers import dsn_for, one_sentence, run_cli


def test_unreachable_database(workdir: Path) -> None:
    result = run_cli("init", "--db", "postgresql://drl:s3cret@127.0.0.1:1/x", "--table", "public.orders")
    one_sentence(result, "Cannot connect to the database", "127.0.0.1:1")
    assert "s3cret" not in result.stderr
    result = run_cli(
        "relay",
        "--db",
        "postgresql://drl:s3cret@127.0.0.1:1/x",
        "--ledger",
        f"sqlite:///{workdir}/l.db",
        "--state-dir",
        str(workdir / "state"),
    )
    # For the relay, a database that is away may come back: exit 75 asks its supervisor to restart it.
    one_sentence(result, "Cannot connect to the database", code=75)
    assert "s3cret" not in result.stderr


def test_wal_level_not_logical_says_how_to_fix_it(physical_only: LocalCluster, workdir: Path) -> None:
    with psycopg.connect(physical_only.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)")
    assert run_cli("init", "--db", physical_only.dsn, "--table", "orders").returncode == 0
    result = run_cli(
        "relay",
        "--db",
        physical_only.dsn,
        "--ledger",
        f"sqlite:///{workdir}/l.db",
        "--state-dir",
        str(workdir),
    )
    one_sentence(result, "wal_level is 'replica'", "ALTER SYSTEM SET wal_level = logical")
    check = run_cli("init", "--db", physical_only.dsn, "--table", "orders", "--check", "--json")
    assert check.returncode == 1
    report = json.loads(check.stdout)
    assert report["ok"] is False
    assert any("wal_level" in f["what"] and f["fix"] for f in report["findings"] if not f["ok"])


def test_unknown_table(database: str) -> None:
    one_sentence(
        run_cli("init", "--db", database, "--table", "public.nothing_here"),
        "public.nothing_here does not exist",
    )


def test_malformed_ledger_url(database: str) -> None:
    one_sentence(run_cli("ledger", "inspect", "kafka:/nohost"), "kafka://host:port/topic")
    one_sentence(run_cli("relay", "--db", database, "--ledger", "ftp://x/y"), "unknown scheme")


def test_unreachable_broker(database: str, workdir: Path) -> None:
    run_cli("init", "--db", database, "--table", "orders")
    result = run_cli(
        "relay", "--db", database, "--ledger", "kafka://127.0.0.1:1/ledger", "--state-dir", str(workdir)
    )
    # A broker that is away may come back: the relay asks its supervisor to restart it (exit 75).
    one_sentence(result, "Cannot reach the Kafka broker", "127.0.0.1:1", code=75)


def test_inspect_json_keys_and_malformed_records(workdir: Path) -> None:
    from drledger.events import LedgerEvent
    from drledger.ledger import open_ledger

    url = f"sqlite:///{workdir}/ledger.db"
    with open_ledger(url, writer=True) as ledger:
        event = LedgerEvent.from_outbox(
            event_id="00000000-0000-4000-8000-0000000000e1",
            table="public.t",
            key="1",
            op="insert",
            row_json='{"id": 1}',
            txid=5,
            lsn=9,
            commit_ts_ms=1_800_000_000_000,
        )
        ledger.publish([event, event])
    with sqlite3.connect(workdir / "ledger.db") as db:
        db.execute("INSERT INTO ledger_events (body) VALUES (?)", (b"{broken",))
    result = run_cli("ledger", "inspect", url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "events",
        "distinct",
        "duplicates",
        "conflicting",
        "malformed",
        "first_commit",
        "last_commit",
        "tables",
        "exit_code",
    }
    assert (summary["events"], summary["distinct"], summary["duplicates"], summary["malformed"]) == (
        2,
        1,
        1,
        1,
    )
    assert summary["first_commit"].startswith("2027-01-15T08:00:00")
    assert summary["tables"] == {"public.t": 1}
    table_view = run_cli("ledger", "inspect", url)
    assert table_view.returncode == 0 and "malformed" in table_view.stdout


def test_prune_is_a_dry_run_unless_applied(database: str) -> None:
    run_cli("init", "--db", database, "--table", "orders")
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO orders (customer) VALUES ('a'), ('b')")
        conn.execute("UPDATE drledger.outbox SET created_at = now() - interval '8 days'")
    dry = json.loads(run_cli("prune", "--db", database, "--older-than", "7d", "--json").stdout)
    assert (dry["rows"], dry["applied"]) == (2, False)
    applied = json.loads(run_cli("prune", "--db", database, "--older-than", "7d", "--apply", "--json").stdout)
    assert (applied["rows"], applied["applied"]) == (2, True)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM drledger.outbox").fetchone() == (0,)


def test_dsn_helper_targets_the_test_cluster(primary: LocalCluster) -> None:
    assert dsn_for(primary, "x").endswith(f":{primary.port}/x")


def test_json_exit_code_is_the_process_exit_code_for_every_ending(database: str, workdir: Path) -> None:
    """Success, a finding, a refused input, a database away and a usage error: under --json, stdout
    holds one document whose exit_code is the exit status the process ends with."""
    run_cli("init", "--db", database, "--table", "orders")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS drl_json_nobody")
        conn.execute("CREATE ROLE drl_json_nobody")
    ledger = f"sqlite:///{workdir}/none.db"
    cases = [
        ("prune", "--db", database, "--older-than", "7d"),
        ("init", "--db", database, "--table", "orders", "--check"),
        ("init", "--db", database, "--table", "orders", "--check", "--as", "reader=drl_json_nobody"),
        ("init", "--db", database, "--table", "no_such_table", "--check"),
        ("replay", "--db", database, "--from", str(workdir / "absent.json")),
        ("fence", "--db", database, "--ledger", ledger, "--since", "1h"),
        ("reconcile", "--db", "postgresql://drl:s3cret@127.0.0.1:1/x", "--ledger", ledger, "--since", "1h"),
        ("ledger", "inspect", "--ledger", "kafka://"),
        ("reconcile", "--no-such-option"),
        ("watch", "--db", database, "--ledger", ledger, "--once"),  # the ledger unreadable: 1
        ("watch", "--db", database, "--ledger", ledger, "--interval", "0s"),
        ("drill", "--lag", "fast"),
        ("drill", "--ops", "delete"),
    ]
    codes = set()
    for args in cases:
        result = run_cli(*args, "--json")
        document = json.loads(result.stdout)
        assert document["exit_code"] == result.returncode, (args, result.stdout, result.stderr)
        assert "s3cret" not in result.stdout
        codes.add(result.returncode)
    assert codes == {0, 1, 2}, codes


def test_a_relay_slot_or_broker_port_it_cannot_use_is_exit_2_before_debezium_starts(
    database: str, workdir: Path
) -> None:
    """Bad input, not a passing outage: exit 2 (never 75, which a supervisor would restart forever),
    one sentence, and no state directory made (nothing was started)."""
    run_cli("init", "--db", database, "--table", "orders")
    ledger = f"sqlite:///{workdir}/l.db"
    for args, fragment in (
        (("--ledger", ledger, "--slot", "Bad-Slot"), "Bad-Slot"),
        (("--ledger", "kafka://127.0.0.1:99999/ledger"), "99999"),
    ):
        state = workdir / f"state-{len(fragment)}"
        result = run_cli("relay", "--db", database, *args, "--state-dir", str(state))
        one_sentence(result, fragment, code=2)
        assert not state.exists() and "Traceback" not in result.stderr
