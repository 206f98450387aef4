"""The relay end to end: PostgreSQL → the real Debezium engine → a ledger, as an operator runs it."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from drledger.census import take_census
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.source.postgres import outbox as postgres
from tests.helpers import RelayFactory, RelayProcess, slot_active, wait_for

pytestmark = pytest.mark.debezium


def ledger_events(url: str) -> list[LedgerEvent]:
    with open_ledger(url) as ledger:
        return [r for r in ledger.read() if isinstance(r, LedgerEvent)]


def distinct_ids(url: str) -> set[str]:
    try:
        return {e.event_id for e in ledger_events(url)}
    except Exception:
        return set()


def table_images(dsn: str) -> dict[str, str]:
    """Each row's jsonb text, exactly as PostgreSQL prints it."""
    with psycopg.connect(dsn) as conn:
        return {
            str(r[0]): r[1] for r in conn.execute("SELECT id, to_jsonb(o)::text FROM orders o").fetchall()
        }


def insert_transactions(dsn: str) -> int:
    """Single-row and multi-row transactions, plus one rolled back; returns rows committed."""
    committed = 0
    with psycopg.connect(dsn) as conn:
        for i in range(20):
            size = 1 if i % 2 == 0 else 7
            conn.execute(
                "INSERT INTO orders (customer, amount, tags) "
                "SELECT 'c' || g, g * 1.25, jsonb_build_object('batch', %s::int) FROM generate_series(1, %s) g",
                (i, size),
            )
            conn.commit()
            committed += size
        conn.execute("INSERT INTO orders (customer) SELECT 'rolled-back' FROM generate_series(1, 5)")
        conn.rollback()
    return committed


@pytest.fixture(params=["sqlite", "kafka"])
def any_ledger_url(request: pytest.FixtureRequest, workdir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/ledger.db"
    return request.getfixturevalue("kafka_url")


def test_every_committed_row_reaches_the_ledger_and_nothing_rolled_back(
    database: str, any_ledger_url: str, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = any_ledger_url
    relay = relay_factory(database, url, "--create")
    wait_for(lambda: slot_active(database, "drledger_slot"), 90, "the relay to open its slot")
    committed = insert_transactions(database)
    wait_for(lambda: len(distinct_ids(url)) >= committed, 60, "every event in the ledger")
    time.sleep(1.5)  # anything extra (a rolled-back row) would have arrived by now
    events = ledger_events(url)
    images = table_images(database)
    assert committed == 80
    assert len({e.event_id for e in events}) == committed
    assert {e.key for e in events} == set(images)
    for event in events:
        assert event.table == "public.orders"
        assert event.row_json == images[event.key]  # byte for byte: numerics and all
        assert event.row["customer"] != "rolled-back"
        assert event.lsn > 0 and event.txid > 0
    # Source commit time, not the relay's clock: events of one transaction share it.
    by_tx: dict[int, set[int]] = {}
    for event in events:
        by_tx.setdefault(event.txid, set()).add(event.commit_ts_ms)
    assert len(by_tx) == 20 and all(len(stamps) == 1 for stamps in by_tx.values())
    assert relay.kill(signal.SIGTERM) == 0


# Rows per second the writer aims at. SQS runs against moto_fast.py (moto with its per-call cost no
# longer growing with queue depth), at a rate its FIFO queue keeps up with.
KILL_RATES = {"sqlite": 1000, "kinesis": 1000, "sqs": 300}


@pytest.fixture(params=list(KILL_RATES))
def kill_ledger(request: pytest.FixtureRequest, workdir: Path) -> tuple[str, int]:
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/ledger.db", KILL_RATES["sqlite"]
    return request.getfixturevalue(f"{request.param}_url"), KILL_RATES[request.param]


def test_relay_killed_mid_stream_loses_nothing_after_restart(
    database: str, kill_ledger: tuple[str, int], relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url, rows_per_second = kill_ledger
    relay = relay_factory(database, url, "--create")
    wait_for(lambda: slot_active(database, "drledger_slot"), 90, "the relay to open its slot")

    stop = threading.Event()
    committed = [0]

    def workload() -> None:
        # 10 rows per transaction, as many transactions a second as the rate asks.
        pause = 10 / rows_per_second
        with psycopg.connect(database, autocommit=True) as conn:
            while not stop.is_set():
                started = time.monotonic()
                conn.execute("INSERT INTO orders (customer) SELECT 'w' FROM generate_series(1, 10)")
                committed[0] += 10
                time.sleep(max(0.0, pause - (time.monotonic() - started)))

    writer = threading.Thread(target=workload)
    writer.start()
    try:
        wait_for(lambda: len(distinct_ids(url)) > rows_per_second // 2, 60, "the relay to be mid-stream")
        assert relay.kill(signal.SIGKILL) == -signal.SIGKILL
        in_ledger_at_kill = len(distinct_ids(url))
        time.sleep(2)  # writes go on while the relay is down
        restarted = relay_factory(database, url, "--create")
        time.sleep(2)
    finally:
        stop.set()
        writer.join()
    total = committed[0]
    assert total > in_ledger_at_kill
    wait_for(lambda: len(distinct_ids(url)) >= total, 90, "the restarted relay to catch up")
    with psycopg.connect(database) as conn:
        outbox_ids = {r[0] for r in conn.execute("SELECT id::text FROM drledger.outbox").fetchall()}
    assert len(outbox_ids) == total
    assert distinct_ids(url) == outbox_ids
    census = take_census(open_ledger(url).read())
    assert census.distinct == total
    assert census.events == total + census.duplicates
    assert restarted.kill(signal.SIGTERM) == 0


def test_idle_outbox_still_advances_the_slot(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE uncaptured (id serial PRIMARY KEY, blob text)")
    relay = relay_factory(database, f"sqlite:///{workdir}/ledger.db", "--heartbeat", "500ms")
    wait_for(lambda: slot_active(database, "drledger_slot"), 90, "the relay to open its slot")

    def confirmed() -> int:
        with psycopg.connect(database, autocommit=True) as conn:
            return int(
                conn.execute(
                    "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'drledger_slot'"
                ).fetchone()[0]  # type: ignore[index]
            )

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO uncaptured (blob) SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        wal_after_writes = int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])  # type: ignore[index]
    before = confirmed()
    # No outbox row is written from here on; only the heartbeat can move the slot past that WAL.
    wait_for(lambda: confirmed() >= wal_after_writes, 30, "the slot to confirm past the idle-time WAL")
    assert confirmed() > before or before >= wal_after_writes
    relay.kill(signal.SIGTERM)


# -- whole source transactions -----------------------------------------------------------------------


def transfer_load(dsn: str, stop: threading.Event, tps: float) -> None:
    """Transactions of five changes across two captured tables (three orders placed, one account debited,
    another credited), `tps` a second, until stopped; a transaction refused while the database is away
    is simply not counted (its outbox rows are not there either)."""
    pause = 1 / tps
    rng = random.Random(22)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            started = time.monotonic()
            debit, credit = rng.sample(range(1, 11), 2)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO orders (customer, amount) SELECT 'transfer', g FROM generate_series(1, 3) g"
                )
                conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (debit,))
                conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (credit,))
            time.sleep(max(0.0, pause - (time.monotonic() - started)))


