"""MySQL sources end to end, on MariaDB servers the tests start (`version=8.0.2`, the code path Debezium's
MySQL connector takes on Aurora MySQL 3): capture, the relay, reconcile, replay, fence and init --check,
with every column type a user brings and the application writing as its own plain user."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from drledger.drill.mysql.server import LocalMariaDB, MariaDBSet
from drledger.events import LedgerEvent, row_digest
from drledger.ledger import open_ledger
from drledger.source import open_source
from tests.helpers import DRLEDGER, SLICED_OUTBOX, run_cli, slices_are_cut_between_milliseconds, wait_for

pytestmark = pytest.mark.debezium

TABLES = r"""
CREATE TABLE `Sales`.`Order` (
    region VARCHAR(8), id INT, amount DECIMAL(65,30), placed DATETIME(6), seen TIMESTAMP(6) NULL,
    doc JSON, blob_ VARBINARY(16), big MEDIUMBLOB, e ENUM('a','b'), s SET('x','y'), flags BIT(5),
    note TEXT CHARACTER SET utf8mb4, f DOUBLE, `select` VARCHAR(10), PRIMARY KEY (region, id));
CREATE TABLE `Sales`.customer (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,
    name_len INT AS (CHAR_LENGTH(name)) STORED);
CREATE TABLE `Sales`.line (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL,
    qty INT NOT NULL DEFAULT 1, FOREIGN KEY (customer_id) REFERENCES `Sales`.customer (id));
