"""The embedded ledger: one SQLite file in WAL mode, for single-host use and for drills.

Writes use synchronous=FULL so an acknowledged batch survives a power cut, not only a crash.

Each published batch also writes one row to `ledger_blocks`: the batch's fingerprints and commit
times packed as two blobs. Reconcile scans a window by reading those few blocks instead of a million
rows; a record stored without one (a raw or unreadable body) is marked `digested = 0` and decoded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from drledger.errors import DrledgerError, LedgerUnavailable
from drledger.events import LedgerEvent, LedgerRecord, from_wire
from drledger.ledger.base import Ledger, LedgerScan, ProgressCallback, pack_times, unpack_times, window_bounds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_events (
    seq          INTEGER PRIMARY KEY,
    commit_ts_ms INTEGER,
    event_id     TEXT,
    body         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_events_commit_ts ON ledger_events (commit_ts_ms);
CREATE TABLE IF NOT EXISTS ledger_blocks (
    first_seq    INTEGER PRIMARY KEY,
    count        INTEGER NOT NULL,
    min_ts_ms    INTEGER NOT NULL,
    max_ts_ms    INTEGER NOT NULL,
    fingerprints BLOB NOT NULL,
    commit_ms    BLOB NOT NULL
);
"""
# Files written before blocks existed gain the column; their rows read as undigested, which is right.
_DIGESTED = """
ALTER TABLE ledger_events ADD COLUMN digested INTEGER NOT NULL DEFAULT 0;
"""
_RAW_INDEX = "CREATE INDEX IF NOT EXISTS ledger_events_raw ON ledger_events (seq) WHERE digested = 0"

_READ_CHUNK = 5000
_FETCH_CHUNK = 500


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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(ledger_events)")}
            if "digested" not in columns:
                self._db.executescript(_DIGESTED)
            self._db.execute(_RAW_INDEX)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"Cannot open the ledger file {path}: {exc}.") from None

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        self.store(events, [])

    def store(
        self, events: Sequence[LedgerEvent], raw: Sequence[tuple[int | None, str | None, bytes]]
    ) -> None:
        """Store events, with their block, and raw records as they are: (commit time, event id, body).

        Raw records are those that could not be read (or were never decoded); they are kept, and
        decoded again by every read.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if events:
                self._store_block(events)
            if raw:
                self._db.executemany(
                    "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (?, ?, ?)", raw
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerUnavailable(f"The ledger file {self.path} refused a write: {exc}.") from None

    def _store_block(self, events: Sequence[LedgerEvent]) -> None:
        # Explicit sequence numbers: the block names its rows by a contiguous range.
        first = self._db.execute("SELECT coalesce(max(seq), 0) + 1 FROM ledger_events").fetchone()[0]
        times = [e.commit_ts_ms for e in events]
        self._db.executemany(
            "INSERT INTO ledger_events (seq, commit_ts_ms, event_id, body, digested) VALUES (?, ?, ?, ?, 1)",
            [(first + i, e.commit_ts_ms, e.event_id, e.to_wire()) for i, e in enumerate(events)],
        )
        self._db.execute(
            "INSERT INTO ledger_blocks (first_seq, count, min_ts_ms, max_ts_ms, fingerprints, commit_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                first,
                len(events),
                min(times),
                max(times),
                b"".join(e.fingerprint for e in events),
                pack_times(times),
            ),
        )

    def scan(
        self,
        since_ms: int | None = None,
        until_ms: int | None = None,
        on_progress: ProgressCallback = None,
    ) -> LedgerScan:
        low, high = window_bounds(since_ms, until_ms)
        scan = LedgerScan()
        seqs = scan.positions
        reader = sqlite3.connect(self.path)
        try:
            reader.execute("BEGIN")  # blocks and raw rows from one snapshot
            blocks = reader.execute(
                "SELECT first_seq, count, fingerprints, commit_ms FROM ledger_blocks "
                "WHERE max_ts_ms >= ? AND min_ts_ms <= ? ORDER BY first_seq",
                (low, high),
            )
            for first, count, prints, packed in blocks:
                scan.take_block(prints, unpack_times(packed), range(first, first + count), low, high)
                if on_progress is not None:
                    on_progress(len(seqs))
            # Raw rows are few: found through their partial index, and their time checked once decoded.
            raw = reader.execute(
                "SELECT seq, commit_ts_ms, body FROM ledger_events WHERE digested = 0 ORDER BY seq"
            )
            for seq, stored_ms, body in raw:
                if stored_ms is not None and not low <= stored_ms <= high:
                    continue  # as read() does: a record whose time was known when stored is judged by it
                scan.take(from_wire(body, f"row {seq}"), seq, low, high)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()
        scan.fetch = lambda indexes: self._fetch([seqs[i] for i in indexes])
        return scan

    def _fetch(self, seqs: list[int]) -> list[LedgerEvent]:
        reader = sqlite3.connect(self.path)
        found: dict[int, LedgerEvent] = {}
        try:
            for start in range(0, len(seqs), _FETCH_CHUNK):
                chunk = seqs[start : start + _FETCH_CHUNK]
                marks = ",".join("?" * len(chunk))
                for seq, body in reader.execute(
                    f"SELECT seq, body FROM ledger_events WHERE seq IN ({marks})", chunk
                ):
                    record = from_wire(body, f"row {seq}")
                    if isinstance(record, LedgerEvent):
                        found[seq] = record
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()
        if len(found) < len(set(seqs)):
            raise LedgerUnavailable(f"The ledger file {self.path} no longer holds events its scan found.")
        return [found[s] for s in seqs]

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        low, high = window_bounds(since_ms, until_ms)
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
