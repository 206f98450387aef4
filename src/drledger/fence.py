"""Fencing: move each captured table's sequences past every key the ledger knows, plus a margin.

After failover the promoted database's sequences stand where replication left them, behind keys the
failed primary had already handed out. A new write would take the key of a lost row, and that row,
replayed from the ledger, would then be a conflict. Run `drledger fence` right after promotion,
before the application resumes writing; replay fences again before it applies anything.

Only keys a sequence could have handed out move it: a key in the last thousandth of the sequence's
range or beyond it — one near 2^63, say, forged or not — would move it to the edge of exhaustion, so
it is reported as unfenced instead, and the sequence is moved past the other keys. Idempotent: a sequence
already far enough is left where it is. Descending sequences are reported, never moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from drledger.errors import DrledgerError
from drledger.margins import DEFAULT_MARGIN, validate_margin
from drledger.names import TableName
from drledger.outbox.postgres import captured_tables, require_outbox

#: Fencing never moves a sequence into the last thousandth of its range. A key that close to the end is
#: not one the sequence handed out in the seconds a failover lost; trusting it would leave the
#: application a sequence about to run out.
HEADROOM = 1000


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


@dataclass(frozen=True)
class Unfenced:
    """Keys a sequence cannot be fenced past, and why: a person decides what they mean."""

    table: str
    column: str
    sequence: str
    keys: int
    highest: str
    reason: str


@dataclass
class FenceResult:
    fences: list[SequenceFence] = field(default_factory=list)
    unfenced: list[Unfenced] = field(default_factory=list)

    def as_json(self, *, every_sequence: bool = False) -> dict[str, Any]:
        shown = self.fences if every_sequence else [f for f in self.fences if f.moved]
        return {"fenced": [f.__dict__ for f in shown], "unfenced": [u.__dict__ for u in self.unfenced]}


def key_values(
    rows: Iterable[tuple[TableName, Mapping[str, Any]]], columns_by_table: dict[str, list[str]]
) -> dict[tuple[str, str], list[int]]:
    """(table, column) → every whole-number value the rows hold there. Pure."""
    values: dict[tuple[str, str], list[int]] = {}
    for table, row in rows:
        name = table.qualified
        for column in columns_by_table.get(name, ()):
            value = _as_int(row.get(column))
            if value is not None:
                values.setdefault((name, column), []).append(value)
    return values


def split_fenceable(values: Iterable[int], limit: int) -> tuple[int | None, list[int]]:
    """(the highest value at or below `limit`, the values above it). Pure."""
    highest: int | None = None
    beyond: list[int] = []
    for value in values:
        if value > limit:
            beyond.append(value)
        elif highest is None or value > highest:
            highest = value
    return highest, beyond


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return int(number) if number.is_finite() and number == number.to_integral_value() else None


@dataclass(frozen=True)
class _Sequence:
    column: str
    oid: int
    name: str
    increment: int
    minimum: int
    maximum: int

    @property
    def highest_fenceable(self) -> int:
        """The highest key fencing may move past, before the margin is added."""
        return self.maximum - (self.maximum - self.minimum) // HEADROOM


def _sequences(conn: psycopg.Connection[Any], table_oid: int) -> list[_Sequence]:
    """The serial and identity sequences of a table, found through the catalog by OID."""
    rows = conn.execute(
        "SELECT a.attname, s.oid, s.oid::regclass::text, q.seqincrement, q.seqmin, q.seqmax "
        "FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_sequence q ON q.seqrelid = s.oid "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid = %s AND d.deptype IN ('a', 'i') AND NOT a.attisdropped ORDER BY a.attnum",
        (table_oid,),
    ).fetchall()
    return [_Sequence(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]


def fence_sequences(
    conn: psycopg.Connection[Any],
    rows: Iterable[tuple[TableName, Mapping[str, Any]]],
    margin: int = DEFAULT_MARGIN,
    *,
    apply: bool = True,
) -> FenceResult:
    """Advance sequences to at least max(highest fenceable key in `rows` + margin, highest key in the table).

    `rows` are (table, row image) pairs already validated; tables drledger does not capture here are
    ignored. Without `apply`, works out the same targets and moves nothing.
    """
    validate_margin(margin)
    require_outbox(conn)
    captured = captured_tables(conn)
    materialised = list(rows)
    tables = sorted({t.qualified for t, _row in materialised if t.qualified in captured})
    sequences = {t: _sequences(conn, captured[t]) for t in tables}
    values = key_values(materialised, {t: [s.column for s in seqs] for t, seqs in sequences.items()})
    result = FenceResult()
    for table in tables:
        for sequence in sequences[table]:
            _fence_one(conn, table, sequence, values.get((table, sequence.column), []), margin, apply, result)
    return result


def _fence_one(
    conn: psycopg.Connection[Any],
    table: str,
    sequence: _Sequence,
    keys: list[int],
    margin: int,
    apply: bool,
    result: FenceResult,
) -> None:
    if sequence.increment < 0:
        if keys:
            result.unfenced.append(
                Unfenced(
                    table,
                    sequence.column,
                    sequence.name,
                    len(keys),
                    str(max(keys)),
                    "a descending sequence is never moved",
                )
            )
        return
    limit = sequence.highest_fenceable - margin
    highest, beyond = split_fenceable(keys, limit)
    ident = TableName.parse(table).ident
    before, stored = conn.execute(
        psycopg.sql.SQL(
            "SELECT pg_sequence_last_value(%s::oid::regclass), (SELECT max({col})::numeric FROM {table})"
        ).format(col=psycopg.sql.Identifier(sequence.column), table=ident),
        (sequence.oid,),
    ).fetchone() or (None, None)
    stored_max = int(stored) if stored is not None else None
    if stored_max is not None and stored_max > limit:
        beyond.append(stored_max)
        stored_max = None
    if beyond:
        result.unfenced.append(
            Unfenced(
                table,
                sequence.column,
                sequence.name,
                len(beyond),
                str(max(beyond)),
                f"too close to the sequence's maximum ({sequence.maximum}): fencing past it would leave "
                "less than a thousandth of its range",
            )
        )
    # The margin covers keys the failed primary handed out after the ledger's last event; the table's
    # own rows need only be behind the sequence. So a row the application writes after fencing never
    # makes a second fence move the sequence again.
    candidates = [v for v in (highest + margin if highest is not None else None, stored_max) if v is not None]
    if not candidates:
        return
    target = max(candidates)
    if before is not None and before >= target:
        result.fences.append(SequenceFence(table, sequence.column, sequence.name, before, before))
        return
    if apply:
        try:
            conn.execute("SELECT setval(%s::oid::regclass, %s, true)", (sequence.oid, target))
        except psycopg.errors.InsufficientPrivilege:
            raise DrledgerError(
                f"This role may not move the sequence {sequence.name}; grant it UPDATE on that sequence "
                "(see the README's least-privilege roles) and run the command again."
            ) from None
    result.fences.append(SequenceFence(table, sequence.column, sequence.name, before, target))
