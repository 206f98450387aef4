"""Replay: put the events the DR database lost back into it, idempotently, and only what is proven.

Order of work, the same for a dry run and for --apply (a dry run does all of it inside one
transaction and rolls it back, so it shows exactly what --apply would do):

1. **Screen** every event without the database (screening.py): id, operation, table name, hash,
   one JSON object per row; conflicting versions of one event or one key are held back.
2. **Validate** what only the database can say, before anything is written: the table is one that
   drledger captures here (it has the capture trigger; drledger's own tables never are), every column
   of the row image exists, every value fits its column's type, and the image's key is the event's
   key. A source transaction with any event refused is held back whole.
3. **Fence** first: each captured table's sequences move past the highest key being restored (and the
   highest the table holds) plus a margin, so the application, writing again, can never be handed a
   key replay is about to restore. A re-run fences again, so a run that failed after fencing leaves
   nothing unfenced.
4. **Apply** in commit order (pure, tested directly: transactions by commit time, then the highest LSN
   among their changes; changes within one in LSN order), several source transactions to one database
   transaction (a chunk), each committed durably before it is counted. In a chunk, each table's rows
   go in one set-based INSERT … ON CONFLICT DO NOTHING, tables in the order the source first wrote
   them; an image without some column gets that column's default, as the original INSERT would have.
   A row whose key already holds the same content counts as present; different content is a conflict
   — the new primary wrote that key after failover — reported with both versions and never written
   (with on_conflict='fail' the chunk is rolled back and replay stops). A source transaction the
   database rejects (a foreign key, a check) is rolled back alone and reported. The original outbox
   row goes back with the same event id, capture suppressed, so reconcile sees the event as present
   and no new event is minted. An event whose id is already in the outbox was applied before and is
   left alone: a second replay changes nothing.

A failure part way (the connection lost) leaves every chunk committed so far in place and raises
ReplayInterrupted carrying what was committed; running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson

from drledger.errors import DrledgerError, ExitCode, ReplayInterrupted, RowsRejected, SourceUnavailable
from drledger.events import LedgerEvent, MalformedRecord, row_fingerprint
from drledger.fence import FenceResult, beyond_the_fence, fence_sequences
from drledger.holdback import (
    ForeignKey,
    HeldBack,
    Hold,
    Reference,
    Row,
    UniqueKey,
    UniqueValue,
    ValueReference,
    frees,
    references_of,
    takes,
)
from drledger.margins import DEFAULT_MARGIN, validate_margin
from drledger.names import TableName
from drledger.screening import Admitted, Ambiguity, Refusal, screen
from drledger.source import open_source
from drledger.source.base import CurrentRow, RecoverySession, TableShape
from drledger.timeutil import format_instant

CHUNK_EVENTS = 5_000
VALIDATE_BATCH = 5_000


class Outcome(StrEnum):
    APPLIED = "applied"
    PRESENT = "present"  # the row was already there with the same content
    ALREADY_REPLAYED = "already_replayed"
    CONFLICT = "conflict"
    REFUSED = "refused"


class OnConflict(StrEnum):
    SKIP = "skip"
    FAIL = "fail"

    @classmethod
    def parse(cls, text: str) -> OnConflict:
        try:
            return cls(text)
        except ValueError:
            raise DrledgerError("--on-conflict must be 'skip' or 'fail'.") from None


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


def superseded_events(plan: Sequence[SourceTransaction]) -> frozenset[str]:
    """The events a later event of the plan changes the same row after (same table and key). Pure.

    Such an event's row is not expected to hold its image any more: that it was replayed before is
    proven by the outbox's record alone; the row is compared only with the last change of its key."""
    last: dict[tuple[str, str], str] = {}
    for transaction in plan:
        for event in transaction.events:
            last[(event.table, event.key)] = event.event_id
    latest = set(last.values())
    return frozenset(e.event_id for t in plan for e in t.events if e.event_id not in latest)


def change_runs(events: Sequence[LedgerEvent]) -> list[tuple[str, str, list[LedgerEvent]]]:
    """Events in their order as runs of one table and one operation, no key twice in a run. Pure.

    Each run goes to the database in one statement; the runs keep the source's order, so a row
    inserted, updated a hundred times and deleted is replayed as it happened."""
    runs: list[tuple[str, str, list[LedgerEvent]]] = []
    keys: set[str] = set()
    for event in events:
        if runs and runs[-1][0] == event.table and runs[-1][1] == event.op and event.key not in keys:
            runs[-1][2].append(event)
            keys.add(event.key)
        else:
            runs.append((event.table, event.op, [event]))
            keys = {event.key}
    return runs


