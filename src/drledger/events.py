"""The ledger event: the one record every backend stores, and its versioned wire format.

A ledger event is the DR copy of one outbox row. Its identity is the outbox row's `id`, so the same
insert relayed twice is the same event, and the DR database's own outbox row carries the same id.

The row image is kept as the exact text PostgreSQL's jsonb output gives for the outbox `payload`.
jsonb prints one value one way (keys ordered, spacing fixed), so that text is already canonical: its
SHA-256 is the content hash, the DR copy of the outbox hashes to the same digest, and replay hands
the text back to PostgreSQL unchanged. Parsing it into Python numbers would round large numerics.

An event is one change: an `insert` (its row image), an `update` (the row after, and `before_json`,
the row before) or a `delete` (the row as it was). Its content hash covers the operation and both
images (`change_digest`); for an insert it is the row image's own hash, as in wire version 1, so
version 1 records and insert-only outboxes keep their fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from drledger.errors import DrledgerError

WIRE_VERSION = 2
#: Wire versions still read: version 1 carried inserts only, without `before`.
READABLE_WIRE_VERSIONS = frozenset({1, 2})

#: The operations a ledger event may carry; a record with any other is malformed, never applied.
KNOWN_OPS = frozenset({"insert", "update", "delete"})
CAPTURABLE_OPS = ("insert", "update", "delete")
#: The changes `init` captures when told nothing else: every one (`--ops insert` keeps a table to fewer).
DEFAULT_OPS = CAPTURABLE_OPS
#: The operations in the order reports list them.
KNOWN_OPS_IN_ORDER = ("insert", "update", "delete")
#: The operations whose event carries the row as it was before (`before_json`).
OPS_WITH_BEFORE = frozenset({"update"})
# Bounds a trustworthy record stays within: PostgreSQL's bigint for txid, a 64-bit LSN, and commit
# times from the epoch to the last millisecond of year 9999 (what every timestamp type can hold).
MAX_TXID = 2**63 - 1
MAX_LSN = 2**64 - 1
MAX_COMMIT_TS_MS = 253_402_300_799_999
#: The ends of an open window: every commit time a record may carry lies between them.
EARLIEST_MS = 0
LATEST_MS = MAX_COMMIT_TS_MS
# An event id as PostgreSQL prints a uuid: one spelling per id, so ids compare as text.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

_REQUIRED = ("event_id", "table", "key", "op", "row", "txid", "lsn", "commit_ts_ms", "row_sha256")
_REQUIRED_SET = frozenset(_REQUIRED)


#: An event's fingerprint: its id (16 bytes) then its row digest (32 bytes). Reconcile compares whole
#: windows as sets of fingerprints, so the bulk that agrees is settled without decoding one record.
FINGERPRINT_BYTES = 48
EVENT_ID_BYTES = 16


def is_event_id(text: str) -> bool:
    """True for a UUID written as PostgreSQL prints one (lower case, hyphenated)."""
    return _CANONICAL_UUID.fullmatch(text) is not None


def row_digest(row_json: str) -> str:
    return hashlib.sha256(row_json.encode()).hexdigest()


def change_text(op: str, row_json: str, before_json: str | None = None) -> str:
    """The text an event's content hash is taken of: an insert's row image alone (as in wire version
    1); for any other change, the operation, the image before (empty for a delete) and the row image,
    one per line. The capture trigger hashes the same text, so the database's fingerprint matches."""
    if op == "insert":
        return row_json
    return f"{op}\n{before_json or ''}\n{row_json}"


def change_digest(op: str, row_json: str, before_json: str | None = None) -> str:
    return hashlib.sha256(change_text(op, row_json, before_json).encode()).hexdigest()


def event_id_bytes(event_id: str) -> bytes:
    """The id as PostgreSQL's uuid_send gives it, so the DR database computes the same fingerprint.

    Outbox ids are UUIDs; any other id (a hand-made record) is hashed, and can never match a DR row.
    """
    if len(event_id) == 36 and event_id[8] == event_id[13] == event_id[18] == event_id[23] == "-":
        try:  # the canonical form, as PostgreSQL prints a uuid: a tenth of uuid.UUID's cost
            return bytes.fromhex(event_id.replace("-", ""))
        except ValueError:
            pass
    try:
        return uuid.UUID(event_id).bytes
    except ValueError:
        return hashlib.sha256(event_id.encode()).digest()[:EVENT_ID_BYTES]


