"""What tests share besides fixtures: running the CLI, waiting, fresh databases, ledger events, and
the checks several modules make (a failover's aftermath, a page rendered in Chromium, a watcher).

Imported as `tests.helpers`; the fixtures are in conftest.py (tests/integration/conftest.py for
those that start services).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import psycopg
import pytest

from drledger.drill.postgres.cluster import LocalCluster, free_port
from drledger.drill.postgres.rig import FailoverRig
from drledger.events import LedgerEvent
from drledger.source.base import SourceDatabase

T = TypeVar("T")

#: The repository's root: the source, deploy/ and .drledger/ (where screenshots are kept) are below it.
REPO = Path(__file__).resolve().parent.parent
#: moto_server with its SQS calls no slower as a queue grows (benchmarks/ledgers.py starts it too).
MOTO_SERVER = Path(__file__).resolve().with_name("moto_fast.py")
DRLEDGER = [sys.executable, "-m", "drledger"]


# -- the command line and waiting ------------------------------------------------------------------


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRLEDGER, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def one_sentence(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> None:
    """The command failed with `code` and said why in one line, holding every fragment, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """The first true value `predicate` returns within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (whatever its status)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


# -- PostgreSQL ------------------------------------------------------------------------------------


def dsn_for(cluster: LocalCluster, dbname: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/{dbname}"


def create_database(cluster: LocalCluster, ddl: str = "") -> str:
    """A new database on `cluster` with `ddl` run in it; its DSN."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = dsn_for(cluster, name)
    if ddl:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ddl)
    return dsn


@contextlib.contextmanager
def fresh_database(cluster: LocalCluster, ddl: str = "") -> Iterator[str]:
    """A new database on `cluster` with `ddl` run in it, dropped (with its slots) afterwards; its DSN."""
    dsn = create_database(cluster, ddl)
    name = dsn.rsplit("/", 1)[1]
    try:
        yield dsn
    finally:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                (name,),
            )
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def slot_active(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])


# -- processes: the relay and the watcher --------------------------------------------------------------


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


class RelayFactory(Protocol):
    """The `relay_factory` fixture: starts `drledger relay` on a database and a ledger; each is
    SIGKILLed when the test ends."""

    def __call__(
        self, dsn: str, ledger_url: str, *extra: str, slot: str = "drledger_slot"
    ) -> RelayProcess: ...


@dataclass
class WatchProcess:
    """`drledger watch` running as a child process, serving /metrics on a loopback port of its own."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int
    _handle: IO[str]

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._handle.close()
        return code


def start_watch(database: str, ledger_url: str, log: Path, *options: str) -> WatchProcess:
    """`drledger watch --db database --ledger ledger_url --listen 127.0.0.1:<a free port> *options`,
    its output in `log`."""
    port = free_port()
    handle = log.open("w")
    process = subprocess.Popen(
        [
            *DRLEDGER,
            "watch",
            "--db",
            database,
            "--ledger",
            ledger_url,
            "--listen",
            f"127.0.0.1:{port}",
            *options,
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    return WatchProcess(process, log, port, handle)


# -- a failover, over ----------------------------------------------------------------------------------


@contextlib.contextmanager
def failover_aftermath(
    before_disaster: Callable[[FailoverRig], T],
    *,
    lag_s: float = 2.0,
    relay: bool = True,
    capture: bool = True,
    settle_s: float = 0.3,
) -> Iterator[tuple[FailoverRig, T]]:
    """What a real failover leaves, for the runbook's steps to be tried on.

    A FailoverRig started: the primary with the demo tables, its replica `lag_s` behind through the lag
    injector, and (unless `capture` or `relay` is False, for the caller to do its own way in
    `before_disaster`) the outbox installed and the relay streaming to the embedded ledger. Then
    `before_disaster(rig)`: the workload, and whatever a test sets up before it. After `settle_s` (the
    relay is milliseconds behind, the replica seconds), the disaster: in-flight WAL dropped, primary and
    relay SIGKILLed; the replica promoted. Yields the rig and what `before_disaster` returned; every
    server is stopped and its directory removed afterwards.
    """
    with FailoverRig(lag_s=lag_s) as rig:
        rig.start(relay=relay, capture=capture)
        outcome = before_disaster(rig)
        if settle_s:
            time.sleep(settle_s)
        rig.disaster()
        rig.failover()
        yield rig, outcome


# -- an HTML page, rendered by Chromium ------------------------------------------------------------------


def _chromium(page: Path) -> list[str]:
    """Headless Chromium, offline, with a profile beside `page`: the command line, less what to do."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed; make install installs it (Debian package chromium)")
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={page.parent / 'profile'}",
    ]


def rendered_dom(page: Path) -> str:
    """`page`'s DOM as Chromium builds it, offline."""
    dom = subprocess.run(
        [*_chromium(page), "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    return dom.stdout


def check_screenshot(page: Path, *, window_size: str, keep_as: str) -> None:
    """Chromium draws `page` (as `page`.png, more than a blank window's 20 kB); the picture is kept as
    .drledger/`keep_as` for a person to look at."""
    shot = page.with_suffix(".png")
    subprocess.run(
        [*_chromium(page), f"--window-size={window_size}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 20_000
    keep = REPO / ".drledger" / keep_as
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)


# -- ledger events and outbox slices -------------------------------------------------------------------


def make_events(
    count: int, start_ms: int, step_ms: int = 10, table: str = "public.orders"
) -> list[LedgerEvent]:
    return [
        LedgerEvent.from_outbox(
            event_id=f"00000000-0000-4000-8000-{i:012d}",
            table=table,
            key=str(i),
            op="insert",
            row_json=f'{{"id": {i}, "note": "ünïcode", "customer": "c{i}"}}',
            txid=1000 + i // 3,
            lsn=50_000 + i,
            commit_ts_ms=start_ms + i * step_ms,
        )
        for i in range(count)
    ]


def lost_to_a_ledger(dsn: str, ledger: Path, tables: str) -> tuple[list[LedgerEvent], str]:
    """A failover's loss, in small: the outbox's events published to an embedded ledger at `ledger`, then
    `tables` (SQL, comma-separated) and the outbox truncated, as a replica that never had those rows.
    The events, and the ledger's URL."""
    from drledger.ledger import open_ledger
    from drledger.source.postgres.outbox import read_window

    events = [r.as_event() for r in read_window(dsn, None, None)]
    with psycopg.connect(dsn) as conn:
        # init refuses a TRUNCATE of a captured table; replication's own role (a superuser's) passes it.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(f"TRUNCATE {tables}, drledger.outbox")
        conn.commit()
    url = f"sqlite:///{ledger}"
    with open_ledger(url, writer=True) as target:
        target.publish(events)
    return events, url


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