"""
CAPTURED = ['"Sales"."Order"', '"Sales".customer', '"Sales".line']
IMAGE = (
    "SELECT JSON_OBJECT('r', region, 'i', id, 'a', amount, 'p', placed, 's', UNIX_TIMESTAMP(seen), 'd', doc, "
    "'bl', HEX(blob_), 'big', MD5(big), 'e', e, 'ss', s, 'fl', flags + 0, 'n', note, 'f', f, 'sel', `select`) "
    "FROM `Sales`.`Order` ORDER BY region, id"
)


@dataclass
class Shop:
    server: LocalMariaDB
    dsn: str
    app_dsn: str
    workdir: Path

    def cli(self, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--db", db or self.dsn, timeout=300)

    def rows(self, statement: str) -> list[tuple]:
        return self.server.execute(statement)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[LocalMariaDB]:
    with MariaDBSet() as servers:
        yield servers.server("primary")


@pytest.fixture
def shop(mariadb: LocalMariaDB, tmp_path: Path) -> Iterator[Shop]:
    mariadb.execute("DROP DATABASE IF EXISTS drledger")
    mariadb.execute("DROP DATABASE IF EXISTS `Sales`")
    mariadb.execute("CREATE DATABASE `Sales`")
    for statement in TABLES.split(";"):
        if statement.strip():
            mariadb.execute(statement)
    app = f"app_{uuid.uuid4().hex[:6]}"
    mariadb.execute(f"CREATE USER '{app}'@'%'")
    mariadb.execute(f"GRANT SELECT, INSERT ON `Sales`.* TO '{app}'@'%'")
    yield Shop(mariadb, mariadb.dsn("Sales"), f"mysql://{app}@127.0.0.1:{mariadb.port}/Sales", tmp_path)
    mariadb.execute(f"DROP USER '{app}'@'%'")


def write_as_the_application(shop: Shop, *, session_time_zone: str = "+05:30") -> None:
    """Rows of every type, written by the application's own user in a time zone of its own."""
    import pymysql

    conn = pymysql.connect(
        host="127.0.0.1",
        port=shop.server.port,
        user=shop.app_dsn.split("//")[1].split("@")[0],
        database="Sales",
        charset="utf8mb4",
        autocommit=False,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SET time_zone = '{session_time_zone}'")
            cursor.execute(
                "INSERT INTO `Order` VALUES ('EU', 1, 12345678901234567890.012345678901234567890123456789, "
                '\'2026-11-29 10:00:00.123456\', \'2026-11-29 10:00:00.5\', \'{"a": [1, {"b": null}], "ü": "😀"}\', '
                "X'00FF10', REPEAT(X'AB', 70000), 'b', 'x,y', b'10101', 'naïve 😀 \"q\" \\\\ back', 0.1, 'from'), "
                "('US', 2, -0.5, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, 1e300, NULL)"
            )
            conn.commit()
            cursor.execute("INSERT INTO customer (name) VALUES ('Zoë')")
            customer = cursor.lastrowid
            cursor.execute(
                "INSERT INTO line (customer_id, qty) VALUES (%s, 1), (%s, 2)", (customer, customer)
            )
            conn.commit()
            # The application tries to hide a row and to forge an event: neither is its to do.
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute("INSERT INTO drledger.replay_session VALUES (CONNECTION_ID())")
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute(
                    "INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, payload, created_at) "
                    "VALUES (UUID(), 'Sales.customer', '9', '{}', NOW())"
                )
            conn.rollback()
    finally:
        conn.close()


def start_relay(shop: Shop, url: str, db: str | None = None) -> subprocess.Popen[str]:
    """`drledger relay` from the shop's database (or `db`) to `url`, its output in relay.log."""
    log = (shop.workdir / "relay.log").open("w")
    return subprocess.Popen(
        [
            *DRLEDGER,
            "relay",
            "--db",
            db or shop.dsn,
            "--ledger",
            url,
            "--state-dir",
            str(shop.workdir / "state"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ledger_events(url: str) -> list[LedgerEvent]:
    try:
        with open_ledger(url) as ledger:
            return [r for r in ledger.read() if isinstance(r, LedgerEvent)]
    except Exception:
        return []


def test_every_type_survives_capture_relay_and_replay(shop: Shop) -> None:
    init = shop.cli(
        "init",
        *(a for t in ["`Sales`.`Order`", "Sales.customer", "Sales.line"] for a in ("--table", t)),
        "--json",
    )
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["installed"] == CAPTURED
    url = f"sqlite:///{shop.workdir}/ledger.db"
    relay = start_relay(shop, url)
    try:
        # Streaming (not the first snapshot) once its heartbeat has written a row.
        wait_for(
            lambda: shop.rows("SELECT COUNT(*) FROM drledger.heartbeat") == [(1,)], 120, "the relay to stream"
        )
        write_as_the_application(shop)
        wait_for(lambda: len(ledger_events(url)) >= 5, 120, "the relay to publish the application's rows")
        time.sleep(1)
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(60) == 0, (shop.workdir / "relay.log").read_text()[-2000:]
    events = ledger_events(url)
    assert sorted(e.table for e in events) == sorted(
        ['"Sales"."Order"'] * 2 + ['"Sales".customer'] + ['"Sales".line'] * 2
    )
    outbox = {r[0]: r[1] for r in shop.rows("SELECT id, payload FROM drledger.outbox")}
    assert {e.event_id: e.row_json for e in events} == outbox  # the relay ships the text the trigger wrote
    assert all(e.row_sha256 == row_digest(outbox[e.event_id]) for e in events)
    lines = [e for e in events if e.table == '"Sales".line']
    assert len({e.txid for e in lines}) == 1  # one application transaction, one source transaction
    originals = (
        shop.rows(IMAGE),
        shop.rows("SELECT * FROM `Sales`.customer"),
        shop.rows("SELECT * FROM `Sales`.line"),
    )

    reconcile = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr

    # The failover: the rows and their outbox rows are gone, the counter stands where it stood.
    for table in ("`Sales`.line", "`Sales`.customer", "`Sales`.`Order`", "drledger.outbox"):
        shop.server.execute(f"DELETE FROM {table}")
    shop.server.execute("ALTER TABLE `Sales`.customer AUTO_INCREMENT = 1")
    lost = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert lost.returncode == 1 and json.loads(lost.stdout)["counts"]["missing_in_dr"] == 5
    dry = shop.cli("replay", "--ledger", url, "--since", "1h", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["would_apply"] == 5
    assert shop.rows("SELECT COUNT(*) FROM `Sales`.`Order`") == [(0,)]  # a rehearsal only
    applied = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = json.loads(applied.stdout)
    assert (result["applied"], result["refused"], result["conflicts"]) == (5, [], [])
    assert (
        shop.rows(IMAGE),
        shop.rows("SELECT * FROM `Sales`.customer"),
        shop.rows("SELECT * FROM `Sales`.line"),
    ) == originals
    assert [f["sequence"] for f in result["fenced"]] == [
        '"Sales".customer AUTO_INCREMENT',
        '"Sales".line AUTO_INCREMENT',
    ]
    shop.server.execute("INSERT INTO `Sales`.customer (name) VALUES ('after the failover')")
    assert shop.rows("SELECT MAX(id) > 1000 FROM `Sales`.customer") == [(1,)]  # fenced past the lost keys
    again = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert json.loads(again.stdout)["applied"] == 0  # idempotent
    assert shop.rows("SELECT COUNT(*) FROM drledger.replay_session") == [(0,)]


def test_a_forged_ledger_writes_nothing_on_mysql(shop: Shop) -> None:
    assert shop.cli("init", "--table", "Sales.customer").returncode == 0
    shop.server.execute("CREATE TABLE `Sales`.secret (id INT PRIMARY KEY, v TEXT)")

    def event(table: str, key: str, row: str, txid: int) -> LedgerEvent:
        # Each in a transaction of its own, so each is refused for its own reason.
        return LedgerEvent.from_outbox(
            event_id=str(uuid.uuid4()),
            table=table,
            key=key,
            op="insert",
            row_json=row,
            txid=txid,
            lsn=1,
            commit_ts_ms=int(time.time() * 1000),
        )

    forged = [
        event('"Sales".secret', "1", '{"id": 1, "v": "x"}', 1),  # never captured
        event('"Sales".customer', "5", '{"id": 6, "name": "n", "name_len": 1}', 2),  # key is not the image's
        event('"Sales".customer', "7", '{"id": 7, "name": "n", "admin": 1}', 3),  # a column the table lacks
        event('"Sales".customer', "8", '{"id": "eight", "name": "n"}', 4),  # a value that does not fit
        # a key AUTO_INCREMENT would jump to the end of its range for: every application insert then fails
        event('"Sales".customer', str(2**63 - 1), f'{{"id": {2**63 - 1}, "name": "n", "name_len": 1}}', 5),
    ]
    url = f"sqlite:///{shop.workdir}/forged.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(forged)
    result = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    reasons = {r["key"]: r["reason"] for r in json.loads(result.stdout)["refused"]}
    assert "not captured" in reasons["1"] and "holds key 6" in reasons["5"]
    assert "lacks: admin" in reasons["7"] and "rejects its row image" in reasons["8"]
    assert "too close to the end" in reasons[str(2**63 - 1)]
    assert shop.rows("SELECT COUNT(*) FROM `Sales`.customer") == [(0,)]
    shop.server.execute("INSERT INTO `Sales`.customer (name) VALUES ('the application, after replay')")
    assert shop.rows("SELECT COUNT(*) FROM `Sales`.secret") == [(0,)]


def test_a_row_image_nested_past_any_parser_is_one_refused_event_on_mysql(shop: Shop) -> None:
    assert shop.cli("init", "--table", "Sales.customer").returncode == 0

    def event(key: str, row: str, txid: int) -> LedgerEvent:
        return LedgerEvent.from_outbox(
            event_id=str(uuid.uuid4()),
            table='"Sales".customer',
            key=key,
            op="insert",
            row_json=row,
            txid=txid,
            lsn=1,
            commit_ts_ms=int(time.time() * 1000),
        )

    # A correct row_sha256 over 10,000 nested arrays, in a transaction of its own beside a plain row.
    deep = event("40", '{"id": 40, "name": ' + "[" * 10_000 + "]" * 10_000 + ', "name_len": 1}', 1)
    plain = event("1", '{"id": 1, "name": "Zoë", "name_len": 3}', 2)
    url = f"sqlite:///{shop.workdir}/deep.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish([deep, plain])
    for command in ("reconcile", "fence"):
        result = shop.cli(command, "--ledger", url, "--since", "1h", "--json")
        assert "Traceback" not in result.stderr and result.returncode in (0, 1, 3), (command, result.stderr)
    result = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    summary = json.loads(result.stdout)
    assert result.returncode == summary["exit_code"] == 3 and summary["applied"] == 1, result.stdout
    assert [(r["key"], r["reason"]) for r in summary["refused"]] == [
        ("40", "its row image nests deeper than drledger reads (1,024 levels)")
    ]
    assert shop.rows("SELECT id, name FROM `Sales`.customer") == [(1, "Zoë")]


def test_a_value_the_column_would_round_is_read_back_and_held_back_on_mysql(shop: Shop) -> None:
    assert shop.cli("init", "--table", "Sales.Order").returncode == 0
    write_as_the_application(shop)
    events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
    shop.server.execute("DELETE FROM `Sales`.`Order`")
    shop.server.execute("DELETE FROM drledger.outbox")
    rounded = next(e for e in events if '"amount"' in e.row_json)
    # More places than DECIMAL(65,30) keeps: MySQL rounds it with a note, not an error.
    row = re.sub(
        r'"amount": ?[-0-9.eE+]+', '"amount": 1.0050000000000000000000000000001', rounded.row_json, count=1
    )
    assert row != rounded.row_json, rounded.row_json
    forged = dataclasses.replace(rounded, row_json=row, row_sha256=row_digest(row))
    url = f"sqlite:///{shop.workdir}/rounded.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish([forged])
    result = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    (refusal,) = json.loads(result.stdout)["refused"]
    assert "read back differently" in refusal["reason"] and "column amount" in refusal["reason"], refusal
    assert shop.rows("SELECT COUNT(*) FROM `Sales`.`Order`") == [(0,)]  # rolled back, never rounded


def test_a_unique_value_the_dr_database_gave_another_row_is_a_named_conflict_on_mysql(shop: Shop) -> None:
    shop.server.execute(
        "CREATE TABLE `Sales`.member (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) UNIQUE)"
    )
    assert shop.cli("init", "--table", "Sales.member").returncode == 0
    shop.server.execute("INSERT INTO `Sales`.member (id, email) VALUES (1, 'a@example.com')")
    events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
    shop.server.execute("DELETE FROM `Sales`.member")
    shop.server.execute("DELETE FROM drledger.outbox")
    shop.server.execute(
        "INSERT INTO `Sales`.member (id, email) VALUES (50, 'a@example.com')"
    )  # after promotion
    url = f"sqlite:///{shop.workdir}/unique.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(events)
    result = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    (conflict,) = json.loads(result.stdout)["conflicts"]
    assert "email (the row under key 50)" in conflict["why"] and '"id": 50' in conflict["current_row"], (
        conflict
    )
    assert shop.rows("SELECT id FROM `Sales`.member") == [(50,)]


def test_an_order_of_a_conflicting_member_is_held_back_behind_it_by_its_foreign_key_on_mysql(
    shop: Shop,
) -> None:
    """#27 item 2 on MySQL/MariaDB: member 1's e-mail is taken on the DR; the later note referencing member
    1 is held back behind member 1's event, named by its foreign key; member 2 applies; dry run == apply."""
    shop.server.execute(
        "CREATE TABLE `Sales`.member (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) UNIQUE)"
    )
    shop.server.execute(
        "CREATE TABLE `Sales`.note (id INT AUTO_INCREMENT PRIMARY KEY, member_id INT NOT NULL, "
        "CONSTRAINT note_member_fk FOREIGN KEY (member_id) REFERENCES `Sales`.member (id))"
    )
    assert shop.cli("init", "--table", "Sales.member", "--table", "Sales.note").returncode == 0
    shop.server.execute("INSERT INTO `Sales`.member (id, email) VALUES (1, 'a@example.com')")
    shop.server.execute("INSERT INTO `Sales`.note (id, member_id) VALUES (7, 1)")
    shop.server.execute("INSERT INTO `Sales`.member (id, email) VALUES (2, 'b@example.com')")
    events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
    assert len(events) == 3
    member = next(e for e in events if e.table.endswith("member") and e.key == "1")
    shop.server.execute("DELETE FROM `Sales`.note")
    shop.server.execute("DELETE FROM `Sales`.member")
    shop.server.execute("DELETE FROM drledger.outbox")
    shop.server.execute(
        "INSERT INTO `Sales`.member (id, email) VALUES (50, 'a@example.com')"
    )  # after promotion
    url = f"sqlite:///{shop.workdir}/held.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(events)
    runs = {}
    for mode, extra in (("dry", []), ("apply", ["--apply"])):
        result = shop.cli("replay", "--ledger", url, "--since", "1h", "--json", *extra)
        assert result.returncode == 3, result.stdout + result.stderr
        runs[mode] = json.loads(result.stdout)
    applied = runs["apply"]
    assert [c["key"] for c in applied["conflicts"]] == ["1"]
    (held,) = applied["refused"]
    assert held["key"] == "7" and held["reason"] == (
        f"held back behind event {member.event_id} (txid {member.txid}, {member.table} key 1): "
        "it references that row through note_member_fk"
    ), held
    assert runs["dry"]["refused"] == applied["refused"] and runs["dry"]["conflicts"] == applied["conflicts"]
    assert applied["applied"] == 1 == runs["dry"]["would_apply"]
    assert shop.rows("SELECT id FROM `Sales`.member ORDER BY id") == [(2,), (50,)]
    assert shop.rows("SELECT id FROM `Sales`.note") == []


def test_a_member_taking_an_email_a_held_back_change_gives_up_waits_behind_it_on_mysql(shop: Shop) -> None:
    """#27 item 2 by unique value, on MySQL/MariaDB: T1 moves member 1 off its e-mail and conflicts (the
    DR renamed member 1 after promotion); T2 registers member 2 under that e-mail: held back behind T1 by
    the unique key; T3, a note of member 2, behind T2 by its foreign key; T4 applies."""
    shop.server.execute(
        "CREATE TABLE `Sales`.member (id INT PRIMARY KEY, email VARCHAR(100), name VARCHAR(50), "
        "CONSTRAINT member_email UNIQUE (email))"
    )
    shop.server.execute(
        "CREATE TABLE `Sales`.note (id INT PRIMARY KEY, member_id INT NOT NULL, "
        "CONSTRAINT note_member_fk FOREIGN KEY (member_id) REFERENCES `Sales`.member (id))"
    )
    assert shop.cli("init", "--table", "Sales.member", "--table", "Sales.note").returncode == 0
    shop.server.execute("INSERT INTO `Sales`.member VALUES (1, 'x@example.com', 'X')")
    reached_dr = {r.as_event().event_id for r in open_source(shop.dsn).read_window(None, None)}
    shop.server.execute("UPDATE `Sales`.member SET email = 'x-old@example.com' WHERE id = 1")  # T1
    shop.server.execute("INSERT INTO `Sales`.member VALUES (2, 'x@example.com', 'Y')")  # T2
    shop.server.execute("INSERT INTO `Sales`.note VALUES (7, 2)")  # T3
    shop.server.execute("INSERT INTO `Sales`.member VALUES (4, 'z@example.com', 'Z')")  # T4
    lost = [
        e
        for e in (r.as_event() for r in open_source(shop.dsn).read_window(None, None))
        if e.event_id not in reached_dr
    ]
    assert [(e.key, e.op) for e in lost] == [
        ("1", "update"),
        ("2", "insert"),
        ("7", "insert"),
        ("4", "insert"),
    ]
    t1, t2 = lost[0], lost[1]
    shop.server.execute("DELETE FROM `Sales`.note")
    shop.server.execute("DELETE FROM `Sales`.member WHERE id <> 1")
    shop.server.execute("UPDATE `Sales`.member SET email = 'x@example.com' WHERE id = 1")
    shop.server.execute("DELETE FROM drledger.outbox")  # the DR as the failover left it
    shop.server.execute("UPDATE `Sales`.member SET name = 'X renamed' WHERE id = 1")  # after promotion
    url = f"sqlite:///{shop.workdir}/unique-held.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(lost)
    runs = {}
    for mode, extra in (("dry", []), ("apply", ["--apply"])):
        result = shop.cli("replay", "--ledger", url, "--since", "1h", "--json", *extra)
        assert result.returncode == 3, result.stdout + result.stderr
        runs[mode] = json.loads(result.stdout)
    applied = runs["apply"]
    assert [c["key"] for c in applied["conflicts"]] == ["1"]
    assert {r["key"]: r["reason"] for r in applied["refused"]} == {
        "2": f"held back behind event {t1.event_id} (txid {t1.txid}, {t1.table} key 1): it takes the value "
        "x@example.com of member_email, which that change gives up",
        "7": f"held back behind event {t2.event_id} (txid {t2.txid}, {t2.table} key 2): it references that "
        "row through note_member_fk",
    }
    assert runs["dry"]["refused"] == applied["refused"] and runs["dry"]["conflicts"] == applied["conflicts"]
    assert applied["applied"] == 1 == runs["dry"]["would_apply"]
    assert shop.rows("SELECT id, email, name FROM `Sales`.member ORDER BY id") == [
        (1, "x@example.com", "X renamed"),
        (4, "z@example.com", "Z"),
    ]
    assert shop.rows("SELECT id FROM `Sales`.note") == []


def test_init_check_names_each_missing_setting(shop: Shop) -> None:
    shop.server.execute("SET GLOBAL binlog_format = 'MIXED'")
    try:
        check = shop.cli("init", "--check", "--json")
    finally:
        shop.server.execute("SET GLOBAL binlog_format = 'ROW'")
    assert check.returncode == 1
    missing = {f["what"]: f["fix"] for f in json.loads(check.stdout)["findings"] if not f["ok"]}
    assert any("binlog_format" in what and "parameter group" in fix for what, fix in missing.items())
    assert any("outbox table is missing" in what for what in missing)


def test_init_check_names_each_account_that_may_truncate_a_captured_table(shop: Shop) -> None:
    """MySQL fires no trigger for TRUNCATE TABLE: it cannot be refused nor captured, so init --check names
    who may run it (it needs DROP), drledger's own roles aside, or says it could not tell."""
    import pymysql

    tables = ["--table", "Sales.customer", "--table", "Sales.line"]
    assert shop.cli("init", *tables).returncode == 0
    app = shop.app_dsn.split("//")[1].split("@")[0]

    def said(*extra: str, db: str | None = None) -> tuple[int, dict[str, tuple[bool, str | None]]]:
        result = shop.cli("init", *tables, "--check", "--json", *extra, db=db)
        findings = json.loads(result.stdout)["findings"]
        return result.returncode, {
            f["what"]: (f["ok"], f["fix"]) for f in findings if "TRUNCATE" in f["what"]
        }

    code, lines = said()
    assert code == 0, lines
    assert lines.pop(
        'no account but drledger\'s may TRUNCATE TABLE "Sales".customer, "Sales".line (it needs DROP) by a '
        "grant on the table or its database; a TRUNCATE would leave no trace in the ledger"
    ) == (True, None)
    ((administrators, (ok, fix)),) = lines.items()  # root: an administrator's line, which fails nothing
    assert ok and "'root'@'localhost'" in administrators and "DROP on every database" in administrators
    assert fix == "empty a captured table with DELETE, never TRUNCATE TABLE"

    shop.server.execute(f"GRANT DROP ON `Sales`.* TO '{app}'@'%'")
    # Why it matters: the application's TRUNCATE goes through, and not one event says so.
    shop.server.execute("INSERT INTO `Sales`.customer (name) VALUES ('Zoë')")
    shop.server.execute("INSERT INTO `Sales`.line (customer_id) SELECT id FROM `Sales`.customer")
    events = shop.rows("SELECT COUNT(*) FROM drledger.outbox")
    conn = pymysql.connect(host="127.0.0.1", port=shop.server.port, user=app, database="Sales")
    try:
        with conn.cursor() as cursor:
            cursor.execute("TRUNCATE TABLE line")
    finally:
        conn.close()
    assert shop.rows("SELECT COUNT(*) FROM `Sales`.line") == [(0,)]
    assert shop.rows("SELECT COUNT(*) FROM drledger.outbox") == events
    # A drledger role holding DROP is not named (replay never truncates); the application's account is.
    shop.server.execute("CREATE USER IF NOT EXISTS 'drledger_recoverer'@'%'")
    try:
        shop.server.execute("GRANT DROP ON `Sales`.line TO 'drledger_recoverer'@'%'")
        code, lines = said()
        assert code == 1 and not any("drledger_recoverer" in what for what in lines), lines
        assert lines[
            f"'{app}'@'%' holds DROP on \"Sales\".customer, \"Sales\".line: its TRUNCATE TABLE would leave no "
            "trace in the ledger (MySQL fires no trigger for it)"
        ] == (
            False,
            f"REVOKE DROP ON `Sales`.* FROM '{app}'@'%' (or see that it never truncates a captured table, "
            "and empties one with DELETE)",
        )
    finally:
        shop.server.execute("DROP USER IF EXISTS 'drledger_recoverer'@'%'")
    # An account that may not read the grant tables says it could not tell: never a ✓ it cannot back.
    shop.server.execute(f"REVOKE DROP ON `Sales`.* FROM '{app}'@'%'")
    assert said()[0] == 0
    code, lines = said(db=shop.app_dsn)
    (could_not,) = [what for what, (ok, _fix) in lines.items() if not ok]
    assert code == 1 and could_not.startswith(
        'could not tell which accounts may TRUNCATE TABLE "Sales".customer, "Sales".line'
    ), lines
    assert "this account may not read mysql.user, mysql.db and mysql.tables_priv" in could_not


def test_bad_mysql_input_is_one_sentence(shop: Shop) -> None:
    for dsn, fragment in (
        ("mysql://root:hunter2@127.0.0.1:1/Sales", "Cannot connect to the database"),
        ("mysql://root@127.0.0.1/Sales?bogus=1", "does not know: bogus"),
        ("oracle://x@y/z", "does not know the database engine"),
    ):
        result = run_cli("reconcile", "--db", dsn, "--ledger", f"sqlite:///{shop.workdir}/none.db")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert "hunter2" not in result.stderr
    result = shop.cli("init", "--table", "Sales.nothing")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_an_outbox_slice_is_cut_between_milliseconds_on_mysql(shop: Shop) -> None:
    assert shop.cli("init", "--table", "Sales.customer").returncode == 0
    for ms, rows in SLICED_OUTBOX:
        for n in range(rows):
            shop.server.execute(
                "INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, payload, created_at) "
                # Stored as UTC wall time, as the trigger writes it.
                f"VALUES (UUID(), 'Sales.customer', '{ms}-{n}', '{{}}', "
                f"TIMESTAMPADD(MICROSECOND, {ms * 1000}, '1970-01-01 00:00:00'))"
            )
    source = open_source(shop.dsn)
    try:
        slices_are_cut_between_milliseconds(source)
    finally:
        source.close()


def test_watch_sees_the_relay_come_and_go_as_least_privileged_accounts(shop: Shop) -> None:
    """MySQL has no slot: the watcher finds the relay by the account it registered, reading as an
    account holding only the reader's grants, while the relay runs as one holding only the relay's."""
    relay_user, reader_user = f"rel_{uuid.uuid4().hex[:6]}", f"rd_{uuid.uuid4().hex[:6]}"
    roles = ("--role", f"relay={relay_user}", "--role", f"reader={reader_user}")
    grants = shop.cli("init", "--print-grants", *roles, "--table", "Sales.customer")
    assert grants.returncode == 0, grants.stderr
    before, _, after = grants.stdout.partition("-- After drledger init")
    after = after.partition("\n")[2]  # the rest of the heading's line
    conn = shop.server.connect()
    try:
        with conn.cursor() as cursor:
            for script in (before, None, after):
                if script is None:
                    assert shop.cli("init", "--table", "Sales.customer").returncode == 0
                    continue
                for statement in script.split(";"):
                    body = "\n".join(
                        line for line in statement.splitlines() if line.strip() and not line.startswith("--")
                    )
                    if body.strip():
                        cursor.execute(body)
    finally:
        conn.close()
    port = shop.server.port
    relay_dsn = f"mysql://{relay_user}@127.0.0.1:{port}/drledger"
    reader_dsn = f"mysql://{reader_user}@127.0.0.1:{port}/drledger"
    url = f"sqlite:///{shop.workdir}/ledger.db"
    with open_ledger(url, writer=True):
        pass

    def watch() -> dict:
        result = run_cli(
            "watch", "--db", reader_dsn, "--ledger", url, "--once", "--json", "--listen", "127.0.0.1:0"
        )
        assert result.returncode in (0, 1), result.stdout + result.stderr
        snap = json.loads(result.stdout)
        assert snap["primary"]["up"], snap["primary"]
        return snap

    assert watch()["relay"]["up"] is False  # no relay ever registered
    relay = start_relay(shop, url, db=relay_dsn)
    try:
        wait_for(lambda: watch()["relay"]["up"] is True, 120, "the watcher to see the relay reading")
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait(60)

    def write_then_watch() -> bool:
        # A binlog dump thread notices its reader is gone when it next has an event to send: on an idle
        # server, at the next write.
        shop.server.execute("INSERT INTO `Sales`.customer (name) VALUES ('after the relay died')")
        return watch()["relay"]["up"] is False

    wait_for(write_then_watch, 60, "the watcher to see the relay gone")
    for user in (relay_user, reader_user):
        shop.server.execute(f"DROP USER '{user}'@'%'")


@pytest.fixture(scope="module")
def promoted() -> Iterator[LocalMariaDB]:
    """A second server: the database promoted when the shop's primary was lost, without its last rows."""
    with MariaDBSet() as servers:
        server = servers.server("promoted")
        server.execute("CREATE DATABASE `Sales`")
        for statement in TABLES.split(";"):
            if statement.strip():
                server.execute(statement)
        yield server


def test_the_old_mysql_primary_is_read_as_a_ledger_once_read_only(shop: Shop, promoted: LocalMariaDB) -> None:
    tables = [a for t in ["`Sales`.`Order`", "Sales.customer", "Sales.line"] for a in ("--table", t)]
    dr = promoted.dsn("Sales")
    assert shop.cli("init", *tables).returncode == 0
    assert shop.cli("init", *tables, db=dr).returncode == 0
    write_as_the_application(shop)
    originals = (
        shop.rows(IMAGE),
        shop.rows("SELECT * FROM `Sales`.customer"),
        shop.rows("SELECT * FROM `Sales`.line"),
    )

    refused = shop.cli("reconcile", "--ledger", shop.dsn, db=dr)
    assert refused.returncode == 2 and "read_only is off" in refused.stderr, refused.stderr
    shop.server.execute("SET GLOBAL read_only = 1")
    try:
        reconcile = shop.cli("reconcile", "--ledger", shop.dsn, "--json", db=dr)
        assert reconcile.returncode == 1, reconcile.stdout + reconcile.stderr
        assert json.loads(reconcile.stdout)["missing_by_table"] == {
            '"Sales"."Order"': 2,
            '"Sales".customer': 1,
            '"Sales".line': 2,
        }
        replay = shop.cli("replay", "--ledger", shop.dsn, "--apply", "--json", db=dr)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert json.loads(replay.stdout)["applied"] == 5
    finally:
        shop.server.execute("SET GLOBAL read_only = 0")
    assert (
        promoted.execute(IMAGE),
        promoted.execute("SELECT * FROM `Sales`.customer"),
        promoted.execute("SELECT * FROM `Sales`.line"),
    ) == originals
    again = shop.cli("reconcile", "--ledger", shop.dsn + "?writable=accept", "--json", db=dr)
    assert again.returncode == 0 and json.loads(again.stdout)["counts"]["missing_in_dr"] == 0, again.stdout


def test_the_recoverer_replays_every_value_with_exactly_the_printed_grants(shop: Shop) -> None:
    tables = [a for t in ["`Sales`.`Order`", "Sales.customer", "Sales.line"] for a in ("--table", t)]
    assert shop.cli("init", *tables).returncode == 0
    write_as_the_application(shop)
    events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
    originals = (
        shop.rows(IMAGE),
        shop.rows("SELECT * FROM `Sales`.customer"),
        shop.rows("SELECT * FROM `Sales`.line"),
    )
    for table in ("`Sales`.line", "`Sales`.customer", "`Sales`.`Order`", "drledger.outbox"):
        shop.server.execute(f"DELETE FROM {table}")
    url = f"sqlite:///{shop.workdir}/lost.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(events)

    recoverer = f"rec_{uuid.uuid4().hex[:6]}"
    printed = shop.cli("init", *tables, "--print-grants", "--role", f"recoverer={recoverer}")
    assert printed.returncode == 0, printed.stderr
    script = [
        line.rstrip(";") for line in printed.stdout.splitlines() if line.strip() and not line.startswith("--")
    ]
    mine = [s for s in script if f"'{recoverer}'" in s]
    assert any("replay_session" in s and "SELECT" in s for s in mine), mine
    for statement in mine:
        shop.server.execute(statement)
    as_recoverer = f"mysql://{recoverer}@127.0.0.1:{shop.server.port}/Sales"
    try:
        check = shop.cli("init", *tables, "--check", "--as", f"recoverer={recoverer}")
        assert check.returncode == 0, check.stdout + check.stderr
        fence = shop.cli("fence", "--ledger", url, "--since", "1h", db=as_recoverer)
        assert fence.returncode == 0, fence.stdout + fence.stderr
        applied = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json", db=as_recoverer)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert json.loads(applied.stdout)["applied"] == 5
        # Every value back, the JSON column included (it was written as NULL under these grants).
        restored = (
            shop.rows(IMAGE),
            shop.rows("SELECT * FROM `Sales`.customer"),
            shop.rows("SELECT * FROM `Sales`.line"),
        )
        assert restored == originals

        # One right taken away: the check names it, and replay stops before its first write, naming the GRANT.
        shop.server.execute(f"REVOKE SELECT ON drledger.replay_session FROM '{recoverer}'@'%'")
        check = shop.cli("init", *tables, "--check", "--as", f"recoverer={recoverer}")
        assert check.returncode == 1 and "replay_session" in check.stdout, check.stdout
        for table in ("`Sales`.line", "`Sales`.customer", "`Sales`.`Order`", "drledger.outbox"):
            shop.server.execute(f"DELETE FROM {table}")
        denied = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", db=as_recoverer)
        assert denied.returncode == 2 and "GRANT SELECT ON `drledger`.`replay_session`" in denied.stderr, (
            denied.stderr
        )
        assert shop.rows("SELECT COUNT(*) FROM `Sales`.`Order`") == [(0,)]
    finally:
        shop.server.execute(f"DROP USER IF EXISTS '{recoverer}'@'%'")


def test_a_trigger_that_changes_a_value_is_caught_and_an_edited_replayed_row_is_not_replayed_on_mysql(
    shop: Shop,
) -> None:
    shop.server.execute(
        "CREATE TABLE `Sales`.note (id INT AUTO_INCREMENT PRIMARY KEY, body VARCHAR(100), tag VARCHAR(20))"
    )
    assert shop.cli("init", "--table", "Sales.note").returncode == 0
    shop.server.execute("INSERT INTO `Sales`.note (id, body, tag) VALUES (1, 'first', 'a')")
    shop.server.execute("INSERT INTO `Sales`.note (id, body, tag) VALUES (2, 'second', 'b')")
    events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
    assert len(events) == 2, events
    shop.server.execute("DELETE FROM `Sales`.note")
    shop.server.execute("DELETE FROM drledger.outbox")
    url = f"sqlite:///{shop.workdir}/notes.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(events)
    saved = shop.workdir / "lost.json"
    assert shop.cli("reconcile", "--ledger", url, "--since", "1h", "--save", str(saved)).returncode == 1
    # A user's trigger rewrites one value on the way in: what replay wrote is not the ledger's row.
    shop.server.execute(
        "CREATE TRIGGER `Sales`.note_upper BEFORE INSERT ON `Sales`.note FOR EACH ROW "
        "SET NEW.tag = IF(NEW.id = 2, UPPER(NEW.tag), NEW.tag)"
    )
    result = shop.cli("replay", "--from", str(saved), "--apply", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and document["applied"] == 1, document
    (refusal,) = document["refused"]
    assert refusal["key"] == "2" and "column tag" in refusal["reason"], refusal
    assert '"b"' in refusal["reason"] and '"B"' in refusal["reason"], refusal
    assert shop.rows("SELECT id, tag FROM `Sales`.note ORDER BY id") == [(1, "a")]
    shop.server.execute("DROP TRIGGER `Sales`.note_upper")
    assert shop.cli("replay", "--from", str(saved), "--apply").returncode == 0
    # Someone edits a replayed row: applying the same saved report again does not call it replayed.
    shop.server.execute("UPDATE `Sales`.note SET body = 'edited' WHERE id = 1")
    again = shop.cli("replay", "--from", str(saved), "--apply", "--json")
    document = json.loads(again.stdout)
    assert again.returncode == 3 and document["already_replayed"] == 1, again.stdout + again.stderr
    (conflict,) = document["conflicts"]
    assert conflict["key"] == "1" and "no longer holds its image" in conflict["why"], conflict


def test_an_older_version_left_by_the_failover_is_stale_and_only_a_write_since_is_split_brain_on_mysql(
    shop: Shop,
) -> None:
    shop.server.execute(
        "CREATE TABLE `Sales`.member (id INT PRIMARY KEY, email VARCHAR(100) UNIQUE, name VARCHAR(20))"
    )
    assert shop.cli("init", "--table", "Sales.member").returncode == 0
    # Key 1 reached the DR database; in the lost window it was deleted and registered again.
    shop.server.execute("INSERT INTO `Sales`.member VALUES (1, 'one@example.com', 'old')")
    shop.server.execute("DELETE FROM `Sales`.member WHERE id = 1")
    shop.server.execute("INSERT INTO `Sales`.member VALUES (1, 'one@example.com', 'new')")
    # Key 2 was lost, and the promoted database gave it to another row afterwards.
    shop.server.execute("INSERT INTO `Sales`.member VALUES (2, 'two@example.com', 'lost')")
    lost = [
        e
        for e in (r.as_event() for r in open_source(shop.dsn).read_window(None, None))
        if "old" not in e.row_json
    ]
    assert len(lost) == 2, lost
    # What the DR database holds: key 1's older version (and its capture), nothing of key 2 — as the
    # failover left it, never written there …
    as_the_dr(shop, "UPDATE `Sales`.member SET name = 'old' WHERE id = 1")
    as_the_dr(shop, "DELETE FROM `Sales`.member WHERE id = 2")
    ids = ", ".join(f"'{e.event_id}'" for e in lost)
    shop.server.execute(f"DELETE FROM drledger.outbox WHERE id IN ({ids})")
    time.sleep(0.01)  # the DR's own write comes after the lost ones, to the millisecond
    # … until the application, writing to it after promotion, takes key 2.
    shop.server.execute("INSERT INTO `Sales`.member VALUES (2, 'dr@example.com', 'after')")
    url = f"sqlite:///{shop.workdir}/stale.db"
    with open_ledger(url, writer=True) as ledger:
        ledger.publish(lost)
    result = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [c["key"] for c in report["stale"]] == ["1"] and report["counts"]["stale"] == 1, report
    assert [c["key"] for c in report["split_brain"]] == ["2"] and report["counts"]["split_brain"] == 1, report
    assert "older version" in report["verdict"] and "split brain" in report["verdict"]


def test_updates_and_deletes_reach_the_ledger_and_are_replayed_onto_the_rows_they_changed_on_mysql(
    shop: Shop,
) -> None:
    import pymysql

    shop.server.execute(
        "CREATE TABLE `Sales`.account (id INT PRIMARY KEY, balance DECIMAL(38,18) NOT NULL, tags JSON, note TEXT)"
    )
    init = shop.cli("init", "--table", "Sales.account", "--ops", "insert,update,delete")
    assert init.returncode == 0, init.stderr
    check = shop.cli("init", "--table", "Sales.account", "--check", "--json")
    findings = [f["what"] for f in json.loads(check.stdout)["findings"]]
    assert any("is installed (capturing insert, update, delete)" in f for f in findings), findings
    url = f"sqlite:///{shop.workdir}/changes.db"
    relay = start_relay(shop, url)
    try:
        wait_for(
            lambda: shop.rows("SELECT COUNT(*) FROM drledger.heartbeat") == [(1,)], 120, "the relay to stream"
        )
        app = shop.app_dsn.split("//")[1].split("@")[0]
        shop.server.execute(f"GRANT UPDATE, DELETE ON `Sales`.account TO '{app}'@'%'")
        conn = pymysql.connect(
            host="127.0.0.1",
            port=shop.server.port,
            user=app,
            database="Sales",
            charset="utf8mb4",
            autocommit=False,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO account VALUES (1, 100.000000000000000001, '{\"vip\": true}', NULL), "
                    "(2, 50, NULL, 'ünïcode'), (3, 7, '[1, 2]', NULL)"
                )
                conn.commit()
                cursor.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
                cursor.execute("UPDATE account SET balance = balance + 10, note = NULL WHERE id = 2")
                conn.commit()
                cursor.execute("DELETE FROM account WHERE id = 3")
                conn.commit()
                cursor.execute("UPDATE account SET id = 20 WHERE id = 2")  # a key that changes
                conn.commit()
        finally:
            conn.close()
        wait_for(lambda: len(ledger_events(url)) >= 8, 120, "eight changes in the ledger")
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(60) == 0, (shop.workdir / "relay.log").read_text()[-2000:]
    events = sorted(ledger_events(url), key=lambda e: (e.txid, e.lsn))
    assert [(e.op, e.key) for e in events] == [
        ("insert", "1"),
        ("insert", "2"),
        ("insert", "3"),
        ("update", "1"),
        ("update", "2"),
        ("delete", "3"),
        ("delete", "2"),
        ("insert", "20"),
    ], [(e.op, e.key, e.txid, e.lsn) for e in events]
    update = events[3]
    assert update.before_json is not None and '"balance": 100.000000000000000001' in update.before_json
    assert '"balance": 90.000000000000000001' in update.row_json
    assert events[3].txid == events[4].txid  # one application transaction, one source transaction
    # The server's fingerprints of these changes are the ledger's: nothing is missing.
    same = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    # The failover: the last two transactions are lost (account 3 deleted, account 2's key changed);
    # the DR holds the rows before them.
    lost = [e.event_id for e in events[5:]]
    shop.server.execute(f"DELETE FROM drledger.outbox WHERE id IN ({', '.join(repr(i) for i in lost)})")
    as_the_dr(shop, "INSERT INTO `Sales`.account VALUES (3, 7, '[1, 2]', NULL)")
    as_the_dr(shop, "UPDATE `Sales`.account SET id = 2 WHERE id = 20")
    report = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert report.returncode == 1, report.stdout + report.stderr
    assert json.loads(report.stdout)["missing_by_op"] == {"insert": 1, "delete": 2}
    # Replayed by a recoverer holding exactly the printed grants: updates and deletes need their own.
    recoverer = f"rec_{uuid.uuid4().hex[:6]}"
    for phase in ("before", "after"):
        grant_as_printed(shop, ["--table", "Sales.account"], {"recoverer": recoverer}, phase)
    as_recoverer = f"mysql://{recoverer}@127.0.0.1:{shop.server.port}/Sales"
    # After promotion the DR's application changed account 2: the key change is held back whole.
    as_the_dr(shop, "UPDATE `Sales`.account SET note = 'after' WHERE id = 2")
    held = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json", db=as_recoverer)
    outcome = json.loads(held.stdout)
    assert held.returncode == 3 and outcome["applied"] == 1, held.stdout + held.stderr  # account 3's delete
    (conflict,) = outcome["conflicts"]
    assert conflict["key"] == "2" and "neither" in conflict["why"] and '"after"' in conflict["current_row"]
    assert [r["key"] for r in outcome["refused"]] == ["20"]  # the insert of the same transaction
    as_the_dr(shop, "UPDATE `Sales`.account SET note = NULL WHERE id = 2")
    replayed = shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", "--json", db=as_recoverer)
    outcome = json.loads(replayed.stdout)
    assert replayed.returncode == 0 and outcome["applied"] == 2, replayed.stdout + replayed.stderr
    shop.server.execute(f"DROP USER '{recoverer}'@'%'")
    assert shop.rows("SELECT id, balance, note FROM `Sales`.account ORDER BY id") == [
        (1, Decimal("90.000000000000000001"), None),
        (20, Decimal("60.000000000000000000"), None),
    ]
    again = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json")
    assert again.returncode == 0, again.stdout


def as_the_dr(shop: Shop, statement: str) -> None:
    """A change the DR database holds without capturing it (as the failover left it)."""
    conn = shop.server.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO drledger.replay_session VALUES (CONNECTION_ID())")
            cursor.execute(statement)
            cursor.execute("DELETE FROM drledger.replay_session WHERE connection_id = CONNECTION_ID()")
    finally:
        conn.close()


def test_init_check_says_what_version_8_0_2_costs_a_mariadb_replica(shop: Shop) -> None:
    # What the line says is so: a replica told to use GTIDs falls back to file and position.
    shop.server.execute("CREATE USER IF NOT EXISTS 'gtid_probe'@'%'")
    shop.server.execute("GRANT REPLICATION SLAVE ON *.* TO 'gtid_probe'@'%'")
    with MariaDBSet() as servers:
        # A server id of its own: a set's first server takes 1, as the module's primary did.
        replica = servers.server("replica", {"read-only": "ON", "server-id": "99"})
        replica.replicate_from(shop.server.port, user="gtid_probe")
        # Only the IO thread matters here: it decides the mode when it connects.
        status = wait_for(
            lambda: (st := replica.replica_status()).get("Slave_IO_Running") == "Yes" and st,
            60,
            "the replica to connect",
        )
    assert status["Using_Gtid"] == "No", status
    check = shop.cli("init", "--check")
    lines = [line for line in check.stdout.splitlines() if "Using_Gtid" in line]
    assert len(lines) == 1, check.stdout
    assert lines[0].startswith("✓ MariaDB 10.") and "reports version=8.0.2" in lines[0], lines
    assert "replicate by binlog file and position, not GTID" in lines[0]
    assert "point failover tooling at file and position" in lines[0]
    findings = json.loads(shop.cli("init", "--check", "--json").stdout)["findings"]
    (finding,) = [f for f in findings if "Using_Gtid" in f["what"]]
    assert finding["ok"] is True and "Exec_Master_Log_Pos" in finding["fix"]


def grant_as_printed(shop: Shop, tables: list[str], roles: dict[str, str], phase: str) -> str:
    """Run exactly what `init --print-grants --phase PHASE` prints for these roles, as root; the script."""
    named = [a for duty, role in roles.items() for a in ("--role", f"{duty}={role}")]
    printed = shop.cli("init", *tables, "--print-grants", "--phase", phase, *named)
    assert printed.returncode == 0, printed.stderr
    mine = [
        line.rstrip(";")
        for line in printed.stdout.splitlines()
        if line.strip() and not line.startswith("--") and any(f"'{r}'" in line for r in roles.values())
    ]
    for statement in mine:
        shop.server.execute(statement)
    return printed.stdout


def assert_stops_before_anything(result: subprocess.CompletedProcess[str], command: str, grant: str) -> None:
    """Exit 2, one sentence on stderr naming the command and the GRANT that fixes it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"drledger: drledger {command} as "), lines[0]
    assert f"run {grant}" in lines[0] and "(drledger init --print-grants lists the" in lines[0], lines[0]


def test_every_duty_runs_its_commands_with_exactly_the_printed_grants_and_a_revoked_one_is_named_on_mysql(
    shop: Shop,
) -> None:
    """Each duty's account made from --print-grants alone runs its commands; one right revoked, the
    command stops before reading or writing anything, naming itself and the GRANT, and init --check
    --as shows that right ✗."""
    tag = uuid.uuid4().hex[:6]
    roles = {
        "installer": f"ins_{tag}",
        "relay": f"rel_{tag}",
        "reader": f"rd_{tag}",
        "recoverer": f"rec_{tag}",
    }
    tables = ["--table", "Sales.customer"]
    port = shop.server.port
    # The relay's and the reader's grants are on database drledger, which their DSNs name.
    home = {"installer": "Sales", "relay": "drledger", "reader": "drledger", "recoverer": "Sales"}
    dsn = {duty: f"mysql://{role}@127.0.0.1:{port}/{home[duty]}" for duty, role in roles.items()}
    as_ = [a for duty, role in roles.items() for a in ("--as", f"{duty}={role}")]
    url = f"sqlite:///{shop.workdir}/ledger.db"
    try:
        grant_as_printed(shop, tables, roles, "before")
        init = shop.cli("init", *tables, db=dsn["installer"])
        assert init.returncode == 0, init.stdout + init.stderr
        grant_as_printed(shop, tables, roles, "after")
        check = shop.cli("init", *tables, "--check", *as_, "--json")
        privileges = [f for f in json.loads(check.stdout)["findings"] if f"_{tag}" in f["what"]]
        assert privileges and all(f["ok"] for f in privileges), privileges
        shop.server.execute("INSERT INTO `Sales`.customer (name) VALUES ('Ada'), ('Grace')")
        events = [r.as_event() for r in open_source(shop.dsn).read_window(None, None)]
        with open_ledger(url, writer=True) as ledger:
            ledger.publish(events)
        for table in ("`Sales`.customer", "drledger.outbox"):  # the failover lost both rows
            shop.server.execute(f"DELETE FROM {table}")
        # Every command of every duty, as exactly the printed grants.
        assert shop.cli("init", *tables, db=dsn["installer"]).returncode == 0
        reconcile = shop.cli("reconcile", "--ledger", url, "--since", "1h", "--json", db=dsn["reader"])
        assert reconcile.returncode == 1, reconcile.stdout + reconcile.stderr
        assert json.loads(reconcile.stdout)["counts"]["missing_in_dr"] == 2
        watch = run_cli(
            "watch", "--db", dsn["reader"], "--ledger", url, "--once", "--json", "--listen", "127.0.0.1:0"
        )
        assert watch.returncode in (0, 1) and json.loads(watch.stdout)["primary"]["up"], (
            watch.stdout + watch.stderr
        )
        fence = shop.cli("fence", "--ledger", url, "--since", "1h", db=dsn["recoverer"])
        assert fence.returncode == 0, fence.stdout + fence.stderr
        replay = shop.cli(
            "replay", "--ledger", url, "--since", "1h", "--apply", "--json", db=dsn["recoverer"]
        )
        assert replay.returncode == 0 and json.loads(replay.stdout)["applied"] == 2, (
            replay.stdout + replay.stderr
        )

        # One right of each duty's list revoked: the command names itself and the GRANT, exit 2, and
        # init --check --as shows the right ✗.
        revoked = {
            "installer": ("init", f"GRANT TRIGGER ON `Sales`.`customer` TO '{roles['installer']}'@'%'"),
            "reader": ("reconcile", f"GRANT SELECT ON `drledger`.`outbox` TO '{roles['reader']}'@'%'"),
            "recoverer": ("fence", f"GRANT ALTER ON `Sales`.`customer` TO '{roles['recoverer']}'@'%'"),
            "relay": ("relay", f"GRANT REPLICATION SLAVE ON *.* TO '{roles['relay']}'@'%'"),
        }
        for table in ("`Sales`.customer", "drledger.outbox"):  # lost again: replay has work to refuse
            shop.server.execute(f"DELETE FROM {table}")
        for grant in (g for _, g in revoked.values()):
            shop.server.execute(grant.replace("GRANT", "REVOKE", 1).replace(" TO ", " FROM ", 1))
        counter = (
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'Sales' "
            "AND TABLE_NAME = 'customer'"
        )
        before = shop.rows(counter)
        assert_stops_before_anything(
            shop.cli("init", *tables, db=dsn["installer"]), "init", revoked["installer"][1]
        )
        assert_stops_before_anything(
            shop.cli("reconcile", "--ledger", url, "--since", "1h", db=dsn["reader"]),
            "reconcile",
            revoked["reader"][1],
        )
        assert_stops_before_anything(
            run_cli("watch", "--db", dsn["reader"], "--ledger", url, "--once", "--listen", "127.0.0.1:0"),
            "watch",
            revoked["reader"][1],
        )
        assert_stops_before_anything(
            shop.cli("fence", "--ledger", url, "--since", "1h", "--margin", "1000", db=dsn["recoverer"]),
            "fence",
            revoked["recoverer"][1],
        )
        assert_stops_before_anything(
            shop.cli("replay", "--ledger", url, "--since", "1h", "--apply", db=dsn["recoverer"]),
            "replay",
            revoked["recoverer"][1],
        )
        assert shop.rows(counter) == before  # nothing fenced
        assert shop.rows("SELECT COUNT(*) FROM `Sales`.customer") == [(0,)]  # nothing replayed
        relay = run_cli(
            "relay",
            "--db",
            dsn["relay"],
            "--ledger",
            url,
            "--state-dir",
            str(shop.workdir / "state"),
            timeout=120,
        )
        assert_stops_before_anything(relay, "relay", revoked["relay"][1])
        assert not (shop.workdir / "state").exists()  # stopped before its state, the ledger or Debezium
        check = shop.cli("init", *tables, "--check", *as_, "--json")
        assert check.returncode == 1
        lacking = {f["fix"] for f in json.loads(check.stdout)["findings"] if not f["ok"]}
        assert {g for _, g in revoked.values()} <= lacking, lacking
    finally:
        for role in roles.values():
            shop.server.execute(f"DROP USER IF EXISTS '{role}'@'%'")


def transfers_on_mysql(shop: Shop, stop: threading.Event, tps: float) -> None:
    """Transactions of five changes across two captured tables (three orders placed, one account debited,
    another credited), `tps` a second, until stopped."""
    import pymysql

    rng = random.Random(22)
    conn = pymysql.connect(
        host="127.0.0.1", port=shop.server.port, user="root", database="Sales", autocommit=False
    )
    try:
        with conn.cursor() as cursor:
            while not stop.is_set():
                started = time.monotonic()
                debit, credit = rng.sample(range(1, 11), 2)
                cursor.execute("INSERT INTO placed (note) VALUES ('transfer'), ('transfer'), ('transfer')")
                cursor.execute("UPDATE account SET balance = balance - 1 WHERE id = %s", (debit,))
                cursor.execute("UPDATE account SET balance = balance + 1 WHERE id = %s", (credit,))
                conn.commit()
                time.sleep(max(0.0, 1 / tps - (time.monotonic() - started)))
    finally:
        conn.close()


def partial_transactions_on_mysql(url: str) -> dict[int, int]:
    """Source transactions of which the ledger holds other than all five changes: txid → changes held."""
    held: dict[int, set[str]] = {}
    for event in ledger_events(url):
        held.setdefault(event.txid, set()).add(event.event_id)
    return {txid: len(ids) for txid, ids in held.items() if len(ids) != 5}


def test_the_ledger_never_holds_part_of_a_source_transaction_whenever_the_relay_is_killed_on_mysql(
    shop: Shop,
) -> None:
    shop.server.execute("CREATE TABLE `Sales`.placed (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT)")
    shop.server.execute("CREATE TABLE `Sales`.account (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
    shop.server.execute("INSERT INTO `Sales`.account SELECT seq, 1000 FROM `Sales`.seq_1_to_10")
    init = shop.cli("init", "--table", "Sales.placed", "--table", "Sales.account")
    assert init.returncode == 0, init.stderr
    url = f"sqlite:///{shop.workdir}/whole.db"
    relay = start_relay(shop, url)
    wait_for(
        lambda: shop.rows("SELECT COUNT(*) FROM drledger.heartbeat") == [(1,)], 120, "the relay to stream"
    )
    stop = threading.Event()
    writer = threading.Thread(target=transfers_on_mysql, args=(shop, stop, 50))
    writer.start()
    rng = random.Random()
    try:
        for kill in range(1, 6):
            in_ledger = len(ledger_events(url))
            wait_for(lambda: len(ledger_events(url)) > in_ledger, 120, "the relay to publish")  # noqa: B023
            time.sleep(rng.uniform(0.5, 3.0))  # a random moment of streaming under load
            relay.send_signal(signal.SIGKILL)
            assert relay.wait(60) == -signal.SIGKILL, (shop.workdir / "relay.log").read_text()[-3000:]
            # Read while the relay is down, as a failover would find the ledger.
            partial = partial_transactions_on_mysql(url)
            assert not partial, f"after kill {kill}, the ledger holds part of: {sorted(partial.items())[:5]}"
            relay = start_relay(shop, url)
    finally:
        stop.set()
        writer.join()
    committed = shop.rows("SELECT COUNT(*) FROM drledger.outbox")[0][0]
    try:
        wait_for(
            lambda: len({e.event_id for e in ledger_events(url)}) >= committed,
            120,
            "every change in the ledger",
        )
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(60) == 0, (shop.workdir / "relay.log").read_text()[-2000:]
    events = ledger_events(url)
    assert {e.event_id for e in events} == {r[0] for r in shop.rows("SELECT id FROM drledger.outbox")}
    assert not partial_transactions_on_mysql(url)