def event_id_text(id_bytes: bytes) -> str:
    return str(uuid.UUID(bytes=id_bytes))


def row_fingerprint(
    event_id: str, row_json: str, op: str = "insert", before_json: str | None = None
) -> bytes:
    """The fingerprint of an event id and a change, hashing the images themselves."""
    return event_id_bytes(event_id) + hashlib.sha256(change_text(op, row_json, before_json).encode()).digest()


def fingerprint(event_id: str, row_sha256: str) -> bytes:
    try:
        digest = bytes.fromhex(row_sha256)
    except ValueError:
        digest = b""
    if len(digest) != 32:  # not a SHA-256: this record can only ever mismatch
        digest = hashlib.sha256(row_sha256.encode()).digest()
    return event_id_bytes(event_id) + digest


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    event_id: str
    table: str
    key: str
    op: str
    row_json: str
    txid: int
    lsn: int
    commit_ts_ms: int
    row_sha256: str  # the change's content hash (change_digest); for an insert, the row image's
    before_json: str | None = None  # an update's row before the change

    @classmethod
    def from_outbox(
        cls,
        *,
        event_id: str,
        table: str,
        key: str,
        op: str,
        row_json: str,
        txid: int,
        lsn: int,
        commit_ts_ms: int,
        before_json: str | None = None,
    ) -> LedgerEvent:
        return cls(
            event_id,
            table,
            key,
            op,
            row_json,
            txid,
            lsn,
            commit_ts_ms,
            change_digest(op, row_json, before_json),
            before_json,
        )

    @property
    def row(self) -> dict[str, Any]:
        """The row image as Python values, numbers exact (Decimal), for display and tests."""
        parsed: dict[str, Any] = json.loads(self.row_json, parse_float=Decimal)
        return parsed

    @property
    def fingerprint(self) -> bytes:
        return fingerprint(self.event_id, self.row_sha256)

    @property
    def partition_key(self) -> str:
        """Table + row key: every version of one row lands in one ordered partition or group."""
        return f"{self.table}:{self.key}"

    def to_wire(self) -> bytes:
        return orjson.dumps(
            {
                "v": WIRE_VERSION,
                "event_id": self.event_id,
                "table": self.table,
                "key": self.key,
                "op": self.op,
                "row": self.row_json,
                "txid": self.txid,
                "lsn": self.lsn,
                "commit_ts_ms": self.commit_ts_ms,
                "row_sha256": self.row_sha256,
                "before": self.before_json,
            }
        )


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A ledger record that is not a readable event: counted and shown, never fatal."""

    position: str
    reason: str
    sample: str


LedgerRecord = LedgerEvent | MalformedRecord

#: How many malformed records a report, a census or a replay keeps as samples.
MALFORMED_SAMPLES = 10


@dataclass
class MalformedTally:
    """Counts unreadable records, keeps a few as samples, and lets the readable events through."""

    count: int = 0
    samples: list[MalformedRecord] = field(default_factory=list)
    keep: int = MALFORMED_SAMPLES

    def add(self, record: MalformedRecord) -> None:
        self.count += 1
        if len(self.samples) < self.keep:
            self.samples.append(record)

    def merge(self, other: MalformedTally) -> None:
        self.count += other.count
        self.samples.extend(other.samples[: max(0, self.keep - len(self.samples))])

    def events(
        self,
        records: Iterable[LedgerRecord],
        on_progress: Callable[[int], None] | None = None,
        every: int = 10_000,
    ) -> Iterator[LedgerEvent]:
        for count, record in enumerate(records, 1):
            if on_progress is not None and count % every == 0:
                on_progress(count)
            if isinstance(record, MalformedRecord):
                self.add(record)
                continue
            yield record


# Transaction ids made up for events that know none live above every real one (PostgreSQL's are 64-bit
# but far below this; MySQL's are binlog positions, file << 32 | offset).
OWN_TRANSACTION_TXIDS = 1 << 61


def own_transaction_txid(event_id: str) -> int:
    """A transaction id of the event's own, from its id: for an event no source transaction is known for."""
    return OWN_TRANSACTION_TXIDS | int.from_bytes(event_id_bytes(event_id)[:8], "big") >> 2


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One row of a source database's outbox, as reconcile and backfill see it, whatever the engine."""

    event_id: str
    table: str
    key: str
    op: str
    row_json: str
    txid: int
    created_at_ms: int
    row_sha256: str
    before_json: str | None = None
    # Where the row stands among the changes (PostgreSQL: its transaction id, then its command's number
    # in it, from 1; MySQL: its creation in microseconds): without a log position, what orders changes.
    position: int = 0

    def as_event(self) -> LedgerEvent:
        """The event this row records, read from the table rather than a change stream: its commit
        time is created_at (its statement's time, just before the commit) and its log position is
        `position`, which orders the changes of one transaction (0: unknown), so replay orders it by
        commit time, then transaction. A row without a transaction id (MySQL's
        outbox has none) is a transaction of its own, never one giant one with every other such row."""
        txid = self.txid or own_transaction_txid(self.event_id)
        return LedgerEvent.from_outbox(
            event_id=self.event_id,
            table=self.table,
            key=self.key,
            op=self.op,
            row_json=self.row_json,
            txid=txid,
            lsn=self.position,
            commit_ts_ms=self.created_at_ms,
            before_json=self.before_json,
        )


