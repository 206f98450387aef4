"""Fixtures that start real services: PostgreSQL clusters, the Kafka-protocol broker, moto, relay processes.

Everything started here is stopped by PID and every temp directory removed when the session ends.
Every test below this directory is marked `integration` (`-m "not integration"` leaves them out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from tests.helpers import DRLEDGER, MOTO_SERVER, RelayFactory, RelayProcess, answers, fresh_database, wait_for

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


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
def relay_factory(workdir: Path) -> Iterator[RelayFactory]:
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
    from drledger.drill.postgres.cluster import free_port

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="drledger-moto-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(
        # moto_server, with its SQS calls no slower as a queue grows (see moto_fast.py).
        [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    try:
        wait_for(lambda: answers(f"{endpoint}/moto-api/"), 30, "moto to listen")
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


@pytest.fixture
def sqs_url(aws_endpoint: str, tmp_path: Path) -> str:
    return f"sqs://ledger-{uuid.uuid4().hex[:8]}.fifo?index={tmp_path}/sqs-index.db"


@pytest.fixture
def kinesis_url(aws_endpoint: str) -> str:
    return f"kinesis://ledger-{uuid.uuid4().hex[:8]}?shards=2"