def hold_back_transactions(
    valid: list[Admitted], refused: list[Refusal], ambiguous: list[Ambiguity]
) -> tuple[list[Admitted], list[Refusal]]:
    """Refuse every event of a source transaction in which any event was refused or held back. Pure.

    A source transaction is applied whole or not at all, so a transaction with one unprovable change
    is not applied in part.
    """
    tainted = {r.event.txid for r in refused} | {e.txid for a in ambiguous for e in a.events}
    kept = [a for a in valid if a.event.txid not in tainted]
    held = [
        Refusal(a.event, f"another change of its source transaction {a.event.txid} was refused or held back")
        for a in valid
        if a.event.txid in tainted
    ]
    return kept, held


class ChangeConflicts(RowsRejected):
    """An update or delete found its row neither before nor after it: the source transaction holding it
    is rolled back and held back whole, the conflicts carried out to be reported."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__(f"{len(conflicts)} changes found their rows in another state")
        self.conflicts = conflicts


class ReadBackMismatch(RowsRejected):
    """A row replay wrote does not read back as its image (a user trigger, a type written wrongly, a
    generated column): its source transaction is rolled back and held back, named."""


KEY_HOLDS_OTHER = "the key holds different content"
NEITHER_IMAGE = "the row is neither the change's before image nor its after image"
HELD_WITH_ITS_TRANSACTION = "held back with its source transaction, another change of which conflicts"
REPLAYED_ROW_CHANGED = "the row replayed before no longer holds its image"
OTHER_UNIQUE_KEY = "another unique key of the table holds a clashing row"
OUTBOX_HOLDS_OTHER = "the DR outbox holds this event id with different content"


@dataclass(frozen=True)
class Conflict:
    event_id: str
    table: str
    key: str
    ledger_row: str
    current_row: str | None  # None when no row is stored under the key (see `why`)
    why: str = KEY_HOLDS_OTHER
    # When each version was written: the lost one's commit, and the current row's capture (split brain).
    ledger_written_at: str | None = None
    current_written_at: str | None = None
    ledger_before: str | None = None  # an update's row before it, as the ledger holds it

    @classmethod
    def of(
        cls, event: LedgerEvent, current_row: str | None, why: str, current_ms: int | None = None
    ) -> Conflict:
        return cls(
            event.event_id,
            event.table,
            event.key,
            event.row_json,
            current_row,
            why,
            format_instant(event.commit_ts_ms),
            format_instant(current_ms),
            event.before_json,
        )


@dataclass
class ReplayResult:
    dry_run: bool = True
    applied: int = 0
    present: int = 0
    already_replayed: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    ambiguous: list[Ambiguity] = field(default_factory=list)
    malformed: list[MalformedRecord] = field(default_factory=list)
    transactions: int = 0  # source transactions committed (or, in a dry run, that would be)
    stopped_on_conflict: bool = False
    fence: FenceResult = field(default_factory=FenceResult)
    by_table: dict[str, dict[str, int]] = field(default_factory=dict)
    plan: list[SourceTransaction] = field(default_factory=list)

    @property
    def needs_a_human(self) -> bool:
        return bool(self.conflicts or self.refused or self.ambiguous or self.malformed or self.fence.unfenced)

    @property
    def exit_code(self) -> ExitCode:
        """0 done (or nothing to do); 3 something was not written and a person must look at it; 2 what
        replay wrote read back differently, so this database changes what it is given (fix that first)."""
        if any(r.reason.startswith(READ_BACK_DIFFERS) for r in self.refused):
            return ExitCode.OPERATOR
        return ExitCode.NEEDS_HUMAN if self.needs_a_human else ExitCode.SUCCESS

    def count(self, table: str, outcome: Outcome, n: int = 1) -> None:
        tally = self.by_table.setdefault(table, {})
        tally[outcome.value] = tally.get(outcome.value, 0) + n

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "transactions": self.transactions,
            "planned_transactions": len(self.plan),
            # A dry run applied nothing: what it rehearsed is what --apply would write next.
            "applied": 0 if self.dry_run else self.applied,
            **({"would_apply": self.applied} if self.dry_run else {}),
            "present": self.present,
            "already_replayed": self.already_replayed,
            "conflicts": [c.__dict__ for c in self.conflicts],
            "refused": [
                {
                    "event_id": r.event.event_id,
                    "table": r.event.table,
                    "key": r.event.key,
                    "txid": r.event.txid,
                    "reason": r.reason,
                }
                for r in self.refused
            ],
            "conflicting": [a.as_json() for a in self.ambiguous],
            "malformed": [{"position": m.position, "reason": m.reason} for m in self.malformed],
            "stopped_on_conflict": self.stopped_on_conflict,
            "by_table": self.by_table,
            **self.fence.as_json(),
            **(
                {
                    "events": sum(len(t.events) for t in self.plan),
                    "plan": [
                        {"txid": t.txid, "commit": t.commit_ts_ms, "events": [e.event_id for e in t.events]}
                        for t in self.plan
                    ],
                }
                if self.dry_run
                else {}
            ),
            "exit_code": self.exit_code,
        }


def table_order(first_written: Sequence[str], parents: dict[str, set[str]]) -> list[str]:
    """Tables in an order where each comes after the tables its foreign keys reference. Pure.

    Ties keep the order the source first wrote them; a cycle of references is broken at the table
    written first (its constraint, if not deferred, then decides, and the transaction is reported).
    """
    remaining = list(dict.fromkeys(first_written))
    placed: list[str] = []
    while remaining:
        ready = next(
            (t for t in remaining if not (parents.get(t, set()) & set(remaining)) - {t}), remaining[0]
        )
        placed.append(ready)
        remaining.remove(ready)
    return placed


@dataclass
class Proof:
    """What the database confirmed of screened events: the valid ones, and the shapes of their tables."""

    valid: list[Admitted]
    shapes: dict[str, TableShape]


def prove(session: RecoverySession, admitted: list[Admitted], result: ReplayResult) -> Proof:
    """Validate screened events against this database (read only); refusals go to `result`."""
    captured = session.captured_tables()
    shapes = {
        table: session.table_shape(TableName.parse(table), captured[table])
        for table in dict.fromkeys(a.event.table for a in admitted)
        if table in captured
    }
    return Proof(_validate(session, admitted, shapes, result), shapes)


def require_recoverer_rights(session: RecoverySession, command: str, shapes: Iterable[TableShape]) -> None:
    """Before the first write: the role holds every right of the recoverer's list (the one
    --print-grants prints and init --check --as verifies) that `command` uses, for these tables, or one
    sentence naming the command, the right and the GRANT that gives it (exit 2)."""
    session.require_rights("recoverer", command, [shape.name for shape in shapes])


def replay(
    dsn: str,
    events: Sequence[LedgerEvent],
    *,
    apply: bool = False,
    on_conflict: OnConflict | str = OnConflict.SKIP,
    margin: int = DEFAULT_MARGIN,
    malformed: Sequence[MalformedRecord] = (),
    chunk_events: int = CHUNK_EVENTS,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Screen, validate, fence and apply (or, without `apply`, rehearse and roll back) `events`."""
    policy = on_conflict if isinstance(on_conflict, OnConflict) else OnConflict.parse(on_conflict)
    validate_margin(margin)
    screening = screen(events)
    result = ReplayResult(
        dry_run=not apply,
        refused=list(screening.refused),
        ambiguous=screening.ambiguous,
        malformed=list(malformed),
    )
    with open_source(dsn).recovery_session() as session:
        session.require_outbox()
        require_recoverer_rights(session, "replay", ())  # drledger's own objects, before anything is read
        proof = prove(session, screening.admitted, result)
        beyond = beyond_the_fence(session, [(a.table, a.row) for a in proof.valid], margin)
        result.refused.extend(Refusal(proof.valid[i].event, why) for i, why in beyond.items())
        admitted = [a for i, a in enumerate(proof.valid) if i not in beyond]
        valid, held = hold_back_transactions(admitted, result.refused, result.ambiguous)
        result.refused.extend(held)
        for refusal in result.refused:
            result.count(refusal.event.table, Outcome.REFUSED)
        plan = plan_replay(a.event for a in valid)
        result.plan = plan
        # A dry run rehearses the very writes --apply makes: it needs the same rights.
        require_recoverer_rights(session, "replay", proof.shapes.values())
        session.rollback()  # validation reads only; what follows runs in transactions of its own
        # Fencing comes first: once the application writes again, a sequence behind a key replay is
        # about to restore would hand that key out.
        result.fence = fence_sequences(session, [(a.table, a.row) for a in valid], margin, apply=apply)
        session.ensure_replay_log()  # in a dry run, rolled back with the rest
        if apply:
            session.commit()
        dependencies = _dependencies(session, proof.shapes, result)
        try:
            _apply_plan(
                session,
                plan,
                proof.shapes,
                superseded_events(plan),
                policy,
                apply,
                chunk_events,
                result,
                on_progress,
                dependencies,
            )
        except (SourceUnavailable, RowsRejected) as exc:
            reason = str(exc).rstrip(".")
            if not apply:
                raise DrledgerError(f"The dry run stopped: {reason}.") from None
            raise ReplayInterrupted(
                f"Replay stopped after committing {result.transactions} of {len(plan)} source transactions "
                f"({result.applied} rows applied): {reason}; run the same command again to resume.",
                result,
            ) from None
        finally:
            if not apply:
                session.rollback()
    return result