def outbox_changes_by_txid(dsn: str) -> Counter[int]:
    with psycopg.connect(dsn) as conn:
        return Counter(
            {
                int(t): int(n)
                for t, n in conn.execute(
                    "SELECT txid, count(*) FROM drledger.outbox GROUP BY txid"
                ).fetchall()
            }
        )


def partial_transactions(url: str, committed: Counter[int]) -> dict[int, tuple[int, int]]:
    """Every source transaction of which the ledger holds some events but not all: txid → (held, made)."""
    held: dict[int, set[str]] = {}
    for event in ledger_events(url):
        held.setdefault(event.txid, set()).add(event.event_id)
    return {txid: (len(ids), committed[txid]) for txid, ids in held.items() if len(ids) != committed[txid]}


def streaming(relay: RelayProcess, dsn: str) -> RelayProcess:
    """The relay, once it reads its slot; a relay that exits meanwhile fails the test with its output."""

    def active() -> bool:
        assert relay.process.poll() is None, relay.output()[-3000:]
        return slot_active(dsn, "drledger_slot")

    wait_for(active, 90, "the relay to open its slot")
    return relay


def test_the_ledger_never_holds_part_of_a_source_transaction_whenever_the_relay_is_killed(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 10) g")
    postgres.install(database, ["public.orders", "public.accounts"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = streaming(relay_factory(database, url, "--create"), database)
    stop = threading.Event()
    writer = threading.Thread(target=transfer_load, args=(database, stop, 100))
    writer.start()
    rng = random.Random()
    kills = 0
    try:
        for _ in range(5):
            time.sleep(rng.uniform(1.0, 4.0))  # a random moment of streaming under load
            assert relay.kill(signal.SIGKILL) == -signal.SIGKILL, relay.output()[-3000:]
            kills += 1
            # Read while the relay is down, as a failover would find the ledger.
            committed = outbox_changes_by_txid(database)
            partial = partial_transactions(url, committed)
            assert not partial, f"after kill {kills}, the ledger holds part of: {sorted(partial.items())[:5]}"
            relay = streaming(relay_factory(database, url), database)
    finally:
        stop.set()
        writer.join()
    committed = outbox_changes_by_txid(database)
    total = sum(committed.values())
    wait_for(lambda: len(distinct_ids(url)) >= total, 120, "every committed change in the ledger")
    assert not partial_transactions(url, committed)
    assert {e.txid for e in ledger_events(url)} == set(committed)
    assert all(n == 5 for n in committed.values()), committed.most_common(3)
    assert relay.kill(signal.SIGTERM) == 0


def test_a_transaction_larger_than_the_relay_may_hold_stops_it_before_any_of_it_is_published(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = streaming(relay_factory(database, url, "--create", "--max-transaction-changes", "1000"), database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (customer) SELECT 'small' FROM generate_series(1, 10)")
        wait_for(lambda: len(distinct_ids(url)) >= 10, 60, "the small transaction in the ledger")
        conn.execute("INSERT INTO orders (customer) SELECT 'large' FROM generate_series(1, 3000)")
    assert relay.process.wait(120) == 2, relay.output()[-3000:]
    said = [line for line in relay.output().splitlines() if line.startswith("drledger: ")]
    assert len(said) == 1 and "holds more than 1,000 changes" in said[0], relay.output()[-3000:]
    assert "Traceback" not in relay.output()
    assert len(distinct_ids(url)) == 10  # nothing of the large one
    # Nothing of it was acknowledged: with room for it, the relay publishes it whole (once the slot is free).
    wait_for(lambda: not slot_active(database, "drledger_slot"), 60, "the slot to be released")
    relay = streaming(relay_factory(database, url, "--max-transaction-changes", "5000"), database)
    try:
        wait_for(lambda: len(distinct_ids(url)) >= 3010, 90, "the large transaction in the ledger")
    except AssertionError:
        raise AssertionError(relay.output()[-4000:]) from None
    assert not partial_transactions(url, outbox_changes_by_txid(database))
    assert relay.kill(signal.SIGTERM) == 0
