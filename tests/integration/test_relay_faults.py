"""The relay under the faults production inflicts on it: it fails loudly, never lingers, never borrows
another database's position, and loses nothing across a restart.

Each test runs `drledger relay` as a child process against real services and asserts outcomes: the
exit code (0 requested stop, 75 restart me, 2 operator needed), one sentence and no stack trace,
that the process ended within a generous bound, and that nothing committed is missing from the ledger.
The figures under load (kills at 1,000 tx/s, a 150 s broker stall, …) are benchmarks/relay_faults.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drledger.drill.broker import LocalBroker
from drledger.drill.postgres.cluster import ClusterSet, LocalCluster
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.source.postgres import outbox as postgres
from tests.helpers import RelayFactory, RelayProcess, create_database, run_cli, slot_active, wait_for

pytestmark = pytest.mark.debezium

EXIT_RETRY = 75
EXIT_OPERATOR = 2


# -- helpers ---------------------------------------------------------------------------------------


def the_sentence(output: str) -> str:
    """The relay's one closing sentence; nothing in the output may be a Python or Java stack trace."""
    assert "Traceback" not in output, output
    assert "\tat " not in output and "Exception in thread" not in output, output
    said = [line for line in output.splitlines() if line.startswith("drledger: ")]
    assert len(said) == 1, output
    return said[0]


def exits_within(relay: RelayProcess, seconds: float) -> tuple[int, float]:
    """The relay's exit code and how long it took; a relay still alive after `seconds` is a zombie."""
    started = time.monotonic()
    try:
        code = relay.process.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the relay was still running {seconds} s later:\n{relay.output()[-2000:]}"
        ) from None
    return code, time.monotonic() - started


def ledger_ids(url: str) -> list[str]:
    with open_ledger(url) as ledger:
        return [r.event_id for r in ledger.read() if isinstance(r, LedgerEvent)]


def outbox_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT id::text FROM drledger.outbox").fetchall()}