def _validate(
    session: RecoverySession,
    admitted: list[Admitted],
    shapes: dict[str, TableShape],
    result: ReplayResult,
) -> list[Admitted]:
    """The events the database confirms: captured table, known columns, values of the right types,
    the image's key equal to the event's; every other one refused with the reason."""
    by_table: dict[str, list[Admitted]] = {}
    for item in admitted:
        shape = shapes.get(item.event.table)
        if shape is None:
            result.refused.append(
                Refusal(
                    item.event, f"the table {item.event.table} is not captured by drledger in this database"
                )
            )
            continue
        unknown = sorted(set(item.row) - shape.columns)
        if unknown:
            shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
            result.refused.append(Refusal(item.event, f"its row image has columns the table lacks: {shown}"))
            continue
        by_table.setdefault(item.event.table, []).append(item)
    valid: list[Admitted] = []
    for table, items in by_table.items():
        for start in range(0, len(items), VALIDATE_BATCH):
            batch = items[start : start + VALIDATE_BATCH]
            valid.extend(_validate_batch(session, shapes[table], batch, result))
    return valid


def _validate_batch(
    session: RecoverySession, shape: TableShape, batch: list[Admitted], result: ReplayResult
) -> list[Admitted]:
    """Turn each image into a row of the table's types and key it as the capture trigger did; a
    batch the database rejects is split until the rejected images are found."""
    try:
        keys = session.row_keys(shape, [a.event.row_json for a in batch])
    except RowsRejected as rejected:
        if len(batch) == 1:
            result.refused.append(
                Refusal(batch[0].event, f"the database rejects its row image: {rejected.reason}")
            )
            return []
        half = len(batch) // 2
        return _validate_batch(session, shape, batch[:half], result) + _validate_batch(
            session, shape, batch[half:], result
        )
    valid = []
    for item, key in zip(batch, keys, strict=True):
        if key == item.event.key:
            valid.append(item)
        else:
            result.refused.append(
                Refusal(
                    item.event,
                    f"its row image holds key {_short(key)}, not the event's key {_short(item.event.key)}",
                )
            )
    return valid


