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

from drledger.margins import DEFAULT_MARGIN, validate_margin
from drledger.names import TableName
from drledger.source.base import RecoverySession, SequenceInfo

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


def fence_sequences(
    session: RecoverySession,
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
    session.require_outbox()
    captured = session.captured_tables()
    materialised = list(rows)
    tables = sorted({t.qualified for t, _row in materialised if t.qualified in captured})
    sequences = {t: session.sequences(captured[t]) for t in tables}
    values = key_values(materialised, {t: [s.column for s in seqs] for t, seqs in sequences.items()})
    result = FenceResult()
    for table in tables:
        for sequence in sequences[table]:
            _fence_one(
                session, table, sequence, values.get((table, sequence.column), []), margin, apply, result
            )
    return result


def beyond_the_fence(
    session: RecoverySession, rows: list[tuple[TableName, Mapping[str, Any]]], margin: int
) -> dict[int, str]:
    """Index in `rows` → why that row's key is one fencing cannot move its sequence past (a key near the
    end of the sequence's range, forged or not). Writing such a row would move an AUTO_INCREMENT (or, by
    the next fence, a sequence) to the edge of exhaustion, so replay holds it back before any write."""
    captured = session.captured_tables()
    beyond: dict[int, str] = {}
    sequences: dict[str, list[SequenceInfo]] = {}
    for index, (table, row) in enumerate(rows):
        name = table.qualified
        if name not in captured:
            continue
        if name not in sequences:
            sequences[name] = session.sequences(captured[name])
        for sequence in sequences[name]:
            value = _as_int(row.get(sequence.column))
            if value is not None and sequence.increment > 0 and value > highest_fenceable(sequence) - margin:
                beyond[index] = (
                    f"its key {sequence.column} = {value} is too close to the end of {sequence.name} "
                    f"(maximum {sequence.maximum}) for fencing to move past it; writing it would leave the "
                    "application a sequence about to run out"
                )
                break
    return beyond


def highest_fenceable(sequence: SequenceInfo) -> int:
    """The highest key fencing may move a sequence past, before the margin is added."""
    return sequence.maximum - (sequence.maximum - sequence.minimum) // HEADROOM


def _fence_one(
    session: RecoverySession,
    table: str,
    sequence: SequenceInfo,
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
    limit = highest_fenceable(sequence) - margin
    highest, beyond = split_fenceable(keys, limit)
    before, stored_max = session.sequence_state(TableName.parse(table), sequence)
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
        session.move_sequence(sequence, target)
    result.fences.append(SequenceFence(table, sequence.column, sequence.name, before, target))