def insert(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (customer) SELECT 'c' || g FROM generate_series(1, %s) g", (rows,))


def all_in_ledger(dsn: str, url: str, timeout: float = 90) -> None:
    truth = outbox_ids(dsn)
    wait_for(
        lambda: truth <= set(_safe_ids(url)), timeout, f"all {len(truth)} committed events in the ledger"
    )


def _safe_ids(url: str) -> list[str]:
    try:
        return ledger_ids(url)
    except Exception:
        return []


class Load:
    """Insert transactions of `rows` rows, `tps` a second, until stopped; retries while the database is away."""

    def __init__(self, dsn: str, tps: float = 100, rows: int = 1) -> None:
        self.dsn, self.tps, self.rows = dsn, tps, rows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute(
                    "INSERT INTO orders (customer) SELECT 'load' FROM generate_series(1, %s)", (self.rows,)
                )
            except psycopg.Error:
                conn = None
                time.sleep(0.2)
            time.sleep(max(0.0, 1 / self.tps - (time.monotonic() - started)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def fresh_database(cluster: LocalCluster) -> str:
    """A new database on `cluster` with a captured `orders` table, left there (the cluster goes first)."""
    dsn = create_database(cluster, "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL)")
    postgres.install(dsn, ["public.orders"])
    return dsn


@pytest.fixture(scope="module")
def own_primary(clusters: ClusterSet) -> LocalCluster:
    """A primary these tests may restart, and whose slots lose their WAL beyond 64 MB."""
    return clusters.primary(
        f"faults_{uuid.uuid4().hex[:6]}", {"wal_keep_size": "0", "max_slot_wal_keep_size": "64MB"}
    )


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test's own, to stop, kill and replace."""
    broker = LocalBroker()
    broker.start()
    yield broker
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)
    broker.stop()


def started(relay: RelayProcess, dsn: str, slot: str = "drledger_slot") -> RelayProcess:
    def active() -> bool:
        assert relay.process.poll() is None, relay.output()
        return slot_active(dsn, slot)

    wait_for(active, 120, "the relay to open its slot")
    return relay


# -- fail loudly -------------------------------------------------------------------------------------


def test_a_requested_stop_is_prompt_in_every_phase(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    for delay in (1.0, 3.0, 6.0):  # checks, JVM start-up, Debezium's start (snapshot, slot creation)
        relay = relay_factory(database, url)
        time.sleep(delay)
        relay.process.send_signal(signal.SIGTERM)
        code, took = exits_within(relay, 20)
        assert code == 0, relay.output()
        assert took < 15, (delay, took)
    relay = started(relay_factory(database, url), database)
    insert(database, 10)
    all_in_ledger(database, url)
    # A second relay on the same state directory and slot is refused at once; the first runs on.
    second = run_cli("relay", "--db", database, "--ledger", url, "--state-dir", str(workdir / "state"))
    assert second.returncode == EXIT_OPERATOR
    assert "Another relay" in the_sentence(second.stderr)
    assert relay.process.poll() is None
    # With a state directory of its own, it meets the slot held: it stops within seconds, not minutes.
    began = time.monotonic()
    third = run_cli(
        "relay", "--db", database, "--ledger", url, "--state-dir", str(workdir / "other"), timeout=180
    )
    assert third.returncode == EXIT_OPERATOR, third.stderr[-2000:]
    assert "one relay per slot" in the_sentence(third.stderr) and time.monotonic() - began < 90
    assert relay.process.poll() is None
    relay.process.send_signal(signal.SIGTERM)
    assert exits_within(relay, 20)[0] == 0
    state = workdir / "state"
    assert oct(state.stat().st_mode & 0o777) == oct(0o700)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in state.iterdir()), [
        (p.name, oct(p.stat().st_mode)) for p in state.iterdir()
    ]


def test_a_state_directory_removed_under_the_relay_stops_it_within_seconds(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = started(relay_factory(database, url), database)
    insert(database, 10)
    all_in_ledger(database, url)
    shutil.rmtree(workdir / "state")
    code, took = exits_within(relay, 60)
    assert code == EXIT_OPERATOR and took < 30, (code, took, relay.output()[-2000:])
    assert "state directory" in the_sentence(relay.output()) and "can no longer be written" in relay.output()


def test_a_state_directory_made_read_only_under_the_relay_stops_it_within_seconds(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    """Read-only, not removed: the lock file is still there, only a write fails. Tests run as root, who
    ignores a directory's mode bits, so the directory is made immutable (chattr +i), which root obeys."""
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = started(relay_factory(database, url), database)
    insert(database, 10)
    all_in_ledger(database, url)
    state = workdir / "state"
    immutable = subprocess.run(["chattr", "+i", str(state)], capture_output=True, text=True)
    assert immutable.returncode == 0, f"chattr +i is needed to deny root a write: {immutable.stderr}"
    try:
        with pytest.raises(PermissionError):  # what the relay now meets: a write is refused, even to root
            (state / "probe").write_text("")
        code, took = exits_within(relay, 60)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    assert code == EXIT_OPERATOR and took < 30, (code, took, relay.output()[-2000:])
    sentence = the_sentence(relay.output())
    assert "state directory" in sentence and "can no longer be written" in sentence, sentence
    # Its log lines, progress and warnings, name no source file (`engine.py:408` means nothing to an operator).
    assert not re.findall(r"\b[\w/.-]+\.py:\d+", relay.output()), relay.output()


def test_a_publication_dropped_under_the_relay_stops_it_with_one_sentence(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    relay = started(relay_factory(database, f"sqlite:///{workdir}/ledger.db"), database)
    insert(database, 3)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP PUBLICATION drledger_pub")
    insert(database, 3)
    code, _took = exits_within(relay, 90)
    assert code == EXIT_OPERATOR
    sentence = the_sentence(relay.output())
    assert "drledger_pub" in sentence and "drledger init" in sentence
    check = run_cli("init", "--db", database, "--check", "--json")
    assert check.returncode == 1
    assert any("drledger_pub is missing" in f["what"] for f in json.loads(check.stdout)["findings"])


def test_an_outbox_column_dropped_is_named_and_init_check_finds_it(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = started(relay_factory(database, url), database)
    insert(database, 2)
    all_in_ledger(database, url)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE drledger.outbox DROP COLUMN txid")
    insert(database, 2)
    code, _took = exits_within(relay, 90)
    assert code == EXIT_OPERATOR
    assert "txid" in the_sentence(relay.output())
    check = run_cli("init", "--db", database, "--check", "--json")
    assert check.returncode == 1
    findings = json.loads(check.stdout)["findings"]
    assert any(
        not f["ok"] and "lacks the column txid" in f["what"] and "ADD COLUMN txid" in f["fix"]
        for f in findings
    )
    again = run_cli("relay", "--db", database, "--ledger", url, "--state-dir", str(workdir / "state"))
    assert again.returncode == EXIT_OPERATOR
    assert "lacks the column txid" in the_sentence(again.stderr)


def test_a_missing_privilege_is_refused_before_the_engine_starts_and_a_revoked_one_stops_it(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    role = f"relay_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA drledger TO {role}")
    dsn = database.replace("postgres@", f"{role}@")
    url = f"sqlite:///{workdir}/ledger.db"
    try:
        result = run_cli("relay", "--db", dsn, "--ledger", url, "--state-dir", str(workdir / "s1"))
        assert result.returncode == EXIT_OPERATOR
        assert f"drledger relay as {role} lacks the REPLICATION attribute" in the_sentence(result.stderr)
        assert f'run ALTER ROLE "{role}" WITH REPLICATION' in the_sentence(result.stderr)
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} REPLICATION")
        result = run_cli("relay", "--db", dsn, "--ledger", url, "--state-dir", str(workdir / "s2"))
        assert result.returncode == EXIT_OPERATOR
        assert f'lacks SELECT on drledger.outbox: run GRANT SELECT ON "drledger"."outbox" TO "{role}"' in (
            the_sentence(result.stderr)
        )
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT ON drledger.outbox TO {role}")
        result = run_cli("relay", "--db", dsn, "--ledger", url, "--state-dir", str(workdir / "s3"))
        assert result.returncode == EXIT_OPERATOR
        assert "heartbeat" in the_sentence(result.stderr)
        # Revoked while the relay runs: the first failed heartbeat stops it, not a retry loop.
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT, INSERT, UPDATE ON drledger.heartbeat TO {role}")
        relay = started(relay_factory(dsn, url, "--heartbeat", "500ms"), database)
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"REVOKE INSERT, UPDATE ON drledger.heartbeat FROM {role}")
        code, took = exits_within(relay, 60)
        assert code == EXIT_OPERATOR and took < 30
        assert "lacks a privilege the relay needs (permission denied for table heartbeat)" in the_sentence(
            relay.output()
        )
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_database_or_broker_unreachable_at_start_asks_to_be_restarted(database: str, workdir: Path) -> None:
    result = run_cli(
        "relay", "--db", "postgresql://drl:s3cret@127.0.0.1:1/x", "--ledger", f"sqlite:///{workdir}/l.db"
    )
    assert result.returncode == EXIT_RETRY
    assert "Cannot connect to the database" in the_sentence(result.stderr) and "s3cret" not in result.stderr
    postgres.install(database, ["public.orders"])
    result = run_cli(
        "relay", "--db", database, "--ledger", "kafka://127.0.0.1:1/ledger", "--state-dir", str(workdir)
    )
    assert result.returncode == EXIT_RETRY
    assert "Cannot reach the Kafka broker at 127.0.0.1:1" in the_sentence(result.stderr)
    # Bad input is not worth a restart.
    result = run_cli("relay", "--db", database, "--ledger", "kafka://127.0.0.1:1/ledger", "--snapshot", "all")
    assert result.returncode == EXIT_OPERATOR


# -- offsets belong to one database ------------------------------------------------------------------


def test_another_clusters_offsets_are_refused_and_left_alone(
    database: str, clusters: ClusterSet, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    relay = started(relay_factory(database, url), database)
    insert(database, 5)
    all_in_ledger(database, url)
    relay.process.send_signal(signal.SIGTERM)
    assert exits_within(relay, 20)[0] == 0
    state = workdir / "state"
    before = {p.name: p.read_bytes() for p in state.iterdir() if not p.name.endswith(".lock")}
    rebuilt = clusters.primary(f"rebuilt_{uuid.uuid4().hex[:6]}")  # a new cluster: another system identifier
    try:
        other = fresh_database(rebuilt)
        result = run_cli("relay", "--db", other, "--ledger", url, "--state-dir", str(state))
        assert result.returncode == EXIT_OPERATOR
        sentence = the_sentence(result.stderr)
        assert "belongs to another database" in sentence and str(state) in sentence
        assert {p.name: p.read_bytes() for p in state.iterdir() if not p.name.endswith(".lock")} == before
    finally:
        rebuilt.stop()


def test_the_promoted_replica_refuses_the_primarys_offsets_and_the_runbook_backfill_works(
    clusters: ClusterSet, workdir: Path, relay_factory: RelayFactory
) -> None:
    primary = clusters.primary(f"failover_{uuid.uuid4().hex[:6]}")
    try:
        dsn = fresh_database(primary)
        url = f"sqlite:///{workdir}/ledger.db"
        relay = started(relay_factory(dsn, url), dsn)
        insert(dsn, 20)
        all_in_ledger(dsn, url)
        relay.process.send_signal(signal.SIGTERM)
        assert exits_within(relay, 20)[0] == 0
        replica = clusters.replica(primary, f"dr_{uuid.uuid4().hex[:6]}")
        dr = dsn.replace(f":{primary.port}/", f":{replica.port}/")
        wait_for(lambda: len(outbox_ids(dr)) == 20, 60, "the replica to have the outbox")
        primary.stop()
        replica.promote()
        insert(dr, 7)  # written on the promoted database before its relay starts
        # Reusing the primary's offsets (same state directory, same slot) on the DR database: refused.
        reused = run_cli("relay", "--db", dr, "--ledger", url, "--state-dir", str(workdir / "state"))
        assert reused.returncode == EXIT_OPERATOR
        sentence = the_sentence(reused.stderr)
        assert "timeline 1" in sentence and "timeline 2" in sentence and "--backfill-since" in sentence
        # The runbook: a new slot and a backfill, with the same state directory.
        runbook = started(
            relay_factory(dr, url, "--backfill-since", "30m", slot="drledger_dr"), dr, "drledger_dr"
        )
        insert(dr, 3)
        all_in_ledger(dr, url)
        ids = ledger_ids(url)
        assert set(ids) == outbox_ids(dr) and len(outbox_ids(dr)) == 30
        runbook.process.send_signal(signal.SIGTERM)
        assert exits_within(runbook, 20)[0] == 0
        replica.stop()
    finally:
        primary.stop()


def test_a_lost_slot_is_refused_reconcile_shows_the_gap_and_the_backfill_closes_it(
    own_primary: LocalCluster, workdir: Path, relay_factory: RelayFactory
) -> None:
    dsn = fresh_database(own_primary)
    url = f"sqlite:///{workdir}/ledger.db"
    slot = f"lost_{uuid.uuid4().hex[:6]}"
    relay = started(relay_factory(dsn, url, slot=slot), dsn, slot)
    insert(dsn, 50)
    all_in_ledger(dsn, url)
    relay.process.send_signal(signal.SIGTERM)
    assert exits_within(relay, 20)[0] == 0
    insert(dsn, 40)  # committed while the relay is down: the gap
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ballast (b text)")
        for _ in range(15):  # ~110 MB of WAL; rows under 2 kB are not compressed
            conn.execute("INSERT INTO ballast SELECT repeat('x', 1500) FROM generate_series(1, 5000)")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        status = conn.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    assert status == ("lost",)
    refused = run_cli(
        "relay", "--db", dsn, "--ledger", url, "--slot", slot, "--state-dir", str(workdir / "state")
    )
    assert refused.returncode == EXIT_OPERATOR
    sentence = the_sentence(refused.stderr)
    assert "was invalidated" in sentence and "--backfill-since" in sentence
    reconcile = run_cli("reconcile", "--db", dsn, "--ledger", url, "--json")
    assert reconcile.returncode == 3, reconcile.stderr
    assert json.loads(reconcile.stdout)["counts"]["missing_in_ledger"] == 40
    # As the sentence says: a backfill from before the relay's last event, on a new slot.
    since = sentence.split("--backfill-since ", 1)[1].split(",", 1)[0]
    backfill = started(relay_factory(dsn, url, "--backfill-since", since, slot=f"{slot}_2"), dsn, f"{slot}_2")
    all_in_ledger(dsn, url)
    reconcile = run_cli("reconcile", "--db", dsn, "--ledger", url, "--json")
    assert reconcile.returncode == 0, reconcile.stdout
    assert json.loads(reconcile.stdout)["counts"]["missing_in_ledger"] == 0
    backfill.process.send_signal(signal.SIGTERM)
    assert exits_within(backfill, 20)[0] == 0


# -- survive what production does ----------------------------------------------------------------------


class Supervised:
    """A supervisor loop: start the relay again after exit 75 or a SIGKILL, as systemd would."""

    def __init__(
        self, factory: RelayFactory, dsn: str, url: str, *extra: str, slot: str = "drledger_slot"
    ) -> None:
        self.factory, self.dsn, self.url, self.extra, self.slot = factory, dsn, url, extra, slot
        self.exits: list[int] = []
        self.relay: RelayProcess = factory(dsn, url, *extra, slot=slot)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.is_set():
            code = self.relay.process.wait()
            self.exits.append(code)
            if self._done.is_set() or code not in (EXIT_RETRY, -signal.SIGKILL):
                return
            time.sleep(1)
            self.relay = self.factory(self.dsn, self.url, *self.extra, slot=self.slot)

    def stop(self) -> list[int]:
        self._done.set()
        with contextlib.suppress(ProcessLookupError):
            self.relay.process.send_signal(signal.SIGTERM)
        self._thread.join(60)
        return self.exits


def test_relay_killed_three_times_under_load_loses_nothing(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{workdir}/ledger.db"
    supervisor = Supervised(relay_factory, database, url)
    started(supervisor.relay, database)
    with Load(database, tps=100, rows=10):  # 1,000 rows a second
        for _ in range(3):
            time.sleep(4)
            wait_for(lambda: supervisor.relay.process.poll() is None, 30, "a running relay")
            supervisor.relay.process.send_signal(signal.SIGKILL)
        time.sleep(3)
    all_in_ledger(database, url, timeout=120)
    assert supervisor.stop() == [-signal.SIGKILL] * 3 + [0]
    assert set(ledger_ids(url)) == outbox_ids(database)


def relayed_so_far(state: Path, slot: str = "drledger_slot") -> int:
    """How many events the running relay has had acknowledged, from the stats file it writes."""
    try:
        return int(json.loads((state / f"{slot}.stats.json").read_text())["events"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_relay_killed_during_its_first_snapshot_does_not_publish_it_twice(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    snapshot = 60_000
    insert(database, snapshot)  # there before the relay's first start: its snapshot reads them
    url = f"sqlite:///{workdir}/ledger.db"
    with Load(database, tps=50, rows=2):  # and committed meanwhile: streamed after the snapshot
        first = relay_factory(database, url)
        wait_for(
            lambda: relayed_so_far(workdir / "state") >= 2_000, 180, "part of the snapshot in the ledger"
        )
        first.kill(signal.SIGKILL)
        held = len(ledger_ids(url))
        assert held < snapshot, "the snapshot ended before the kill: nothing to test"
        again = relay_factory(database, url)
        time.sleep(2)
    all_in_ledger(database, url, timeout=180)
    ids = ledger_ids(url)
    assert set(ids) == outbox_ids(database)  # nothing missing
    # Debezium reads the whole outbox again; what the cut snapshot had published is left out of it.
    duplicates = len(ids) - len(set(ids))
    assert duplicates < held / 10, (duplicates, held)
    assert "left out, not published twice" in again.output()
    again.process.send_signal(signal.SIGTERM)
    assert exits_within(again, 20)[0] == 0


def test_postgres_restarted_under_load_loses_nothing(
    own_primary: LocalCluster, workdir: Path, relay_factory: RelayFactory
) -> None:
    dsn = fresh_database(own_primary)
    url = f"sqlite:///{workdir}/ledger.db"
    slot = f"restart_{uuid.uuid4().hex[:6]}"
    supervisor = Supervised(relay_factory, dsn, url, slot=slot)
    started(supervisor.relay, dsn, slot)
    with Load(dsn, tps=100, rows=5):
        time.sleep(3)
        own_primary.stop()
        own_primary.start()
        time.sleep(5)
    all_in_ledger(dsn, url, timeout=180)
    exits = supervisor.stop()
    assert set(exits) <= {EXIT_RETRY, 0} and exits[-1] == 0, exits  # reconnected by itself, or exit 75
    assert set(ledger_ids(url)) == outbox_ids(dsn)


def test_a_broker_stopped_briefly_blocks_the_relay_and_it_resumes(
    database: str, own_broker: LocalBroker, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"kafka://{own_broker.bootstrap}/ledger"
    relay = started(relay_factory(database, url, "--create"), database)
    assert own_broker.process is not None
    with Load(database, tps=50, rows=4):
        time.sleep(2)
        os.kill(own_broker.process.pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(own_broker.process.pid, signal.SIGCONT)
        time.sleep(2)
    all_in_ledger(database, url)
    assert relay.process.poll() is None  # blocked, never gave up
    ids = ledger_ids(url)
    assert set(ids) == outbox_ids(database)
    relay.process.send_signal(signal.SIGTERM)
    assert exits_within(relay, 20)[0] == 0


def test_a_ledger_unavailable_for_long_exits_75_and_the_restart_loses_nothing(
    database: str, own_broker: LocalBroker, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"kafka://{own_broker.bootstrap}/ledger"
    relay = started(relay_factory(database, url, "--create", "--ledger-timeout", "5s"), database)
    assert own_broker.process is not None
    with Load(database, tps=50, rows=2):
        time.sleep(2)
        os.kill(own_broker.process.pid, signal.SIGSTOP)
        code, _took = exits_within(relay, 120)  # a Kafka write waits 30 s, then 5 s of retries at most
        assert code == EXIT_RETRY
        assert "did not take a batch for" in the_sentence(relay.output())
        os.kill(own_broker.process.pid, signal.SIGCONT)
        restarted = started(relay_factory(database, url, "--create"), database)
        time.sleep(2)
    all_in_ledger(database, url)
    ids = ledger_ids(url)
    assert set(ids) == outbox_ids(database)
    assert max(Counter(ids).values()) <= 2  # a batch is sent again once per attempt, never piled up
    restarted.process.send_signal(signal.SIGTERM)
    assert exits_within(restarted, 20)[0] == 0


def test_a_broker_replaced_by_an_empty_one_stops_the_relay_and_nothing_is_marked_relayed(
    database: str, own_broker: LocalBroker, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"kafka://{own_broker.bootstrap}/ledger"
    relay = started(relay_factory(database, url, "--create"), database)
    insert(database, 10)
    all_in_ledger(database, url)
    before = outbox_ids(database)
    assert own_broker.process is not None
    own_broker.process.kill()
    own_broker.process.wait()
    fresh = LocalBroker()
    fresh.port = own_broker.port
    fresh.start()
    try:
        insert(database, 10)  # committed after the old broker died: the new one must get them
        code, _took = exits_within(relay, 120)
        assert code == EXIT_OPERATOR
        sentence = the_sentence(relay.output())
        assert "is now another cluster" in sentence or "no longer exists" in sentence, sentence
        # Started again on the empty broker, the relay sees the ledger went backwards and says so …
        refused = run_cli(
            "relay",
            "--db",
            database,
            "--ledger",
            url,
            "--create",
            "--state-dir",
            str(relay.log.parent / "state"),
            timeout=120,
        )
        assert refused.returncode == EXIT_OPERATOR, refused.stderr[-2000:]
        assert "went backwards" in the_sentence(refused.stderr)
        # … and the backfill it names puts back everything the old broker had acknowledged, and the rest.
        again = started(relay_factory(database, url, "--create", "--backfill-since", "1h"), database)
        wait_for(
            lambda: outbox_ids(database) <= set(_safe_ids(url)),
            90,
            "every event in the new topic",
        )
        assert before <= set(_safe_ids(url))
        again.process.send_signal(signal.SIGTERM)
        assert exits_within(again, 20)[0] == 0
    finally:
        fresh.stop()


def test_a_broker_killed_under_the_relay_ends_it_with_75_and_one_sentence(
    database: str, own_broker: LocalBroker, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"kafka://{own_broker.bootstrap}/ledger"
    relay = started(relay_factory(database, url, "--create", "--ledger-timeout", "5s"), database)
    insert(database, 10)
    all_in_ledger(database, url)
    assert own_broker.process is not None
    own_broker.process.kill()
    own_broker.process.wait()
    insert(database, 10)
    code, _took = exits_within(relay, 120)
    output = relay.output()
    assert code == EXIT_RETRY, output[-2000:]
    assert "did not take a batch" in the_sentence(output)
    assert "FATAL" not in output and "rdkafka" not in output, output


def test_a_broker_back_empty_with_its_cluster_id_stops_the_relay_in_one_sentence(
    database: str, own_broker: LocalBroker, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"kafka://{own_broker.bootstrap}/ledger"
    relay = started(relay_factory(database, url, "--create", "--ledger-timeout", "90s"), database)
    insert(database, 30)
    all_in_ledger(database, url)
    assert own_broker.process is not None
    own_broker.process.kill()
    own_broker.process.wait()
    # The same cluster id, the topics made again, nothing in them: only offsets tell it went backwards.
    back = LocalBroker()
    back.port, back.cluster_id = own_broker.port, own_broker.cluster_id
    back.start()
    try:
        with open_ledger(url, writer=True, create=True):
            pass
        insert(database, 30)
        code, _took = exits_within(relay, 180)
        output = relay.output()
        # librdkafka's FATAL line (its idempotent producer unknown to the new broker) stays in the debug
        # log, and the fatal error is a retry through a new producer, not an internal error.
        assert "FATAL" not in output and "SystemError" not in output, output
        assert code == EXIT_OPERATOR, output[-2000:]
        assert "went backwards" in the_sentence(output)
    finally:
        back.stop()


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 24 MB tmpfs, mounted for the test (root only) and unmounted after."""
    mount = workdir / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_sqlite_ledger_stops_the_relay_and_a_restart_loses_nothing(
    database: str, small_disk: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    url = f"sqlite:///{small_disk}/ledger.db"
    relay = started(relay_factory(database, url, "--ledger-timeout", "5s"), database)
    ballast = small_disk / "ballast"
    with Load(database, tps=50, rows=10):
        time.sleep(1)
        with ballast.open("wb") as fill, contextlib.suppress(OSError):
            while True:
                fill.write(b"\0" * 65536)
                fill.flush()
        code, _took = exits_within(relay, 90)
        assert code == EXIT_RETRY
        assert "disk is full" in the_sentence(relay.output())
        stored = set(ledger_ids(url))
        ballast.unlink()
        restarted = started(relay_factory(database, url), database)
        time.sleep(2)
    all_in_ledger(database, url)
    assert stored <= set(ledger_ids(url)) == outbox_ids(database)
    restarted.process.send_signal(signal.SIGTERM)
    assert exits_within(restarted, 20)[0] == 0


def test_a_second_slot_on_the_database_is_named_when_the_relay_starts(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    postgres.install(database, ["public.orders"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('other_relay', 'pgoutput')")
    relay = started(relay_factory(database, f"sqlite:///{workdir}/ledger.db"), database)
    relay.process.send_signal(signal.SIGTERM)
    assert exits_within(relay, 20)[0] == 0
    assert "also has the logical slot other_relay" in relay.output() and "written twice" in relay.output()
