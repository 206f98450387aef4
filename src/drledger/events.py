"""The ledger event: the one record every backend stores, and its versioned wire format.

A ledger event is the DR copy of one outbox row. Its identity is the outbox row's `id`, so the same
insert relayed twice is the same event, and the DR database's own outbox row carries the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

WIRE_VERSION = 1

_REQUIRED = ("event_id", "table", "key", "op", "row", "txid", "lsn", "commit_ts_ms", "row_sha256")


def canonical_row(row: dict[str, Any]) -> bytes:
    """The byte form a row image is hashed in: sorted keys, no whitespace, UTF-8.

    jsonb already normalises the row on both sides (the ledger's copy and the DR outbox's), so two
    images of the same row give the same bytes here whichever side they were read from.
    """
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_digest(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_row(row)).hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    event_id: str
    table: str
    key: str
    op: str
    row: dict[str, Any]
    txid: int
    lsn: int
    commit_ts_ms: int
    row_sha256: str

    @classmethod
    def from_outbox(
        cls,
        *,
        event_id: str,
        table: str,
        key: str,
        op: str,
        row: dict[str, Any],
        txid: int,
        lsn: int,
        commit_ts_ms: int,
    ) -> LedgerEvent:
        return cls(event_id, table, key, op, row, txid, lsn, commit_ts_ms, row_digest(row))

    @property
    def partition_key(self) -> str:
        """Table + row key: every version of one row lands in one ordered partition or group."""
        return f"{self.table}:{self.key}"

    def to_wire(self) -> bytes:
        return json.dumps(
            {
                "v": WIRE_VERSION,
                "event_id": self.event_id,
                "table": self.table,
                "key": self.key,
                "op": self.op,
                "row": self.row,
                "txid": self.txid,
                "lsn": self.lsn,
                "commit_ts_ms": self.commit_ts_ms,
                "row_sha256": self.row_sha256,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A ledger record that is not a readable event: counted and shown, never fatal."""

    position: str
    reason: str
    sample: str


LedgerRecord = LedgerEvent | MalformedRecord


def from_wire(data: bytes | str, position: str) -> LedgerRecord:
    """Decode one stored record; anything unreadable becomes a MalformedRecord, not an exception."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return MalformedRecord(position, f"not JSON ({exc.__class__.__name__})", _sample(data))
    if not isinstance(doc, dict):
        return MalformedRecord(position, "not a JSON object", _sample(data))
    version = doc.get("v")
    if version != WIRE_VERSION:
        return MalformedRecord(position, f"unknown wire version {version!r}", _sample(data))
    missing = [name for name in _REQUIRED if name not in doc]
    if missing:
        return MalformedRecord(position, f"missing {', '.join(missing)}", _sample(data))
    try:
        row = doc["row"]
        if not isinstance(row, dict):
            raise TypeError("row is not an object")
        return LedgerEvent(
            event_id=str(doc["event_id"]),
            table=str(doc["table"]),
            key=str(doc["key"]),
            op=str(doc["op"]),
            row=row,
            txid=int(doc["txid"]),
            lsn=int(doc["lsn"]),
            commit_ts_ms=int(doc["commit_ts_ms"]),
            row_sha256=str(doc["row_sha256"]),
        )
    except (TypeError, ValueError) as exc:
        return MalformedRecord(position, f"bad field ({exc})", _sample(data))


def _sample(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:120]
