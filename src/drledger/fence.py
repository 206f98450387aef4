"""Fencing: move each captured table's sequences past every key the ledger knows, plus a margin.

After failover the promoted database's sequences stand where replication left them, behind keys the
failed primary had already handed out. Rows replayed from the ledger would then collide with new
writes. Run `drledger fence` right after promotion, before the application resumes writing (replay
fences too, after applying).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from drledger.db import connect
from drledger.events import LedgerEvent
from drledger.outbox.postgres import TableName

DEFAULT_MARGIN = 1000


@dataclass(frozen=True)
class SequenceFence:
    table: str
    column: str
    sequence: str
    before: int | None
    after: int

    @property
    def moved(self) -> bool:
        return self.before is None or self.after > self.before


def highest_keys(
    events: Iterable[LedgerEvent], columns_by_table: dict[str, list[str]]
) -> dict[tuple[str, str], int]:
    """(table, column) → the highest integer value any event's row image holds there. Pure."""
    highest: dict[tuple[str, str], int] = {}
    for event in events:
        columns = columns_by_table.get(event.table)
        if not columns:
            continue
        row = event.row
        for column in columns:
            value = _as_int(row.get(column))
            if value is not None and value > highest.get((event.table, column), value - 1):
                highest[(event.table, column)] = value
    return highest


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def sequence_columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """column → its sequence, for serial and identity columns of `table`."""
    name = TableName.parse(table)
    rows = conn.execute(
        "SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (f'"{name.schema}"."{name.name}"', name.qualified),
    ).fetchall()
    return {column: sequence for column, sequence in rows if sequence}


def fence(dsn: str, events: Iterable[LedgerEvent], margin: int = DEFAULT_MARGIN) -> list[SequenceFence]:
    """Advance sequences to at least max(highest key in `events`, highest key in the table) + margin.

    Idempotent: a sequence already past that target is left where it is.
    """
    materialised = list(events)
    tables = sorted({e.table for e in materialised})
    fences: list[SequenceFence] = []
    with connect(dsn) as conn:
        sequences = {t: sequence_columns(conn, t) for t in tables if _exists(conn, t)}
        highest = highest_keys(materialised, {t: list(cols) for t, cols in sequences.items()})
        for table, columns in sequences.items():
            for column, sequence in columns.items():
                before, stored_max = conn.execute(
                    psycopg.sql.SQL(
                        "SELECT pg_sequence_last_value(%s::regclass), (SELECT max({col})::bigint FROM {table})"
                    ).format(col=psycopg.sql.Identifier(column), table=TableName.parse(table).ident),
                    (sequence,),
                ).fetchone() or (None, None)
                target = (
                    max(v for v in (highest.get((table, column)), stored_max, 0) if v is not None) + margin
                )
                if before is not None and before >= target:
                    fences.append(SequenceFence(table, column, sequence, before, before))
                    continue
                conn.execute("SELECT setval(%s::regclass, %s, true)", (sequence, target))
                fences.append(SequenceFence(table, column, sequence, before, target))
    return fences


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TableName.parse(table).qualified,)).fetchone()
    return bool(row and row[0])