def from_wire(data: bytes | str, position: str) -> LedgerRecord:
    """Decode one stored record; anything unreadable becomes a MalformedRecord, not an exception."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return MalformedRecord(position, f"not JSON ({exc.__class__.__name__})", _sample(data))
    if not isinstance(doc, dict):
        return MalformedRecord(position, "not a JSON object", _sample(data))
    version = doc.get("v")
    if version not in READABLE_WIRE_VERSIONS or isinstance(version, bool):
        return MalformedRecord(position, f"unknown wire version {version!r}", _sample(data))
    if not doc.keys() >= _REQUIRED_SET:
        missing = [name for name in _REQUIRED if name not in doc]
        return MalformedRecord(position, f"missing {', '.join(missing)}", _sample(data))
    problem = _field_problem(doc, version)
    if problem is not None:
        return MalformedRecord(position, problem, _sample(data))
    row = doc["row"]
    before = doc.get("before")
    try:
        digest = change_digest(doc["op"], row, before)
    except UnicodeEncodeError:
        return MalformedRecord(position, "the row is not valid text", _sample(data))
    if digest != doc["row_sha256"]:
        return MalformedRecord(position, "the row does not match its row_sha256", _sample(data))
    return LedgerEvent(
        event_id=doc["event_id"],
        table=doc["table"],
        key=doc["key"],
        op=doc["op"],
        row_json=row,
        txid=doc["txid"],
        lsn=doc["lsn"],
        commit_ts_ms=doc["commit_ts_ms"],
        row_sha256=doc["row_sha256"],
        before_json=before,
    )


def _field_problem(doc: dict[str, Any], version: int) -> str | None:
    """Why a decoded document is not a trustworthy event, or None. Types are checked, never coerced."""
    for name in ("event_id", "table", "key", "op", "row", "row_sha256"):
        if not isinstance(doc[name], str):
            return f"bad field ({name} is not text)"
    if not is_event_id(doc["event_id"]):
        return "bad field (event_id is not a UUID)"
    if not doc["table"]:
        return "bad field (table is empty)"
    if doc["op"] not in KNOWN_OPS or (version == 1 and doc["op"] != "insert"):
        return f"bad field (unknown op {doc['op'][:20]!r})"
    before = doc.get("before")
    if doc["op"] in OPS_WITH_BEFORE:
        if not isinstance(before, str):
            return f"bad field (an {doc['op']} without its before image)"
    elif before is not None:
        return f"bad field (an {doc['op']} with a before image)"
    if not _SHA256_HEX.fullmatch(doc["row_sha256"]):
        return "bad field (row_sha256 is not a SHA-256)"
    for name, high in (("txid", MAX_TXID), ("lsn", MAX_LSN), ("commit_ts_ms", MAX_COMMIT_TS_MS)):
        value = doc[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
            return f"bad field ({name} is not a whole number from 0 to {high})"
    return None


def _sample(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:120]


def parse_ops(text: str | None) -> tuple[str, ...]:
    """`--ops insert,update` → the operations, in capture order; one sentence for anything else."""
    if text is None:
        return DEFAULT_OPS
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(CAPTURABLE_OPS))
    if unknown or "insert" not in chosen:
        raise DrledgerError(
            f"--ops takes insert, update and delete, comma-separated, insert always among them; not {text!r}."
        )
    return tuple(op for op in CAPTURABLE_OPS if op in chosen)