def _apply_plan(
    session: RecoverySession,
    plan: list[SourceTransaction],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
    policy: OnConflict,
    apply: bool,
    chunk_events: int,
    result: ReplayResult,
    on_progress: Callable[[int], None] | None,
    dependencies: _Dependencies | None = None,
) -> None:
    done = 0
    deps = dependencies if dependencies is not None else _Dependencies()
    for chunk in chunk_transactions(plan, chunk_events):
        if not _apply_and_commit(session, chunk, shapes, superseded, policy, apply, result, deps):
            return
        done += sum(len(t.events) for t in chunk)
        if on_progress is not None:
            on_progress(done)


def _apply_and_commit(
    session: RecoverySession,
    chunk: list[SourceTransaction],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
    policy: OnConflict,
    apply: bool,
    result: ReplayResult,
    deps: _Dependencies,
) -> bool:
    """One chunk, committed; False when replay must stop (a conflict under --on-conflict fail).

    A COMMIT the database refuses (a constraint checked only then) is retried one source transaction
    at a time, so only the transaction that causes it is held back. A dry run, which never commits,
    has the database check those constraints at the chunk's end instead (inside a savepoint, rolled
    back with the rest), so it holds back the same transactions. What depends on a held-back
    transaction is held back with it (_apply_holding_back)."""
    session.begin_chunk()
    stop = False
    try:
        with contextlib.nullcontext() if apply else session.savepoint():
            outcome = _apply_holding_back(session, chunk, shapes, superseded, deps)
            stop = bool(outcome.conflicts) and policy is OnConflict.FAIL
            if not stop and apply:
                session.commit()  # durable (synchronous_commit as the server has it) before it is counted
            elif not stop:
                session.check_deferred()
    except RowsRejected as rejected:
        if apply:
            session.rollback()
        if len(chunk) == 1:
            reason = f"the database rejected its source transaction at commit: {rejected.reason}"
            _ChunkOutcome(refused=[Refusal(e, reason) for e in chunk[0].events]).merge_into(result)
            deps.hold(deps.held, chunk[0])
            return True
        return all(
            _apply_and_commit(session, [t], shapes, superseded, policy, apply, result, deps) for t in chunk
        )
    if stop:
        session.rollback()
        result.conflicts.extend(outcome.conflicts)
        result.stopped_on_conflict = True
        return False
    deps.held = deps.pending
    outcome.merge_into(result)
    return True


