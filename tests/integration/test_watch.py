"""`drledger watch` against real servers: a primary, its hot standby (replay paused to make a lag that
stays put), the relay as a child process, and the embedded ledger. Also the relay's /metrics, and bad
input. The pure arithmetic is tests/unit/test_watch_units.py's."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drledger.drill.postgres.cluster import ClusterSet, LocalCluster, free_port
from drledger.watch.cycle import Watcher, WatchSettings, scrape
from tests.helpers import (
    SLICED_OUTBOX,
    RelayFactory,
    dsn_for,
    run_cli,
    slices_are_cut_between_milliseconds,
    slot_active,
    start_watch,
    wait_for,
)

# -- against real servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standby(primary: LocalCluster) -> Iterator[LocalCluster]:
    """A hot standby of the shared primary, in a cluster set of its own."""
    with ClusterSet() as own:
        replica = own.replica(primary, "standby")
        yield replica


def replay(standby: LocalCluster, paused: bool) -> None:
    with psycopg.connect(standby.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def insert(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(rows):
            conn.execute("INSERT INTO orders (customer, amount) VALUES (%s, 1)", (f"c{i}",))


def on_standby(standby: LocalCluster, database: str) -> int:
    name = database.rsplit("/", 1)[1]
    try:
        with psycopg.connect(dsn_for(standby, name), autocommit=True) as conn:
            return int(conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return -1


def outbox_count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()[0])  # type: ignore[index]


def ledger_count(url: str) -> int:
    from drledger.ledger import open_ledger

    with open_ledger(url) as ledger:
        return len(ledger.event_ids(0, 2**62))


def test_an_outbox_slice_is_cut_between_milliseconds_never_inside_one(database: str) -> None:
    """The watcher reads the outbox in slices of at most `limit` events, cut where a millisecond ends
    (a transaction's rows share one); a millisecond holding more than the limit is read whole."""
    from drledger.source import open_source

    source = open_source(database)
    source.install(["public.orders"])
    with psycopg.connect(database, autocommit=True) as conn:
        for ms, rows in SLICED_OUTBOX:
            conn.execute(
                "INSERT INTO drledger.outbox (aggregatetype, aggregateid, payload, created_at) "
                "SELECT 'public.orders', g::text, '{}'::jsonb, to_timestamp(%s / 1000.0) "
                "FROM generate_series(1, %s) g",
                (ms, rows),
            )
    try:
        slices_are_cut_between_milliseconds(source)
    finally:
        source.close()


@pytest.mark.debezium
def test_readiness_and_completeness_follow_the_replica_the_relay_and_the_ledger(
    database: str, standby: LocalCluster, workdir: Path, relay_factory: RelayFactory
) -> None:
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    replica_dsn = dsn_for(standby, database.rsplit("/", 1)[1])
    relay = relay_factory(database, url)
    wait_for(lambda: slot_active(database, "drledger_slot"), 120, "the relay to start")
    insert(database, 20)
    wait_for(lambda: ledger_count(url) == 20 and on_standby(standby, database) == 20, 60, "both sides")
    settings = WatchSettings(database, url, replica_dsn, grace_s=1.0, skew_s=1.0, lookback_s=60)
    watcher = Watcher(settings)
    try:
        healthy = watcher.cycle()
        assert healthy.primary.up and healthy.replica and healthy.replica.up and healthy.ledger.up
        assert healthy.relay.up is True and healthy.slot is not None and healthy.slot.active
        assert healthy.readiness is not None and healthy.readiness.at_risk == 0
        assert healthy.missing_in_ledger == 0

        # The replica stops replaying: what the primary commits now is at risk, and the ledger has it.
        replay(standby, paused=True)
        insert(database, 30)
        wait_for(lambda: ledger_count(url) == 50, 60, "the ledger to have the 30")
        lagging = watcher.cycle()
        assert lagging.readiness is not None
        assert (lagging.readiness.at_risk, lagging.readiness.recoverable) == (30, 30)
        assert lagging.readiness.unrecoverable_if_now == 0
        assert lagging.replica_lag_s is not None and lagging.replica_lag_s > 0

        # The relay dies: new commits are at risk and unrecoverable, and after the grace period missing.
        relay.kill(signal.SIGKILL)
        wait_for(lambda: not slot_active(database, "drledger_slot"), 30, "the slot to lose its reader")
        insert(database, 7)
        time.sleep(1.5)
        blind = watcher.cycle()
        assert blind.relay.up is False
        assert blind.readiness is not None
        assert (
            blind.readiness.at_risk,
            blind.readiness.recoverable,
            blind.readiness.unrecoverable_if_now,
        ) == (
            37,
            30,
            7,
        )
        assert blind.missing_in_ledger == 7 and blind.problems

        # The relay comes back and catches up; the replica resumes: all clear again.
        relay_factory(database, url)
        replay(standby, paused=False)
        wait_for(lambda: ledger_count(url) == 57 and on_standby(standby, database) == 57, 120, "catch-up")
        time.sleep(1.2)
        again = watcher.cycle()
        assert again.missing_in_ledger == 0 and again.relay.up is True
        assert again.readiness is not None and again.readiness.at_risk == 0
    finally:
        replay(standby, paused=False)
        watcher.close()


def test_watch_once_json_and_bad_input(database: str, workdir: Path) -> None:
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    from drledger.ledger import open_ledger

    with open_ledger(url, writer=True):
        pass
    insert(database, 3)
    # No relay has ever run: no slot, and nothing in the ledger.
    result = run_cli("watch", "--db", database, "--ledger", url, "--once", "--json", "--grace", "0s")
    assert result.returncode == 1, result.stderr
    snap = json.loads(result.stdout)
    assert snap["missing_in_ledger"] == 3 and snap["relay"]["up"] is False and snap["slot"] is None
    assert any("missing from the ledger" in p for p in snap["problems"])

    # An unreachable replica is a finding, not a crash.
    away = run_cli(
        "watch",
        "--db",
        database,
        "--ledger",
        url,
        "--replica",
        "postgresql://x:pw@127.0.0.1:1/x",
        "--once",
        "--json",
    )
    assert away.returncode == 1 and "Traceback" not in away.stderr
    doc = json.loads(away.stdout)
    assert doc["replica"]["up"] is False and "Cannot connect" in doc["replica"]["error"]
    assert "pw@" not in away.stdout

    for args, fragment in (
        (["--db", database, "--ledger", url, "--listen", "nowhere"], "is not an address"),
        (["--ledger", url], "--db"),
        (["--db", database, "--ledger", "ftp://x/y"], "unknown scheme"),
        (["--db", database, "--ledger", url, "--interval", "soon"], "not a duration"),
    ):
        bad = run_cli("watch", *args, env={"DRLEDGER_DB": ""})
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, bad.stderr)

    # A ledger not there yet is a finding (the relay creates it), not bad input.
    absent = run_cli(
        "watch", "--db", database, "--ledger", f"sqlite:///{workdir}/absent.db", "--once", "--json"
    )
    assert absent.returncode == 1, absent.stderr
    assert json.loads(absent.stdout)["ledger"]["up"] is False and "does not exist" in absent.stdout

    rules = run_cli("watch", "--print-rules")
    assert rules.returncode == 0 and "alert: DrledgerRelayDown" in rules.stdout


