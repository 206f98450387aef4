"""Debezium change records of the outbox → ledger events. Pure: no I/O, tested directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from drledger.events import LedgerEvent

OUTBOX_SOURCE = ("drledger", "outbox")


def outbox_change_to_event(value: str | bytes) -> LedgerEvent | None:
    """One Debezium JSON change value (schemas disabled) → the ledger event it carries.

    None for anything else on the stream: heartbeats, the heartbeat table's own changes, tombstones,
    deletes made by pruning. Commit time is Debezium's `source.ts_ms`, the source database's commit
    clock, never the connector's; a snapshot read has no commit of its own, so the outbox row's
    created_at stands in.
    """
    change: dict[str, Any] = orjson.loads(value)
    op = change.get("op")
    if op not in ("c", "r"):
        return None
    source = change["source"]
    if (source.get("schema"), source.get("table")) != OUTBOX_SOURCE:
        return None
    after = change["after"]
    payload = after["payload"]
    row_json = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    commit_ts_ms = _iso_to_ms(after["created_at"]) if op == "r" else int(source["ts_ms"])
    return LedgerEvent.from_outbox(
        event_id=str(after["id"]),
        table=str(after["aggregatetype"]),
        key=str(after["aggregateid"]),
        op=str(after["type"]),
        row_json=row_json,
        txid=int(after["txid"]),
        lsn=int(source.get("lsn") or 0),
        commit_ts_ms=commit_ts_ms,
    )


def _iso_to_ms(text: str | int) -> int:
    if isinstance(text, int):
        # Some time precision modes give epoch microseconds.
        return text // 1000
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