@dataclass
class _Dependencies:
    """The foreign keys replay follows and the held-back rows so far (growing as replay proceeds)."""

    foreign_keys: dict[str, list[ForeignKey]] = field(default_factory=dict)  # child table -> its keys
    parent_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> its key columns
    unique_keys: dict[str, list[UniqueKey]] = field(default_factory=dict)  # table -> its other unique keys
    held: HeldBack = field(default_factory=HeldBack)
    pending: HeldBack = field(default_factory=HeldBack)  # held, once the chunk is committed

    def references(self, transaction: SourceTransaction) -> list[Reference | ValueReference]:
        return [
            ref
            for e in transaction.events
            if e.op != "delete"
            for ref in references_of(
                e.row_json, self.foreign_keys.get(e.table, []), self.parent_keys, self.unique_keys
            )
        ]

    def freed(self, events: Sequence[LedgerEvent]) -> list[tuple[str, Row, UniqueValue]]:
        """The unique values the events give up, each with the event and its row."""
        return [
            (e.event_id, (e.table, e.key), value)
            for e in events
            for value in frees(e.op, e.before_json, e.row_json, self.unique_keys.get(e.table, []))
        ]

    def taken(self, events: Sequence[LedgerEvent]) -> list[tuple[str, Row, UniqueValue]]:
        """The unique values the events newly hold, each with the event and its row."""
        return [
            (e.event_id, (e.table, e.key), value)
            for e in events
            for value in takes(e.op, e.before_json, e.row_json, self.unique_keys.get(e.table, []))
        ]

    def hold(self, ledger: HeldBack, transaction: SourceTransaction) -> None:
        events = transaction.events
        ledger.hold(transaction.txid, _writes(transaction), self.freed(events), self.taken(events))

    def depends(self, ledger: HeldBack, transaction: SourceTransaction) -> Hold | None:
        taken = {value for _, _, value in self.taken(transaction.events)}
        return ledger.depends(transaction.txid, _writes(transaction), self.references(transaction), taken)


def _writes(transaction: SourceTransaction) -> list[tuple[str, tuple[str, str]]]:
    return [(e.event_id, (e.table, e.key)) for e in transaction.events]


def _dependencies(
    session: RecoverySession, shapes: dict[str, TableShape], result: ReplayResult
) -> _Dependencies:
    """The foreign keys among the replayed tables (through the session), and the rows of every source
    transaction already held back before applying (refused, ambiguous): their dependents follow."""
    by_ref = {shape.ref: name for name, shape in shapes.items()}
    deps = _Dependencies(parent_keys={name: shape.key_columns for name, shape in shapes.items()})
    for name, shape in shapes.items():
        deps.foreign_keys[name] = [
            ForeignKey(fk.name, name, fk.columns, by_ref[fk.parent_ref], fk.parent_columns)
            for fk in session.foreign_keys(shape)
            if fk.parent_ref in by_ref
        ]
        deps.unique_keys[name] = [UniqueKey(uk.name, name, uk.columns) for uk in session.unique_keys(shape)]
    held = [refusal.event for refusal in result.refused] + [e for a in result.ambiguous for e in a.events]
    for e in held:
        deps.held.hold(e.txid, [(e.event_id, (e.table, e.key))], deps.freed([e]), deps.taken([e]))
    return deps


class _Redo(Exception):
    """The chunk is rolled back to its savepoint and applied again without its newly held dependents."""


