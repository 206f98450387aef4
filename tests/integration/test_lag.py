"""The lag injector: first over plain sockets, then between a real primary and its streaming replica."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from drledger.drill.lag import LagInjector
from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from tests.helpers import wait_for


class StandInPrimary:
    """A loopback server playing the primary: when a client sends a line, it pushes `payload` back."""

    def __init__(self, payload: bytes, *, hang_up: bool = True) -> None:
        self.payload = payload
        self.hang_up = hang_up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.request_at: float | None = None
        self.sent_at: float | None = None
        self.finished_at: float | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError), self.listener.accept()[0] as conn:
            conn.settimeout(10)
            request = b""
            while not request.endswith(b"\n"):
                piece = conn.recv(64)
                if not piece:
                    return
                request += piece
            self.request_at = self.sent_at = time.monotonic()
            for start in range(0, len(self.payload), 16384):
                conn.sendall(self.payload[start : start + 16384])
            self.finished_at = time.monotonic()
            if not self.hang_up:
                conn.recv(1)  # until the injector cuts us off

    def close(self) -> None:
        self.listener.close()
        self.thread.join(15)
        assert not self.thread.is_alive()


def receive_all(sock: socket.socket) -> tuple[bytes, float | None]:
    """Everything until the peer hangs up, and when the first byte came."""
    received = bytearray()
    first_at = None
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        if first_at is None:
            first_at = time.monotonic()
        received += chunk
    return bytes(received), first_at


def test_wal_is_held_for_the_delay_and_arrives_whole_and_in_order() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    upstream = StandInPrimary(payload)
    try:
        with (
            LagInjector(upstream.port, 0.5) as injector,
            socket.create_connection(("127.0.0.1", injector.port)) as client,
        ):
            client.settimeout(10)
            asked_at = time.monotonic()
            client.sendall(b"send\n")
            received, first_at = receive_all(client)
            done_at = time.monotonic()
            assert injector.in_flight_bytes() == 0
    finally:
        upstream.close()
    assert (
        upstream.request_at is not None and upstream.sent_at is not None and upstream.finished_at is not None
    )
    assert upstream.request_at - asked_at < 0.2, "replica→primary bytes must not be held"
    assert first_at is not None and first_at - upstream.sent_at >= 0.45
    assert len(received) == len(payload)
    assert received == payload
    # It keeps pace: the whole payload trails the sender by about the delay, not by a backlog.
    assert done_at - upstream.finished_at < 0.5 + 1.0


def test_drop_loses_everything_held_and_refuses_new_connections() -> None:
    payload = os.urandom(100_000)
    upstream = StandInPrimary(payload, hang_up=False)
    try:
        with LagInjector(upstream.port, 30.0) as injector:
            port = injector.port
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.settimeout(10)
                client.sendall(b"send\n")
                wait_for(lambda: injector.in_flight_bytes() == len(payload), 5, "the payload to be held")
                assert injector.drop() == len(payload)
                assert injector.in_flight_bytes() == 0
                received, _ = receive_all(client)
            assert received == b""
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            assert injector.drop() == 0
    finally:
        upstream.close()


def wal_receiver_status(replica: LocalCluster) -> str | None:
    with psycopg.connect(replica.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
    return str(row[0]) if row else None


@contextlib.contextmanager
def lagged_pair(
    clusters: ClusterSet, name: str, delay_s: float
) -> Iterator[tuple[LocalCluster, LocalCluster, LagInjector]]:
    """A primary with an `orders` table and a replica streaming from it through a lag injector."""
    primary = clusters.primary(f"lagprimary{name}")
    replica: LocalCluster | None = None
    try:
        primary.psql(
            "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL DEFAULT now())"
        )
        # The base backup is dozens of round trips (about 20 s through a 1.5 s delay) and shows nothing
        # about lag, so the lag starts once the replica streams WAL.
        with LagInjector(primary.port, 0.0) as injector:
            replica = clusters.replica(primary, f"lagreplica{name}", source_port=injector.port)
            wait_for(lambda: wal_receiver_status(replica) == "streaming", 30, "the replica to stream")
            injector.set_delay(delay_s)
            yield primary, replica, injector
    finally:
        for cluster in (replica, primary):
            if cluster is not None:
                cluster.stop()
                shutil.rmtree(cluster.data_dir, ignore_errors=True)


def has_order(cluster: LocalCluster, order_id: int) -> bool:
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM orders WHERE id = %s", (order_id,)).fetchone() is not None


def test_replica_trails_the_primary_by_the_delay(clusters: ClusterSet) -> None:
    with lagged_pair(clusters, "", 1.5) as (primary, replica, _injector):
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            issued_at = time.monotonic()
            conn.execute("INSERT INTO orders (id) VALUES (1)")
        time.sleep(0.5)
        assert not has_order(replica, 1), "the commit reached the replica before the delay was up"
        wait_for(lambda: has_order(replica, 1), 10, "the commit to reach the replica", interval=0.05)
        # Its WAL cannot have reached the injector before the INSERT was sent.
        assert time.monotonic() - issued_at >= 1.5 - 0.01


def test_failover_loses_the_commits_still_in_flight(clusters: ClusterSet) -> None:
    delay_s = 3.0
    with lagged_pair(clusters, "-disaster", delay_s) as (primary, replica, injector):
        issued: dict[int, float] = {}
        committed: dict[int, float] = {}
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            order_id = 0
            started_at = time.monotonic()
            while time.monotonic() - started_at < delay_s + 2.0:
                order_id += 1
                issued[order_id] = time.monotonic()
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
                committed[order_id] = time.monotonic()
                time.sleep(0.01)
        dropped = injector.drop()
        dropped_at = time.monotonic()
        primary.kill()
        replica.promote()
        with psycopg.connect(replica.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            survived = [row[0] for row in conn.execute("SELECT id FROM orders ORDER BY id")]

    ids = sorted(committed)
    assert dropped > 0
    assert survived, "the replica lost even the commits older than the delay"
    assert survived == ids[: len(survived)], "the replica must hold an unbroken prefix of the commits"
    lost = ids[len(survived) :]
    assert lost, "the failover lost nothing, so the delay was not applied"
    # The loss window is the delay. A kept commit's WAL reached the injector after its INSERT was sent
    # and was held the full delay before the drop; a lost one was committed within about the delay.
    newest_kept_age = dropped_at - issued[survived[-1]]
    oldest_lost_age = dropped_at - committed[lost[0]]
    assert newest_kept_age >= delay_s - 0.01
    assert oldest_lost_age <= delay_s + 1.0
    print(
        f"committed {len(ids)}, survived {len(survived)}, lost {len(lost)} ({dropped} bytes of WAL dropped); "
        f"oldest lost commit {oldest_lost_age:.3f}s before the drop, newest kept INSERT {newest_kept_age:.3f}s"
    )