def test_watch_serves_metrics_and_survives_an_unreachable_primary(database: str, workdir: Path) -> None:
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    from drledger.ledger import open_ledger

    # Started before the relay: the ledger does not exist yet, and the watcher serves /metrics anyway.
    watch = start_watch(database, url, workdir / "watch.log", "--interval", "0.5s")
    process = watch.process
    metrics_url = f"http://127.0.0.1:{watch.port}/metrics"
    try:
        wait_for(lambda: 'drledger_watch_up{target="ledger"} 0.0' in _text(metrics_url), 60, "ledger down")
        with open_ledger(url, writer=True):
            pass
        wait_for(lambda: 'drledger_watch_up{target="ledger"} 1.0' in _text(metrics_url), 30, "ledger found")
        # A connection that never sends a request is closed, not held for ever.
        with socket.create_connection(("127.0.0.1", watch.port), timeout=30) as idle:
            began = time.monotonic()
            assert idle.recv(1) == b"" and time.monotonic() - began < 25
        values = wait_for(lambda: _scrape_or_none(metrics_url), 60, "the watcher's /metrics")
        assert values["drledger_watch_cycles_total"] >= 1
        assert values["drledger_slot_exists"] == 0 and values["drledger_relay_up"] == 0
        with urllib.request.urlopen(metrics_url) as response:
            text = response.read().decode()
        assert 'drledger_watch_up{target="primary"} 1.0' in text
        assert "# TYPE drledger_readiness_at_risk_events gauge" in text

        # The database goes away (connections refused, the watcher's cut): a gauge and a log line, no exit.
        name = database.rsplit("/", 1)[1]
        with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            # The watcher keeps its connection between reads: cut it too.
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            wait_for(
                lambda: 'drledger_watch_up{target="primary"} 0.0' in _text(metrics_url), 30, "primary down"
            )
            assert process.poll() is None
        finally:
            with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        wait_for(lambda: 'drledger_watch_up{target="primary"} 1.0' in _text(metrics_url), 30, "primary back")
    finally:
        code = watch.stop()
    output = (workdir / "watch.log").read_text()
    assert code == 0, output
    assert "primary: down (was up)" in output and "primary: up (was down)" in output
    assert "Traceback" not in output


#: A source location as a logging handler prints one (`cli.py:962`): it means nothing to an operator.
SOURCE_PATH = re.compile(r"\b[\w/.-]+\.py:\d+")