def _apply_holding_back(
    session: RecoverySession,
    chunk: list[SourceTransaction],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
    deps: _Dependencies,
) -> _ChunkOutcome:
    """The chunk, without the transactions that depend on a held-back one. A transaction found to
    conflict or be refused while the chunk is applied holds back what follows it in the chunk: the
    chunk is rolled back to its savepoint and applied again without those (each round holds back at
    least one more transaction, so this ends). deps.pending is the held-back set once committed."""
    holds: dict[int, Hold] = {}
    while True:
        ledger = deps.held.copy()
        todo: list[SourceTransaction] = []
        for transaction in chunk:
            hold = holds.get(transaction.txid) or deps.depends(ledger, transaction)
            if hold is not None:
                holds[transaction.txid] = hold
                deps.hold(ledger, transaction)
            else:
                todo.append(transaction)
        try:
            with session.savepoint():
                outcome = _apply_chunk_or_each(session, todo, shapes, superseded) if todo else _ChunkOutcome()
                failed = {
                    _txid_of([e for t in todo for e in t.events], c.event_id) for c in outcome.conflicts
                }
                failed |= {r.event.txid for r in outcome.refused}
                found = _later_dependents(chunk, holds, failed, deps)
                if found:
                    holds.update(found)
                    raise _Redo
        except _Redo:
            continue
        pending = deps.held.copy()
        for transaction in chunk:  # in plan order: a row is held behind its first held-back writer
            if transaction.txid in holds or transaction.txid in failed:
                deps.hold(pending, transaction)
        deps.pending = pending
        outcome.refused.extend(
            Refusal(e, holds[t.txid].text()) for t in chunk if t.txid in holds for e in t.events
        )
        return outcome


def _later_dependents(
    chunk: list[SourceTransaction], holds: dict[int, Hold], failed: set[int | None], deps: _Dependencies
) -> dict[int, Hold]:
    """The transactions of the chunk, in plan order, that depend on one found to conflict or be refused
    before them, not yet held (one refused for a foreign key to a conflicting row is named as held
    behind it)."""
    trial = deps.held.copy()
    found: dict[int, Hold] = {}
    for transaction in chunk:
        if transaction.txid in holds:
            deps.hold(trial, transaction)
            continue
        hold = deps.depends(trial, transaction)
        if hold is not None:
            found[transaction.txid] = hold
            deps.hold(trial, transaction)
        elif transaction.txid in failed:
            deps.hold(trial, transaction)
    return found


