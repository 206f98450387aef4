"""Fixtures that start real services: PostgreSQL clusters, the Kafka-protocol broker, relay processes.

Everything started here is stopped by PID and every temp directory removed when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from drledger.drill.cluster import ClusterSet, LocalCluster
from drledger.source.base import SourceDatabase

DRLEDGER = [sys.executable, "-m", "drledger"]


@pytest.fixture(scope="session")
def clusters() -> Iterator[ClusterSet]:
    with ClusterSet() as cluster_set:
        yield cluster_set


@pytest.fixture(scope="session")
def primary(clusters: ClusterSet) -> LocalCluster:
    return clusters.primary("primary", {"track_functions": "'all'"})


@pytest.fixture(scope="session")
def physical_only(clusters: ClusterSet) -> LocalCluster:
    """A cluster whose wal_level is 'replica': logical decoding is impossible there."""
    return clusters.primary("physical", {"wal_level": "replica"})


def dsn_for(cluster: LocalCluster, dbname: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/{dbname}"


@contextlib.contextmanager
def fresh_database(cluster: LocalCluster, ddl: str = "") -> Iterator[str]:
    """A new database on `cluster` with `ddl` run in it, dropped (with its slots) afterwards; its DSN."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = dsn_for(cluster, name)
    if ddl:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ddl)
    try:
        yield dsn
    finally:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                (name,),
            )
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def database(primary: LocalCluster) -> Iterator[str]:
    """A fresh database on the shared primary, with a demo table; its DSN."""
    with fresh_database(
        primary,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), "
        "placed_at timestamptz NOT NULL DEFAULT now(), tags jsonb)",
    ) as dsn:
        yield dsn


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="drledger-test-") as path:
        yield Path(path)


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRLEDGER, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@dataclass
class RelayProcess:
    """`drledger relay` running as a child process, as an operator would run it."""

    process: subprocess.Popen[str]
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(60)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def relay_factory(workdir: Path) -> Iterator:
    started: list[RelayProcess] = []

    def start(dsn: str, ledger_url: str, *extra: str, slot: str = "drledger_slot") -> RelayProcess:
        log = workdir / f"relay-{len(started)}.log"
        handle = log.open("w")
        process = subprocess.Popen(
            [
                *DRLEDGER,
                "relay",
                "--db",
                dsn,
                "--ledger",
                ledger_url,
                "--slot",
                slot,
                "--state-dir",
                str(workdir / "state"),
                *extra,
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        relay = RelayProcess(process, log)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.kill(signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def slot_active(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Kafka-protocol broker (tansu, memory only) on a free loopback port; its bootstrap address."""
    from drledger.drill.broker import LocalBroker

    with LocalBroker() as local:
        yield local.bootstrap


@pytest.fixture
def kafka_url(broker: str) -> str:
    """A URL naming a new topic on the test broker (created by the writer with create=True)."""
    return f"kafka://{broker}/ledger-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port, reached through boto3 exactly as AWS would be.

    The endpoint, region and (dummy) credentials go into the environment, so the drledger processes the
    tests start find them through boto3's own variables, unchanged.
    """
    import urllib.request

    from drledger.drill.cluster import free_port

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="drledger-moto-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(
        # moto_server, with its SQS calls no slower as a queue grows (see moto_fast.py).
        [sys.executable, str(Path(__file__).with_name("moto_fast.py")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    try:
        wait_for(lambda: _answers(urllib.request, f"{endpoint}/moto-api/"), 30, "moto to listen")
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            }
        )
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(20)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _answers(request_module, url: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        with request_module.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def sqs_url(aws_endpoint: str, tmp_path: Path) -> str:
    return f"sqs://ledger-{uuid.uuid4().hex[:8]}.fifo?index={tmp_path}/sqs-index.db"


@pytest.fixture
def kinesis_url(aws_endpoint: str) -> str:
    return f"kinesis://ledger-{uuid.uuid4().hex[:8]}?shards=2"


#: (creation ms, rows) of an outbox for `slices_are_cut_between_milliseconds`.
SLICED_OUTBOX = ((1000, 3), (1001, 6), (1003, 2))


def slices_are_cut_between_milliseconds(source: SourceDatabase) -> None:
    """The watcher's slices of an outbox holding SLICED_OUTBOX, limit 4: cut where a millisecond
    ends, a millisecond of more than the limit read whole, nothing lost or read twice."""
    first = source.outbox_slice(0, 5000, 4)
    assert [t for _, t in first.events] == [1000] * 3 and first.until_ms == 1001
    whole = source.outbox_slice(1001, 5000, 4)  # six in one millisecond: all of them
    assert [t for _, t in whole.events] == [1001] * 6 and whole.until_ms == 1002
    rest = source.outbox_slice(1002, 5000, 4)
    assert [t for _, t in rest.events] == [1003] * 2 and rest.until_ms == 5000
    exact = source.outbox_slice(0, 1002, 9)  # as many as the limit: nothing cut
    assert len(exact.events) == 9 and exact.until_ms == 1002
    assert len({i for i, _ in first.events + whole.events + rest.events}) == 11
    assert source.count_events(0, 5000, 100) == 11 and source.count_events(0, 5000, 4) == 4
