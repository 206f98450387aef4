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
from urllib.parse import SplitResult, quote

from drledger.errors import DrledgerError, LedgerMissing, LedgerUnavailable
from drledger.events import LedgerEvent, LedgerRecord, MalformedRecord, from_wire
from drledger.files import PRIVATE_DIR, create_private
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


def url_in(directory: Path) -> str:
    """The URL of an embedded ledger file in `directory`."""
    return f"sqlite://{directory.resolve()}/ledger.db"


class SqliteLedger(Ledger):
    """A writer creates and upgrades the file; a reader opens it read-only and never changes it."""

    schemes = ("sqlite",)

    @classmethod
    def parse(cls, url: str, parts: SplitResult) -> Path:
        # sqlite:///abs/path and sqlite://./relative both name a file.
        raw_path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not raw_path.strip("/"):
            raise DrledgerError(f"The ledger URL '{url}' names no file; write sqlite:///path/ledger.db.")
        # sqlite:///tmp/l.db and sqlite:////tmp/l.db (SQLAlchemy's spelling) both mean /tmp/l.db.
        return Path("/" + raw_path.lstrip("/") if raw_path.startswith("/") else raw_path)

    @classmethod
    def open(cls, address: Path, config: dict[str, str], *, writer: bool, create: bool) -> SqliteLedger:
        return cls(address, create=writer)

    @classmethod
    def sibling_url(cls, url: str, tag: str) -> str:
        base, question, query = url.partition("?")
        stem, dot, suffix = base.rpartition(".")
        return (f"{stem}-{tag}.{suffix}" if dot and "/" not in suffix else f"{base}-{tag}") + question + query

    def destroy(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.display_url = f"sqlite://{path}"  # absolute paths give sqlite:///abs/path
        self.writer = create
        try:
            exists = path.exists()
        except OSError as exc:  # a name longer than the file system takes, a component not a folder
            raise DrledgerError(
                f"The ledger file cannot be opened: {exc.strerror} ({len(str(path))} characters)."
            ) from None
        if not create and not exists:
            raise LedgerMissing(f"The ledger file {path} does not exist.")
        if create:
            self._db: sqlite3.Connection | None = self._open_writer(path)
            self._layout = (True, True)
        else:
            self._db = None
            self._layout = self._read_layout()

    @staticmethod
    def _open_writer(path: Path) -> sqlite3.Connection:
        try:
            if not path.parent.exists():
                path.parent.mkdir(mode=PRIVATE_DIR, parents=True)
            if not path.exists():
                # Row images are business data: only the owner reads them (SQLite gives its -wal and
                # -shm files the same mode).
                create_private(path)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(ledger_events)")}
            if "digested" not in columns:
                db.executescript(_DIGESTED)
            db.execute(_RAW_INDEX)
            return db
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"Cannot open the ledger file {path}: {exc}.") from None

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection: nothing is created, upgraded or switched in the file it reads.

        A file whose directory this process cannot write (an archived copy) cannot take the WAL
        reader's shared-memory file; it is then opened as immutable, which it is.
        """
        location = f"file:{quote(str(self.path.resolve()))}"
        try:
            reader = sqlite3.connect(f"{location}?mode=ro", uri=True, check_same_thread=False)
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return reader
        except sqlite3.Error:
            pass
        try:
            return sqlite3.connect(f"{location}?immutable=1", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None

    def _read_layout(self) -> tuple[bool, bool]:
        """(has blocks, marks digested rows): files from older versions lack one or both."""
        reader = self._reader()
        try:
            tables = {r[0] for r in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "ledger_events" not in tables:
                raise DrledgerError(
                    f"The file {self.path} is not a drledger ledger (it has no ledger_events)."
                )
            columns = {r[1] for r in reader.execute("PRAGMA table_info(ledger_events)")}
        except sqlite3.Error as exc:
            raise DrledgerError(f"The file {self.path} is not a readable drledger ledger: {exc}.") from None
        finally:
            reader.close()
        # Blocks list only rows marked digested; without the mark every row is read raw.
        digested = "digested" in columns
        return "ledger_blocks" in tables and digested, digested

    @property
    def _writer_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise DrledgerError(
                f"The ledger {self.display_url} was opened for reading; it cannot be written."
            )
        return self._db

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        self.store(events, [])

    def store(
        self, events: Sequence[LedgerEvent], raw: Sequence[tuple[int | None, str | None, bytes]]
    ) -> None:
        """Store events, with their block, and raw records as they are: (commit time, event id, body).

        Raw records are those that could not be read (or were never decoded); they are kept, and
        decoded again by every read.
        """
        db = self._writer_db
        try:
            db.execute("BEGIN IMMEDIATE")
            if events:
                self._store_block(db, events)
            if raw:
                db.executemany(
                    "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (?, ?, ?)", raw
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise LedgerUnavailable(f"The ledger file {self.path} refused a write: {exc}.") from None

    def _store_block(self, db: sqlite3.Connection, events: Sequence[LedgerEvent]) -> None:
        # Explicit sequence numbers: the block names its rows by a contiguous range.
        first = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM ledger_events").fetchone()[0]
        times = [e.commit_ts_ms for e in events]
        db.executemany(
            "INSERT INTO ledger_events (seq, commit_ts_ms, event_id, body, digested) VALUES (?, ?, ?, ?, 1)",
            [(first + i, e.commit_ts_ms, e.event_id, e.to_wire()) for i, e in enumerate(events)],
        )
        db.execute(
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
        has_blocks, marks_digested = self._layout
        reader = self._reader()
        try:
            reader.execute("BEGIN")  # blocks and raw rows from one snapshot
            blocks = (
                reader.execute(
                    "SELECT first_seq, count, fingerprints, commit_ms FROM ledger_blocks "
                    "WHERE max_ts_ms >= ? AND min_ts_ms <= ? ORDER BY first_seq",
                    (low, high),
                )
                if has_blocks
                else []
            )
            for first, count, prints, packed in blocks:
                scan.take_block(prints, unpack_times(packed), range(first, first + count), low, high)
                if on_progress is not None:
                    on_progress(len(seqs))
            # Raw rows are few: found through their partial index, and their time checked once decoded.
            # A file from before blocks existed holds only raw rows.
            raw = reader.execute(
                "SELECT seq, commit_ts_ms, body FROM ledger_events "
                + ("WHERE digested = 0 " if marks_digested else "")
                + "ORDER BY seq"
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

    def _fetch(self, seqs: list[int]) -> list[LedgerRecord]:
        reader = self._reader()
        found: dict[int, LedgerRecord] = {}
        try:
            for start in range(0, len(seqs), _FETCH_CHUNK):
                chunk = seqs[start : start + _FETCH_CHUNK]
                marks = ",".join("?" * len(chunk))
                for seq, body in reader.execute(
                    f"SELECT seq, body FROM ledger_events WHERE seq IN ({marks})", chunk
                ):
                    found[seq] = from_wire(body, f"row {seq}")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()
        # A row its block lists and the file no longer holds: damage, counted as malformed.
        return [
            found.get(s) or MalformedRecord(f"row {s}", "listed by its block but no longer in the file", "")
            for s in seqs
        ]

    def newest_commit_ms(self, since_ms: int | None = None) -> int | None:
        """One step down the commit-time index: the newest event the relay stored (raw records, whose
        time is not proven, are skipped)."""
        if not self._layout[1]:  # a file from before rows were marked digested
            return super().newest_commit_ms(since_ms)
        reader = self._reader()
        try:
            row = reader.execute(
                "SELECT commit_ts_ms FROM ledger_events WHERE commit_ts_ms >= ? AND digested = 1 "
                "ORDER BY commit_ts_ms DESC LIMIT 1",
                (since_ms if since_ms is not None else 0,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()
        return int(row[0]) if row else None

    def event_ids(self, since_ms: int, until_ms: int) -> set[bytes]:
        """The window's ids straight from the commit-time index (rows the relay stored whole, whose id
        column it wrote from the proven event), and the few raw rows decoded."""
        if not self._layout[1]:
            return super().event_ids(since_ms, until_ms)
        reader = self._reader()
        found: set[bytes] = set()
        try:
            reader.execute("BEGIN")
            for (text,) in reader.execute(
                "SELECT event_id FROM ledger_events WHERE commit_ts_ms BETWEEN ? AND ? AND digested = 1",
                (since_ms, until_ms),
            ):
                found.add(
                    bytes.fromhex(text.replace("-", ""))
                )  # a UUID's text, its bytes without a UUID object
            for seq, body in reader.execute("SELECT seq, body FROM ledger_events WHERE digested = 0"):
                record = from_wire(body, f"row {seq}")
                if isinstance(record, LedgerEvent) and since_ms <= record.commit_ts_ms <= until_ms:
                    found.add(record.fingerprint[:16])
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"Cannot read the ledger file {self.path}: {exc}.") from None
        finally:
            reader.close()
        return found

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        low, high = window_bounds(since_ms, until_ms)
        # A separate connection, so a long read never blocks the writer and sees one snapshot.
        reader = self._reader()
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
        if self._db is not None:
            self._db.close()
            self._db = None
