"""The embedded ledger: one SQLite file in WAL mode, for single-host use and for drills.

Writes use synchronous=FULL so an acknowledged batch survives a power cut, not only a crash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from drledger.errors import DrledgerError, LedgerUnavailable
from drledger.events import LedgerEvent, LedgerRecord, from_wire
from drledger.ledger.base import Ledger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_events (
    seq          INTEGER PRIMARY KEY,
    commit_ts_ms INTEGER,
    event_id     TEXT,
    body         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_events_commit_ts ON ledger_events (commit_ts_ms);
"""

_READ_CHUNK = 5000


class SqliteLedger(Ledger):
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.display_url = f"sqlite://{path}"  # absolute paths give sqlite:///abs/path
        if not create and not path.exists():
            raise DrledgerError(f"The ledger file {path} does not exist.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"Cannot open the ledger file {path}: {exc}.") from None

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        self.store([(e.commit_ts_ms, e.event_id, e.to_wire()) for e in events])

    def store(self, rows: Sequence[tuple[int | None, str | None, bytes]]) -> None:
        """Store records as they are, readable or not: (commit time, event id, body)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerUnavailable(f"The ledger file {self.path} refused a write: {exc}.") from None

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        low = since_ms if since_ms is not None else -(2**62)
        high = until_ms if until_ms is not None else 2**62
        # A separate connection, so a long read never blocks the writer and sees one snapshot.
        reader = sqlite3.connect(self.path)
        try:
            cursor = reader.execute(
                "SELECT seq, body FROM ledger_events "
                "WHERE commit_ts_ms BETWEEN ? AND ? OR commit_ts_ms IS NULL ORDER BY seq",
                (low, high),
            )
            while chunk := cursor.fetchmany(_READ_CHUNK):
                for seq, body in chunk:
                    yield from_wire(body, f"row {seq}")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()

    def close(self) -> None:
        self._db.close()