def test_watch_starts_before_its_kafka_topic_exists_and_picks_it_up(
    database: str, workdir: Path, kafka_url: str
) -> None:
    """The Kafka topic is made by the relay's --create: a watcher started first serves /metrics with the
    ledger down, stays up, and finds the topic once it appears. Its log lines name no source file."""
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    from drledger.ledger import open_ledger

    watch = start_watch(database, kafka_url, workdir / "watch.log", "--interval", "0.5s")
    metrics_url = f"http://127.0.0.1:{watch.port}/metrics"
    try:
        wait_for(lambda: 'drledger_watch_up{target="ledger"} 0.0' in _text(metrics_url), 60, "ledger down")
        assert 'drledger_watch_up{target="primary"} 1.0' in _text(metrics_url)
        time.sleep(1.5)  # a few cycles on a topic that is not there: still up, still serving
        assert watch.process.poll() is None, (workdir / "watch.log").read_text()
        with open_ledger(kafka_url, writer=True, create=True):
            pass
        wait_for(lambda: 'drledger_watch_up{target="ledger"} 1.0' in _text(metrics_url), 60, "topic found")
    finally:
        code = watch.stop()
    output = (workdir / "watch.log").read_text()
    assert code == 0 and "Traceback" not in output, output
    assert "ledger: up (was down)" in output, output
    assert not SOURCE_PATH.findall(output), output


def test_watch_checks_the_readers_rights_once_the_primary_answers_and_starts_while_it_is_down(
    database: str, workdir: Path
) -> None:
    """A right of the reader's list missing: at start, one sentence naming the GRANT, exit 2. With the
    database down at start, the watcher starts as ever; once the database answers, the missing right is
    the primary's state (logged with the GRANT, never a crash), and the GRANT brings it up."""
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    from drledger.ledger import open_ledger

    with open_ledger(url, writer=True):
        pass
    role = f"rd_{uuid.uuid4().hex[:6]}"
    name = database.rsplit("/", 1)[1]
    admin = database.rsplit("/", 1)[0] + "/postgres"
    grant = f'GRANT SELECT ON "drledger"."outbox" TO "{role}"'
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA drledger TO {role}")
    reader = database.replace("postgres@", f"{role}@", 1)
    try:
        once = run_cli("watch", "--db", reader, "--ledger", url, "--once", "--listen", "127.0.0.1:0")
        lines = [line for line in once.stderr.splitlines() if line.strip()]
        assert once.returncode == 2 and len(lines) == 1, once.stdout + once.stderr
        assert f"drledger watch as {role} lacks SELECT on drledger.outbox: run {grant}" in lines[0], lines

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        try:
            watch = start_watch(reader, url, workdir / "watch.log", "--interval", "0.5s")
            metrics_url = f"http://127.0.0.1:{watch.port}/metrics"
            wait_for(
                lambda: 'drledger_watch_up{target="primary"} 0.0' in _text(metrics_url), 60, "primary down"
            )
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        try:
            wait_for(
                lambda: "primary: lacks a right" in (workdir / "watch.log").read_text(), 30, "the right named"
            )
            assert watch.process.poll() is None
            assert 'drledger_watch_up{target="primary"} 0.0' in _text(metrics_url)
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute(grant)
            wait_for(
                lambda: 'drledger_watch_up{target="primary"} 1.0' in _text(metrics_url), 30, "primary up"
            )
        finally:
            code = watch.stop()
        output = (workdir / "watch.log").read_text()
        assert code == 0 and "Traceback" not in output, output
        assert (
            f"primary: lacks a right (was down): drledger watch as {role} lacks SELECT on drledger.outbox"
            in output
        )
        assert "primary: up (was lacks a right)" in output
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _scrape_or_none(url: str) -> dict[str, float] | None:
    try:
        return scrape(url)
    except OSError:
        return None


@pytest.mark.debezium
def test_relay_serves_its_metrics(database: str, workdir: Path, relay_factory: RelayFactory) -> None:
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    port = free_port()
    relay = relay_factory(database, url, "--metrics-listen", f"127.0.0.1:{port}")
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: slot_active(database, "drledger_slot"), 120, "the relay to start")
    before = time.time()
    insert(database, 25)
    values = wait_for(
        lambda: (
            (v := _scrape_or_none(metrics_url))
            and v.get("drledger_relay_events_published_total", 0) >= 25
            and v
        ),
        60,
        "the relay to publish",
    )
    assert values["drledger_relay_engine_up"] == 1
    assert values["drledger_relay_last_commit_timestamp_seconds"] >= before - 5
    assert (
        values["drledger_relay_last_publish_timestamp_seconds"]
        >= values["drledger_relay_last_commit_timestamp_seconds"]
    )
    text = _text(metrics_url)
    for histogram in (
        "drledger_relay_batch_duration_seconds_bucket",
        "drledger_relay_publish_duration_seconds_bucket",
        "drledger_relay_commit_to_ledger_seconds_count",
    ):
        assert histogram in text
    # The watcher reads them: the relay is up by its slot and by its engine.
    watcher = Watcher(WatchSettings(database, url, relay_metrics_url=metrics_url, grace_s=1))
    try:
        seen = watcher.cycle()
        assert seen.relay.up is True and seen.relay.engine_up is True and seen.relay.last_publish_ms
        relay.kill(signal.SIGKILL)
        gone = watcher.cycle()
        assert gone.relay.up is False and gone.relay.metrics_up is False
    finally:
        watcher.close()
