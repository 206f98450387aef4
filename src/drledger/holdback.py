"""What depends on a held-back source transaction is held back with it (#27 item 2). Pure.

A later lost transaction depends on a held-back one when it writes one of its rows (same table and
key), references one of them through a foreign key, or takes a unique value it depends on. Replay
grows the held-back set as it goes (a transaction may be found to conflict only when applied), so
this is a small ledger asked about each transaction in plan order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = tuple[str, str]  # (table, key)


@dataclass(frozen=True)
class ForeignKey:
    """A child's columns referencing a parent's, by constraint name (from the RecoverySession)."""

    name: str
    table: str
    columns: tuple[str, ...]
    parent_table: str
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class Reference:
    """One parent row an event's row points at: through which constraint."""

    constraint: str
    parent: Row


def key_text(values: Mapping[str, Any]) -> str | None:
    """A row key as the capture prints it: the value itself for one column, a JSON object (keys by
    length, then bytes, as PostgreSQL's jsonb and MySQL's JSON order them) for a composite key."""
    if any(v is None for v in values.values()):
        return None
    if len(values) == 1:
        (value,) = values.values()
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else json.dumps(value)
    ordered = sorted(values, key=lambda k: (len(k.encode()), k.encode()))
    return json.dumps({k: values[k] for k in ordered}, ensure_ascii=False)


def references_of(
    row_json: str, foreign_keys: Sequence[ForeignKey], parent_keys: Mapping[str, Sequence[str]]
) -> list[Reference]:
    """The parent rows a row image points at, through the foreign keys that reference a parent's
    key columns (parent_keys: table -> its key columns; a parent not there is not replayed)."""
    row = json.loads(row_json)
    found = []
    for fk in foreign_keys:
        key_columns = parent_keys.get(fk.parent_table)
        if key_columns is None or set(key_columns) != set(fk.parent_columns):
            continue
        by_parent = dict(zip(fk.parent_columns, fk.columns, strict=True))
        key = key_text({p: row.get(by_parent[p]) for p in key_columns})
        if key is not None:
            found.append(Reference(fk.name, (fk.parent_table, key)))
    return found


@dataclass(frozen=True)
class Hold:
    """Why a transaction is held back, and the event (and transaction) it waits behind."""

    txid: int
    behind_event: str
    behind_txid: int
    table: str
    key: str
    reason: str

    def text(self) -> str:
        return (
            f"held back behind event {self.behind_event} (txid {self.behind_txid}, {self.table} key "
            f"{self.key}): {self.reason}"
        )


@dataclass
class HeldBack:
    """The rows of held-back transactions, growing as replay proceeds in plan order."""

    rows: dict[Row, tuple[str, int]] = field(default_factory=dict)  # row -> (event id, txid)
    txids: set[int] = field(default_factory=set)

    def hold(self, txid: int, writes: Iterable[tuple[str, Row]]) -> None:
        """Mark txid held back; writes are its (event id, row) pairs."""
        self.txids.add(txid)
        for event_id, row in writes:
            self.rows.setdefault(row, (event_id, txid))

    def depends(
        self, txid: int, writes: Sequence[tuple[str, Row]], references: Sequence[Reference]
    ) -> Hold | None:
        """The first held-back row this transaction references or writes, or None. References
        are checked first: a child of a held-back row fails by foreign key, the clearest reason."""
        if txid in self.txids:
            return None
        for ref in references:
            if ref.parent in self.rows:
                event_id, behind = self.rows[ref.parent]
                return Hold(
                    txid,
                    event_id,
                    behind,
                    ref.parent[0],
                    ref.parent[1],
                    f"it references that row through {ref.constraint}",
                )
        for _event_id, row in writes:
            if row in self.rows:
                event_id, behind = self.rows[row]
                return Hold(txid, event_id, behind, row[0], row[1], "it writes the same row")
        return None


def held_behind(
    plan: Sequence[int],
    held: Iterable[int],
    writes: Mapping[int, Sequence[tuple[str, Row]]],
    references: Mapping[int, Sequence[Reference]],
) -> dict[int, Hold]:
    """Given the ordered plan (txids), the held-back txids, each transaction's written rows and
    the parent rows it references: which later transactions are held back, behind what and why.
    A dependent held back is itself held: its dependents follow it."""
    ledger = HeldBack()
    initially = set(held)
    result: dict[int, Hold] = {}
    for txid in plan:
        if txid in initially:
            ledger.hold(txid, writes.get(txid, ()))
            continue
        hold = ledger.depends(txid, writes.get(txid, ()), references.get(txid, ()))
        if hold is not None:
            result[txid] = hold
            ledger.hold(txid, writes.get(txid, ()))
    return result
