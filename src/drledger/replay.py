"""Replay: put the events the DR database lost back into it, idempotently and without overwriting.

Ordering (pure, tested directly): events are grouped by source transaction; transactions go in commit
order (commit time, then the highest LSN among their changes); changes within one go in LSN order.

Applying: transactions are applied in commit order, several to one database transaction (a chunk),
so each source transaction is applied entirely or not at all. In a chunk, each table's rows go in one
set-based INSERT … ON CONFLICT DO NOTHING, tables in the order the source first wrote them. A row
whose key already holds the same content counts as present; different content is a conflict — the
new primary wrote that key after failover — reported with both versions, skipped (or, with
on_conflict='fail', the chunk is rolled back and replay stops). The original outbox row goes back with
the same event id, capture suppressed, so reconcile sees the event as present and no new event is
minted. An event whose id is already in the outbox was applied before and is left alone: a second
replay changes nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql

from drledger.db import connect
from drledger.errors import DrledgerError
from drledger.events import LedgerEvent, row_fingerprint
from drledger.outbox.postgres import (
    REPLAY_LOG_DDL,
    SUPPRESS_SETTING,
    TableName,
    key_expression,
    primary_key_columns,
)

CHUNK_EVENTS = 5_000
REPLAY_LOCK = 0x64726C6564676572  # "drledger"


@dataclass(frozen=True)
class SourceTransaction:
    txid: int
    commit_ts_ms: int
    events: tuple[LedgerEvent, ...]

    @property
    def tables(self) -> list[str]:
        """Tables in the order this transaction first wrote them."""
        return list(dict.fromkeys(e.table for e in self.events))


def plan_replay(events: Iterable[LedgerEvent]) -> list[SourceTransaction]:
    """Group by source transaction and order by commit; duplicates (same event id) collapse to one."""
    by_tx: dict[int, dict[str, LedgerEvent]] = {}
    for event in events:
        by_tx.setdefault(event.txid, {}).setdefault(event.event_id, event)
    transactions = []
    for txid, members in by_tx.items():
        ordered = tuple(sorted(members.values(), key=lambda e: (e.lsn, e.event_id)))
        commit = max(e.commit_ts_ms for e in ordered)
        transactions.append(SourceTransaction(txid, commit, ordered))
    transactions.sort(key=lambda t: (t.commit_ts_ms, max(e.lsn for e in t.events), t.txid))
    return transactions


def chunk_transactions(
    transactions: Sequence[SourceTransaction], max_events: int
) -> list[list[SourceTransaction]]:
    """Consecutive transactions in chunks of about max_events; a transaction is never split."""
    chunks: list[list[SourceTransaction]] = []
    current: list[SourceTransaction] = []
    size = 0
    for transaction in transactions:
        if current and size + len(transaction.events) > max_events:
            chunks.append(current)
            current, size = [], 0
        current.append(transaction)
        size += len(transaction.events)
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Conflict:
    event_id: str
    table: str
    key: str
    ledger_row: str
    current_row: str | None  # None: the clash is on another unique key than the primary key


@dataclass
class ReplayResult:
    applied: int = 0
    present: int = 0  # the row was already there with the same content
    already_replayed: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    transactions: int = 0
    stopped_on_conflict: bool = False
    # What replay put back (applied or found present): fencing advances sequences past these keys.
    restored: list[LedgerEvent] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "applied": self.applied,
            "present": self.present,
            "already_replayed": self.already_replayed,
            "conflicts": [c.__dict__ for c in self.conflicts],
            "stopped_on_conflict": self.stopped_on_conflict,
        }


@dataclass(frozen=True)
class _TableShape:
    name: TableName
    key_columns: list[str]
    insert_columns: list[str]


def _table_shape(conn: psycopg.Connection[Any], qualified: str) -> _TableShape:
    table = TableName.parse(qualified)
    keys = primary_key_columns(conn, table)
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (table.qualified,),
        ).fetchall()
    ]
    return _TableShape(table, keys, columns)


def apply_replay(
    dsn: str,
    transactions: Sequence[SourceTransaction],
    *,
    on_conflict: str = "skip",
    chunk_events: int = CHUNK_EVENTS,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    if on_conflict not in ("skip", "fail"):
        raise DrledgerError("--on-conflict must be 'skip' or 'fail'.")
    result = ReplayResult()
    with connect(dsn) as conn:
        # Replay is idempotent, so a crash that loses its last commits costs only a re-run; not waiting
        # for each commit's flush is what lets it apply tens of thousands of rows a second.
        conn.execute("SET synchronous_commit = off")
        for statement in REPLAY_LOG_DDL.split(";"):
            conn.execute(statement)
        conn.commit()
        shapes: dict[str, _TableShape] = {}
        done = 0
        for chunk in chunk_transactions(transactions, chunk_events):
            events = [e for t in chunk for e in t.events]
            for table in dict.fromkeys(e.table for e in events):
                if table not in shapes:
                    shapes[table] = _table_shape(conn, table)
            stop = _apply_chunk(conn, chunk, shapes, on_conflict, result)
            if stop:
                conn.rollback()
                result.stopped_on_conflict = True
                break
            conn.commit()
            result.transactions += len(chunk)
            done += len(events)
            if on_progress is not None:
                on_progress(done)
    return result


def _apply_chunk(
    conn: psycopg.Connection[Any],
    chunk: list[SourceTransaction],
    shapes: dict[str, _TableShape],
    on_conflict: str,
    result: ReplayResult,
) -> bool:
    """Apply one chunk inside the open transaction; True means stop (a conflict under 'fail')."""
    conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
    # One replay at a time per database: two would race between the check below and the COPY.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REPLAY_LOCK,))
    events = [e for t in chunk for e in t.events]
    replayed_before = {
        r[0]
        for r in conn.execute(
            "SELECT o.id::text FROM drledger.outbox o "
            "WHERE o.id IN (SELECT value::uuid FROM jsonb_array_elements_text(%s::jsonb))",
            (orjson.dumps([e.event_id for e in events]).decode(),),
        ).fetchall()
    }
    pending = [e for e in events if e.event_id not in replayed_before]
    result.already_replayed += len(events) - len(pending)
    outcome: dict[str, str] = {}
    conflicts: list[Conflict] = []
    for table in dict.fromkeys(e.table for e in pending):
        rows = [e for e in pending if e.table == table]
        inserted = _insert_rows(conn, shapes[table], rows)
        not_inserted = [e for e in rows if e.key not in inserted]
        current = _current_rows(conn, shapes[table], not_inserted) if not_inserted else {}
        for event in rows:
            if event.key in inserted:
                outcome[event.event_id] = "applied"
            elif current.get(event.key) == event.row_json:
                outcome[event.event_id] = "present"
            else:
                outcome[event.event_id] = "conflict"
                conflicts.append(
                    Conflict(event.event_id, table, event.key, event.row_json, current.get(event.key))
                )
    if conflicts and on_conflict == "fail":
        result.conflicts.extend(conflicts)
        return True
    restored = [e for e in pending if outcome[e.event_id] != "conflict"]
    if restored:
        # COPY is the cheapest way in; no row can clash, since the ids were checked above under the lock.
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY drledger.outbox (id, aggregatetype, aggregateid, type, payload, txid, created_at, fingerprint) "
                "FROM STDIN"
            ) as copy,
        ):
            for e in restored:
                # The fingerprint of the row image replayed, not the one the ledger record claims.
                stored_print = row_fingerprint(e.event_id, e.row_json)
                copy.write_row(
                    (
                        e.event_id,
                        e.table,
                        e.key,
                        e.op,
                        e.row_json,
                        e.txid,
                        _timestamp(e.commit_ts_ms),
                        stored_print,
                    )
                )
    if pending:
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY drledger.replay_log (event_id, outcome, detail) FROM STDIN") as copy,
        ):
            for e in pending:
                copy.write_row((e.event_id, outcome[e.event_id], _detail(e, outcome[e.event_id])))
    for event in pending:
        kind = outcome[event.event_id]
        if kind == "applied":
            result.applied += 1
        elif kind == "present":
            result.present += 1
        if kind != "conflict":
            result.restored.append(event)
    result.conflicts.extend(conflicts)
    return False


def _insert_rows(conn: psycopg.Connection[Any], shape: _TableShape, rows: list[LedgerEvent]) -> set[str]:
    """INSERT … ON CONFLICT DO NOTHING from the row images; the keys actually inserted."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in shape.insert_columns)
    statement = sql.SQL(
        "INSERT INTO {table} AS n ({columns}) OVERRIDING SYSTEM VALUE "
        "SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) "
        "ON CONFLICT DO NOTHING RETURNING {key}"
    ).format(table=shape.name.ident, columns=columns, key=key_expression(shape.key_columns))
    images = "[" + ",".join(e.row_json for e in rows) + "]"
    return {r[0] for r in conn.execute(statement, (images,)).fetchall()}


def _current_rows(
    conn: psycopg.Connection[Any], shape: _TableShape, rows: list[LedgerEvent]
) -> dict[str, str]:
    """The rows now stored under the given events' keys, as jsonb text."""
    join = sql.SQL(" AND ").join(
        sql.SQL("n.{c} = k.{c}").format(c=sql.Identifier(c)) for c in shape.key_columns
    )
    statement = sql.SQL(
        "SELECT {key}, to_jsonb(n)::text FROM {table} AS n "
        "JOIN jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS k ON {join}"
    ).format(key=key_expression(shape.key_columns), table=shape.name.ident, join=join)
    images = "[" + ",".join(e.row_json for e in rows) + "]"
    return {r[0]: r[1] for r in conn.execute(statement, (images,)).fetchall()}


def _timestamp(epoch_ms: int) -> str:
    """COPY text for a timestamptz; the second's part is cached, since a chunk's events share few seconds."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}+00"


@functools.lru_cache(maxsize=4096)
def _utc_second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def _detail(event: LedgerEvent, outcome: str) -> str:
    return f"{event.table} key {event.key} txid {event.txid}: {outcome}"
