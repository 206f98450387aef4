"""Debezium change records of the outbox → ledger events. Pure: no I/O, tested directly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from drledger.events import LedgerEvent, own_transaction_txid
from drledger.streaming import binlog_position, binlog_transaction_txid

OUTBOX_SOURCE = ("drledger", "outbox")
#: The outbox as Debezium names it in a transaction's END record ("data_collection"), on either engine.
OUTBOX_COLLECTION = ".".join(OUTBOX_SOURCE)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """What one record on Debezium's stream means to the relay.

    `kind`: "change" (a row change of a captured table), "begin" or "end" (a source transaction's
    boundary, from provide.transaction.metadata), or "other" (a heartbeat message, a tombstone).
    `transaction`: Debezium's id of the source transaction a change or boundary belongs to; None for a
    snapshot read, which has none. `outbox`: the change is one of drledger.outbox's, whatever its op
    (an END counts prune deletes too). `event`: the ledger event it carries, if any. `outbox_changes`:
    on an END, how many outbox changes the transaction made.
    """

    kind: str
    transaction: str | None = None
    outbox: bool = False
    event: LedgerEvent | None = None
    snapshot: bool = False
    outbox_changes: int = 0


OTHER = StreamRecord("other")
# PostgreSQL's transaction ids in Debezium's metadata are "xid:LSN", the LSN that of the record itself,
# so one transaction's records carry different ids; MySQL's (a GTID "uuid:n", "domain-server-n" on
# MariaDB, or "file=…,pos=…") never have this all-digits form.
_POSTGRES_TRANSACTION = re.compile(r"(\d+):\d+")


def transaction_identity(debezium_id: object) -> str:
    """The source transaction a Debezium transaction id names, the same on every record of it. Pure."""
    text = str(debezium_id)
    postgres = _POSTGRES_TRANSACTION.fullmatch(text)
    return postgres.group(1) if postgres else text


def read_stream_record(value: str | bytes | None) -> StreamRecord:
    """One Debezium JSON value (schemas disabled) → what it is. Pure; raises on an unreadable outbox
    change (KeyError, TypeError, ValueError), as outbox_change_to_event does."""
    if value is None:
        return OTHER
    record: dict[str, Any] = orjson.loads(value)
    if not isinstance(record, dict):
        return OTHER
    status = record.get("status")
    if "op" not in record and status in ("BEGIN", "END"):
        boundary = transaction_identity(record["id"])
        if status == "BEGIN":
            return StreamRecord("begin", boundary)
        counts = record.get("data_collections") or []
        changes = sum(int(c["event_count"]) for c in counts if c.get("data_collection") == OUTBOX_COLLECTION)
        return StreamRecord("end", boundary, outbox_changes=changes)
    if "op" not in record or not isinstance(record.get("source"), dict):
        return OTHER
    source = record["source"]
    snapshot = record.get("op") == "r"
    block = record.get("transaction")
    # A snapshot read belongs to no source transaction: no END will ever come for it.
    transaction = (
        transaction_identity(block["id"])
        if isinstance(block, dict) and block.get("id") is not None and not snapshot
        else None
    )
    outbox = (source.get("schema") or source.get("db"), source.get("table")) == OUTBOX_SOURCE
    event = change_to_event(record) if outbox else None
    return StreamRecord("change", transaction, outbox, event, snapshot)


def outbox_change_to_event(value: str | bytes) -> LedgerEvent | None:
    """One Debezium JSON change value (schemas disabled) → the ledger event it carries.

    None for anything else on the stream: heartbeats, the heartbeat table's own changes, tombstones,
    deletes made by pruning, transaction markers. Commit time is the source database's commit clock,
    never the connector's: PostgreSQL's `source.ts_ms`; on MySQL, whose binlog gives whole seconds, the
    later of that and the outbox row's created_at (the inserting statement's time, in microseconds,
    just before its commit). A snapshot read has no commit of its own, so created_at stands in. The
    transaction id is the outbox's `txid` where the trigger could write one (PostgreSQL); MySQL's
    comes from the binlog, the position of its transaction (file number and offset as one number).
    """
    change: dict[str, Any] = orjson.loads(value)
    return change_to_event(change)


def change_to_event(change: dict[str, Any]) -> LedgerEvent | None:
    """A parsed Debezium change value → its ledger event (see outbox_change_to_event)."""
    op = change.get("op")
    if op not in ("c", "r"):
        return None
    source = change["source"]
    if (source.get("schema") or source.get("db"), source.get("table")) != OUTBOX_SOURCE:
        return None
    mysql = source.get("connector") == "mysql"
    after = change["after"]
    payload = after["payload"]
    row_json = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    before = after.get("before_image")  # an update's row before it (absent on MySQL, None otherwise)
    before_json = before if isinstance(before, str) or before is None else orjson.dumps(before).decode()
    created_ms = _iso_to_ms(after["created_at"])
    if op == "r":
        commit_ts_ms = created_ms
    elif mysql:
        commit_ts_ms = max(int(source["ts_ms"]), created_ms)
    else:
        commit_ts_ms = int(source["ts_ms"])
    # PostgreSQL's trigger always writes txid: a row without it is a damaged outbox, said by name.
    txid = after.get("txid") if mysql else after["txid"]
    if txid is None and op == "r":
        # A MySQL snapshot read knows no transaction: each row is its own, never one giant one.
        txid = own_transaction_txid(str(after["id"]))
    return LedgerEvent.from_outbox(
        event_id=str(after["id"]),
        table=str(after["aggregatetype"]),
        key=str(after["aggregateid"]),
        op=str(after["type"]),
        row_json=row_json,
        txid=int(txid) if txid is not None else binlog_txid(change),
        lsn=int(source.get("lsn") or 0) or _binlog_position(source),
        commit_ts_ms=commit_ts_ms,
        before_json=before_json,
    )


def binlog_txid(change: dict[str, Any]) -> int:
    """A MySQL transaction's id: where it begins in the binlog, as (file number << 32) | offset, from
    Debezium's transaction metadata (or, without it, the change's own position)."""
    transaction = change.get("transaction") or {}
    txid = binlog_transaction_txid(str(transaction.get("id") or ""))
    return txid if txid is not None else _binlog_position(change.get("source") or {})


def _binlog_position(source: dict[str, Any]) -> int:
    """A MySQL change's place in the binlog (streaming.binlog_position), from its source block."""
    return binlog_position(source.get("file"), int(source.get("pos") or 0), int(source.get("row") or 0))


def _iso_to_ms(text: str | int) -> int:
    if isinstance(text, int):
        # Some time precision modes give epoch microseconds.
        return text // 1000
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
