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
UniqueValue = tuple[str, str, str]  # (table, unique key's name, its value as key_text prints it)


@dataclass(frozen=True)
class ForeignKey:
    """A child's columns referencing a parent's, by constraint name (from the RecoverySession)."""

    name: str
    table: str
    columns: tuple[str, ...]
    parent_table: str
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class UniqueKey:
    """A unique key besides the primary key, by name (from the RecoverySession)."""

    name: str
    table: str
    columns: tuple[str, ...]


def unique_values(row_json: str | None, unique_keys: Sequence[UniqueKey]) -> set[UniqueValue]:
    """The unique values a row image holds (a NULL in a key's columns holds none: NULLs never clash)."""
    if row_json is None or not unique_keys:
        return set()
    row = json.loads(row_json)
    found = set()
    for uk in unique_keys:
        value = key_text({c: row.get(c) for c in uk.columns})
        if value is not None:
            found.add((uk.table, uk.name, value))
    return found


def frees(
    op: str, before_json: str | None, after_json: str, unique_keys: Sequence[UniqueKey]
) -> set[UniqueValue]:
    """The unique values a change gives up: all its row's, for a delete (whose image is the row before
    it); those it changes, for an update."""
    if op == "delete":
        return unique_values(after_json, unique_keys)
    if op == "update":
        return unique_values(before_json, unique_keys) - unique_values(after_json, unique_keys)
    return set()


def takes(
    op: str, before_json: str | None, after_json: str, unique_keys: Sequence[UniqueKey]
) -> set[UniqueValue]:
    """The unique values a change newly holds: all its row's, for an insert; those it changes to, for
    an update."""
    if op == "insert":
        return unique_values(after_json, unique_keys)
    if op == "update":
        return unique_values(after_json, unique_keys) - unique_values(before_json, unique_keys)
    return set()


@dataclass(frozen=True)
class Reference:
    """One parent row an event's row points at: through which constraint."""

    constraint: str
    parent: Row


@dataclass(frozen=True)
class ValueReference:
    """A parent row an event's row points at through a foreign key to a unique key besides the
    parent's primary key: known by that unique value."""

    constraint: str
    value: UniqueValue


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
    row_json: str,
    foreign_keys: Sequence[ForeignKey],
    parent_keys: Mapping[str, Sequence[str]],
    parent_uniques: Mapping[str, Sequence[UniqueKey]] | None = None,
) -> list[Reference | ValueReference]:
    """The parent rows a row image points at, through the foreign keys that reference a parent's
    key columns (parent_keys: table -> its key columns; a parent not there is not replayed) or one of
    its other unique keys (parent_uniques: table -> those keys)."""
    row = json.loads(row_json)
    found: list[Reference | ValueReference] = []
    for fk in foreign_keys:
        key_columns = parent_keys.get(fk.parent_table)
        if key_columns is None:
            continue
        by_parent = dict(zip(fk.parent_columns, fk.columns, strict=True))
        if set(key_columns) == set(fk.parent_columns):
            key = key_text({p: row.get(by_parent[p]) for p in key_columns})
            if key is not None:
                found.append(Reference(fk.name, (fk.parent_table, key)))
            continue
        for uk in (parent_uniques or {}).get(fk.parent_table, ()):
            if set(uk.columns) == set(fk.parent_columns):
                value = key_text({p: row.get(by_parent[p]) for p in uk.columns})
                if value is not None:
                    found.append(ValueReference(fk.name, (fk.parent_table, uk.name, value)))
                break
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
    """The rows of held-back transactions, and the unique values they would have freed, growing as
    replay proceeds in plan order."""

    rows: dict[Row, tuple[str, int]] = field(default_factory=dict)  # row -> (event id, txid)
    txids: set[int] = field(default_factory=set)
    # A unique value a held-back transaction would have given up (deleted, or changed away): still
    # held in the DR database, so a later change that takes it waits behind that transaction.
    freed: dict[UniqueValue, tuple[str, int, Row]] = field(default_factory=dict)  # -> (event id, txid, row)
    # A unique value a held-back transaction's row would have taken: a child pointing at it through a
    # foreign key to that unique key waits behind it.
    taken: dict[UniqueValue, tuple[str, int, Row]] = field(default_factory=dict)

    def copy(self) -> HeldBack:
        return HeldBack(dict(self.rows), set(self.txids), dict(self.freed), dict(self.taken))

    def hold(
        self,
        txid: int,
        writes: Iterable[tuple[str, Row]],
        freed: Iterable[tuple[str, Row, UniqueValue]] = (),
        taken: Iterable[tuple[str, Row, UniqueValue]] = (),
    ) -> None:
        """Mark txid held back; writes are its (event id, row) pairs, freed and taken its (event id,
        row, unique value) triples."""
        self.txids.add(txid)
        for event_id, row in writes:
            self.rows.setdefault(row, (event_id, txid))
        for event_id, row, value in freed:
            self.freed.setdefault(value, (event_id, txid, row))
        for event_id, row, value in taken:
            self.taken.setdefault(value, (event_id, txid, row))

    def depends(
        self,
        txid: int,
        writes: Sequence[tuple[str, Row]],
        references: Sequence[Reference | ValueReference],
        taken: Iterable[UniqueValue] = (),
    ) -> Hold | None:
        """The first held-back row this transaction references or writes, or unique value it takes, or
        None. References are checked first: a child of a held-back row fails by foreign key, the
        clearest reason."""
        if txid in self.txids:
            return None
        for ref in references:
            if isinstance(ref, ValueReference):
                if ref.value in self.taken:
                    event_id, behind, (table, key) = self.taken[ref.value]
                    return Hold(
                        txid, event_id, behind, table, key, f"it references that row through {ref.constraint}"
                    )
                continue
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
        for value in sorted(taken):
            if value in self.freed:
                event_id, behind, (table, key) = self.freed[value]
                _, constraint, text = value
                return Hold(
                    txid,
                    event_id,
                    behind,
                    table,
                    key,
                    f"it takes the value {text} of {constraint}, which that change gives up",
                )
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
