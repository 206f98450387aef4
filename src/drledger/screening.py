"""What replay may trust of ledger input, decided before anything is written. Pure: no I/O.

The ledger is a second system — a topic, a queue, a file, a saved report — and anything in it may be
damaged or forged. An event is admitted only if it proves itself: a canonical UUID for an id, a known
operation, a table name PostgreSQL could have written (outside drledger's own schema), a row image that
is one JSON object, and a row_sha256 that is the SHA-256 of that image. The database then checks what
only it can (see replay.py): the table is captured there, the columns exist, the values fit their
types, and the image's key is the event's key.

Two things the ledger may hold that no single event can settle are ambiguities, never resolved by
picking one: the same event id with different contents, and different rows for the same table and key.
All their versions are held back and reported; a person decides. The same event delivered twice with
the same content is a duplicate and collapses to one (the copy with a real log position is kept, since
a backfilled copy carries none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from drledger.errors import DrledgerError
from drledger.events import (
    KNOWN_OPS,
    MAX_COMMIT_TS_MS,
    MAX_LSN,
    MAX_TXID,
    OPS_WITH_BEFORE,
    LedgerEvent,
    change_digest,
    is_event_id,
)
from drledger.names import TableName

DRLEDGER_SCHEMA = "drledger"
ONE_ID_SEVERAL_CONTENTS = "the ledger holds this event id with different contents"
ONE_KEY_SEVERAL_ROWS = "the ledger holds different rows for this table and key"


@dataclass(frozen=True)
class Refusal:
    """An event replay will not write, and why, in words an operator can act on."""

    event: LedgerEvent
    reason: str


@dataclass(frozen=True)
class Ambiguity:
    """Versions the ledger holds where there can be only one: all are held back."""

    reason: str
    table: str
    key: str
    events: tuple[LedgerEvent, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "table": self.table,
            "key": self.key,
            "versions": [
                {"event_id": e.event_id, "row": e.row_json, "commit_ts_ms": e.commit_ts_ms}
                for e in self.events
            ],
        }


@dataclass(frozen=True)
class Admitted:
    """An event that passed every check made without the database, with what those checks parsed."""

    event: LedgerEvent
    table: TableName
    row: dict[str, Any]


@dataclass
class Screening:
    admitted: list[Admitted]
    refused: list[Refusal]
    ambiguous: list[Ambiguity]


def _content(event: LedgerEvent) -> tuple[str, str, str, str]:
    return (event.table, event.key, event.op, event.row_sha256)


def separate_ambiguous(events: Iterable[LedgerEvent]) -> tuple[list[LedgerEvent], list[Ambiguity]]:
    """Duplicates collapsed, ambiguities taken out; the clean events keep their first-seen order."""
    first: dict[str, LedgerEvent] = {}
    again: list[LedgerEvent] = []
    for event in events:  # nearly every event is seen once: only the rest are looked at closely
        if first.setdefault(event.event_id, event) is not event:
            again.append(event)
    versions: dict[str, list[LedgerEvent]] = {}
    for event in again:
        known = versions.setdefault(event.event_id, [first[event.event_id]])
        same = next((i for i, v in enumerate(known) if _content(v) == _content(event)), None)
        if same is None:
            known.append(event)
        elif known[same].lsn == 0 < event.lsn:  # a backfilled copy gives way to the streamed one
            known[same] = event
    ambiguous: list[Ambiguity] = []
    for event_id, known in versions.items():
        if len(known) > 1:
            ambiguous.append(Ambiguity(ONE_ID_SEVERAL_CONTENTS, known[0].table, known[0].key, tuple(known)))
            del first[event_id]
        else:
            first[event_id] = known[0]
    # Two different inserts of one key are ambiguous only where no delete between them was captured:
    # a key deleted in the window may be inserted again with other content.
    deleted = {(e.table, e.key) for e in first.values() if e.op == "delete"}
    digest_of_key: dict[tuple[str, str], str] = {}
    clashing: set[tuple[str, str]] = set()
    for event in first.values():
        where = (event.table, event.key)
        if event.op != "insert" or where in deleted:
            continue
        if digest_of_key.setdefault(where, event.row_sha256) != event.row_sha256:
            clashing.add(where)
    if clashing:
        groups: dict[tuple[str, str], list[LedgerEvent]] = {}
        for event in first.values():
            if (event.table, event.key) in clashing:
                groups.setdefault((event.table, event.key), []).append(event)
        for (table, key), group in groups.items():
            ambiguous.append(Ambiguity(ONE_KEY_SEVERAL_ROWS, table, key, tuple(group)))
        return [e for e in first.values() if (e.table, e.key) not in clashing], ambiguous
    return list(first.values()), ambiguous


def event_problem(event: LedgerEvent) -> tuple[TableName | None, dict[str, Any] | None, str | None]:
    """(table, parsed row, None) for an event that proves itself, else (…, the reason it does not)."""
    if not is_event_id(event.event_id):
        return None, None, "its event id is not a UUID"
    if event.op not in KNOWN_OPS:
        return None, None, f"its operation {event.op[:20]!r} is not one replay knows"
    if not (
        0 <= event.txid <= MAX_TXID
        and 0 <= event.lsn <= MAX_LSN
        and 0 <= event.commit_ts_ms <= MAX_COMMIT_TS_MS
    ):
        return (
            None,
            None,
            f"its txid, lsn or commit time is out of range ({event.txid}, {event.lsn}, {event.commit_ts_ms})",
        )
    try:
        table = TableName.parse(event.table)
    except DrledgerError:
        return None, None, "its table is not a table name PostgreSQL could have written"
    if table.qualified != event.table:
        return None, None, "its table name is not written as drledger writes it"
    if table.schema == DRLEDGER_SCHEMA:
        return table, None, "it names one of drledger's own tables, which replay never writes"
    try:
        if change_digest(event.op, event.row_json, event.before_json) != event.row_sha256:
            return table, None, "its row image does not match its row_sha256"
        if (event.before_json is not None) != (event.op in OPS_WITH_BEFORE):
            return (
                table,
                None,
                f"its {event.op} {'lacks' if event.before_json is None else 'carries'} a before image",
            )
        row = orjson.loads(event.row_json)
    except UnicodeEncodeError:
        return table, None, "its row image is not valid text"
    except orjson.JSONDecodeError:
        try:  # numbers beyond a double (a numeric(1000)) are valid JSON that orjson declines
            row = json.loads(event.row_json, parse_float=Decimal)
        except ValueError:
            return table, None, "its row image is not one JSON document"
        except RecursionError:  # orjson stops at 1,024 levels; the standard library at Python's stack
            return table, None, "its row image nests deeper than drledger reads (1,024 levels)"
    if not isinstance(row, dict):
        return table, None, "its row image is not a JSON object"
    return table, row, None


def screen(events: Sequence[LedgerEvent]) -> Screening:
    """Every check that needs no database, over the whole input at once."""
    clean, ambiguous = separate_ambiguous(events)
    admitted: list[Admitted] = []
    refused: list[Refusal] = []
    for event in clean:
        table, row, problem = event_problem(event)
        if problem is None and table is not None and row is not None:
            admitted.append(Admitted(event, table, row))
        else:
            refused.append(Refusal(event, problem or "it is not a valid event"))
    return Screening(admitted, refused, ambiguous)