@dataclass
class _ChunkOutcome:
    """What one chunk did, merged into the result only once it is committed."""

    transactions: int = 0
    outcomes: list[tuple[LedgerEvent, Outcome]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def merge_into(self, result: ReplayResult) -> None:
        result.transactions += self.transactions
        for refusal in self.refused:
            result.count(refusal.event.table, Outcome.REFUSED)
        for event, outcome in self.outcomes:
            result.count(event.table, outcome)
            if outcome is Outcome.APPLIED:
                result.applied += 1
            elif outcome is Outcome.PRESENT:
                result.present += 1
            elif outcome is Outcome.ALREADY_REPLAYED:
                result.already_replayed += 1
        result.conflicts.extend(self.conflicts)
        result.refused.extend(self.refused)

    def absorb(self, other: _ChunkOutcome) -> None:
        self.transactions += other.transactions
        self.outcomes.extend(other.outcomes)
        self.conflicts.extend(other.conflicts)
        self.refused.extend(other.refused)


def _apply_chunk_or_each(
    session: RecoverySession,
    chunk: list[SourceTransaction],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
) -> _ChunkOutcome:
    """The chunk in one savepoint; if the database rejects it, each source transaction in its own,
    so a transaction the database refuses (a foreign key, a check) is rolled back alone."""
    try:
        with session.savepoint():
            return _apply_chunk(session, chunk, shapes, superseded)
    except RowsRejected as rejected:
        if len(chunk) == 1:
            if isinstance(rejected, ChangeConflicts):
                conflicted = {c.event_id for c in rejected.conflicts}
                return _ChunkOutcome(
                    conflicts=rejected.conflicts,
                    outcomes=[(e, Outcome.CONFLICT) for e in chunk[0].events if e.event_id in conflicted],
                    refused=[
                        Refusal(e, HELD_WITH_ITS_TRANSACTION)
                        for e in chunk[0].events
                        if e.event_id not in conflicted
                    ],
                )
            if isinstance(rejected, ReadBackMismatch):
                reason = f"{READ_BACK_DIFFERS} ({rejected.reason}); its source transaction was rolled back"
            else:
                reason = f"the database rejected its source transaction: {rejected.reason}"
            return _ChunkOutcome(refused=[Refusal(event, reason) for event in chunk[0].events])
    combined = _ChunkOutcome()
    for transaction in chunk:
        combined.absorb(_apply_chunk_or_each(session, [transaction], shapes, superseded))
    return combined


def _apply_chunk(
    session: RecoverySession,
    chunk: list[SourceTransaction],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
) -> _ChunkOutcome:
    """Apply one chunk inside the open savepoint."""
    outcome = _ChunkOutcome(transactions=len(chunk))
    events = [e for t in chunk for e in t.events]
    pending = _not_replayed_before(session, events, shapes, superseded, outcome)
    kinds: dict[str, Outcome] = {}
    if any(e.op != "insert" for e in pending):
        kinds = _apply_in_order(session, pending, shapes, outcome)
    else:
        by_ref = {shape.ref: name for name, shape in shapes.items()}
        parents = {name: {by_ref[p] for p in shape.parents if p in by_ref} for name, shape in shapes.items()}
        # A chunk holds many source transactions; every parent row in it goes in before any child row.
        for table in table_order([e.table for e in pending], parents):
            rows = [e for e in pending if e.table == table]
            kinds.update(_insert_table(session, shapes[table], rows, outcome))
    restored = [e for e in pending if kinds[e.event_id] is not Outcome.CONFLICT]
    if restored:
        session.restore_outbox(restored)
    if pending:
        session.log_outcomes(
            [(e.event_id, kinds[e.event_id].value, _detail(e, kinds[e.event_id])) for e in pending]
        )
    outcome.outcomes.extend((e, kinds[e.event_id]) for e in pending)
    return outcome


def _apply_in_order(
    session: RecoverySession,
    pending: list[LedgerEvent],
    shapes: dict[str, TableShape],
    outcome: _ChunkOutcome,
) -> dict[str, Outcome]:
    """A chunk holding updates or deletes, in the source's order (runs of one table and operation).

    An update applies only where the row is its before image, a delete only where the row is its
    image; a row already in the after state is present; anything else is a conflict, and a source
    transaction holding an update or delete that conflicts is rolled back whole (ChangeConflicts)."""
    kinds: dict[str, Outcome] = {}
    conflicts: list[Conflict] = []
    for table, op, run in change_runs(pending):
        shape = shapes[table]
        if op == "insert":
            kinds.update(_insert_table(session, shape, run, outcome))
            continue
        found = session.apply_changes(shape, op, run)
        for event in run:
            change = found[event.event_id]
            if change.outcome == "applied":
                if not change.read_back:
                    raise ReadBackMismatch(
                        f"{shape.name.qualified} key {_short(event.key)}: after its {op} the row does not read "
                        "back as the ledger's row image"
                    )
                kinds[event.event_id] = Outcome.APPLIED
            elif change.outcome == "present":
                kinds[event.event_id] = Outcome.PRESENT
            else:
                kinds[event.event_id] = Outcome.CONFLICT
                conflicts.append(Conflict.of(event, change.current_row, NEITHER_IMAGE))
    with_changes = {e.txid for e in pending if e.op != "insert"}
    whole = [c for c in conflicts + outcome.conflicts if _txid_of(pending, c.event_id) in with_changes]
    if whole:
        raise ChangeConflicts(whole)
    outcome.conflicts.extend(conflicts)
    return kinds


def _txid_of(events: list[LedgerEvent], event_id: str) -> int | None:
    return next((e.txid for e in events if e.event_id == event_id), None)


def _not_replayed_before(
    session: RecoverySession,
    events: list[LedgerEvent],
    shapes: dict[str, TableShape],
    superseded: frozenset[str],
    outcome: _ChunkOutcome,
) -> list[LedgerEvent]:
    """The events whose id the outbox does not hold yet; the others are counted in `outcome` — replayed
    before if the outbox holds the same content and the row still holds its image, else a conflict."""
    stored = session.outbox_fingerprints([e.event_id for e in events])
    pending: list[LedgerEvent] = []
    replayed: dict[str, list[LedgerEvent]] = {}
    for event in events:
        print_in_outbox = stored.get(event.event_id)
        if print_in_outbox is None:
            pending.append(event)
        elif print_in_outbox == row_fingerprint(event.event_id, event.row_json, event.op, event.before_json):
            if event.event_id in superseded:  # a later change of its row is in the plan
                outcome.outcomes.append((event, Outcome.ALREADY_REPLAYED))
            else:
                replayed.setdefault(event.table, []).append(event)
        else:
            outcome.outcomes.append((event, Outcome.CONFLICT))
            outcome.conflicts.append(Conflict.of(event, None, OUTBOX_HOLDS_OTHER))
    # An event id on record is not enough: the row it wrote must still be its image.
    for table, members in replayed.items():
        current = session.current_rows(shapes[table], members)
        for event in members:
            now = current.get(event.event_id)
            gone = event.op == "delete" and now is None
            if gone or (event.op != "delete" and now is not None and now.same):
                outcome.outcomes.append((event, Outcome.ALREADY_REPLAYED))
            else:
                outcome.outcomes.append((event, Outcome.CONFLICT))
                outcome.conflicts.append(Conflict.of(event, now.text if now else None, REPLAYED_ROW_CHANGED))
    return pending


def _insert_table(
    session: RecoverySession, shape: TableShape, rows: list[LedgerEvent], outcome: _ChunkOutcome
) -> dict[str, Outcome]:
    """Insert-if-absent this table's rows; each event's outcome. Conflicts go to `outcome`."""
    # Images normally hold every column; one that lacks some gets their defaults, so rows are
    # inserted in groups that name the same columns.
    groups: dict[tuple[str, ...], list[LedgerEvent]] = {}
    for event in rows:
        present = set(orjson.loads(event.row_json))
        columns = tuple(c for c in shape.column_order if c in present and c in shape.insertable)
        groups.setdefault(columns, []).append(event)
    inserted: dict[str, bool] = {}  # key → proven to hold its image when inserted
    for columns, members in groups.items():
        inserted |= session.insert_if_absent(shape, columns, members)
    stray = inserted.keys() - {e.key for e in rows}
    if stray:  # a trigger (or a default) gave the row another key than its image holds
        raise ReadBackMismatch(
            f"{shape.name.qualified}: a row was stored under key {_short(min(stray))}, which no image holds"
        )
    kinds: dict[str, Outcome] = {}
    claimed: set[str] = set()
    # Every row, written now or found, is read back (the same comparison that proves a row present), so
    # a value the database changed on the way in is never counted as applied. Where the engine proved
    # it in the INSERT itself, the row is not read again.
    proven = CurrentRow("")
    unproven = [e for e in rows if not inserted.get(e.key, False)]
    current = session.current_rows(shape, unproven) if unproven else {}
    current |= {e.event_id: proven for e in rows if inserted.get(e.key, False)}
    conflicting: list[LedgerEvent] = []
    for event in rows:
        now = current.get(event.event_id)
        if event.key in inserted and event.key not in claimed:
            if now is None or not now.same:
                raise ReadBackMismatch(_read_back_difference(shape, event, now))
            kinds[event.event_id] = Outcome.APPLIED
            claimed.add(event.key)
        elif event.key in inserted or (now is not None and now.same):
            kinds[event.event_id] = Outcome.PRESENT  # the same content under the same key
        else:
            kinds[event.event_id] = Outcome.CONFLICT
            conflicting.append(event)
    # One table's rows: they all carry its captured name, the outbox's aggregatetype.
    # A free key kept out all the same: another unique key of the table holds the value (which row, under
    # which constraint, is asked only for these).
    kept_out = [e for e in conflicting if e.event_id not in current]
    clashes = session.unique_clashes(shape, kept_out) if kept_out else {}
    keys = [e.key for e in conflicting] + [c.key for c in clashes.values()]
    written = session.written_at(conflicting[0].table, keys) if conflicting else {}
    for event in conflicting:
        now = current.get(event.event_id)
        clash = clashes.get(event.event_id)
        if now is not None:
            outcome.conflicts.append(Conflict.of(event, now.text, KEY_HOLDS_OTHER, written.get(event.key)))
        elif clash is not None:
            why = f"{OTHER_UNIQUE_KEY}: {clash.constraint} (the row under key {_short(clash.key)})"
            outcome.conflicts.append(Conflict.of(event, clash.row, why, written.get(clash.key)))
        else:
            outcome.conflicts.append(Conflict.of(event, None, OTHER_UNIQUE_KEY))
    return kinds


READ_BACK_DIFFERS = "what replay wrote read back differently"


def _read_back_difference(shape: TableShape, event: LedgerEvent, now: CurrentRow | None) -> str:
    """Table, key, the first column that differs, the ledger's value and what the database stored."""
    where = f"{shape.name.qualified} key {_short(event.key)}"
    if now is None:
        return f"{where}: the row is not there after its insert"
    column = now.differs[0]
    ledger_value = _column_text(event.row_json, column)
    stored_value = _column_text(now.text, column)
    return f"{where} column {column}: the ledger holds {ledger_value}, the database stored {stored_value}"


def _column_text(row_json: str, column: str) -> str:
    try:
        row = json.loads(row_json, parse_float=Decimal)
    except ValueError:
        return "?"
    if not isinstance(row, dict) or column not in row:
        return "no value"
    return _short(json.dumps(row[column], default=str, ensure_ascii=False), 60)


def _detail(event: LedgerEvent, outcome: Outcome) -> str:
    return f"{event.table} key {_short(event.key)} txid {event.txid}: {outcome.value}"


def _short(text: str | None, limit: int = 80) -> str:
    if text is None:
        return "NULL"
    return text if len(text) <= limit else text[: limit - 1] + "…"
