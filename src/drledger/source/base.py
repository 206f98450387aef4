"""The source-database seam: everything drledger asks of a primary or a promoted DR database.

One interface, one implementation per engine (PostgreSQL first, MySQL next), chosen from the DSN.
Nothing above this seam speaks SQL or imports a database driver: reconcile, replay, fence, the relay's
backfill, the command line and the drill see these methods and the neutral types below. Foreign
errors are translated here: a row the database refuses is `RowsRejected` (replay reports it and goes
on), a connection lost is `SourceUnavailable`, a missing privilege or prerequisite a `DrledgerError`
in one sentence.

Two objects: `SourceDatabase`, the database named by a DSN (each call opens what it needs), and
`RecoverySession`, one connection held through validate → fence → apply, whose transactions replay
commits or rolls back (a dry run rolls back everything).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from drledger.errors import DrledgerError
from drledger.events import DEFAULT_OPS, LedgerEvent, OutboxRow
from drledger.names import TableName
from drledger.roles import MissingRight, require
from drledger.streaming import Cause, RelaySettings, SlotInfo, SourceIdentity


@dataclass(frozen=True)
class Finding:
    """One thing `init --check` looked at: whether it is right, and if not, how to make it so."""

    ok: bool
    what: str
    fix: str | None = None


@dataclass(frozen=True)
class TableShape:
    """A captured table as replay needs it, in the engine's own terms where `ref` is concerned."""

    name: TableName
    ref: Any  # the engine's handle on the table (PostgreSQL: its OID)
    key_columns: tuple[str, ...]
    columns: frozenset[str]  # every column, generated ones included
    insertable: frozenset[str]  # the columns an INSERT may name (not generated)
    column_order: tuple[str, ...]
    parents: frozenset[Any] = frozenset()  # refs of the other tables its foreign keys reference
    zoned: frozenset[str] = frozenset()  # columns whose printed value depends on the session's time zone

    def settable(self, images: Sequence[Mapping[str, Any]]) -> list[str]:
        """The columns an UPDATE sets from these after images: every column an INSERT may name, other
        than the key (a key change is a delete and an insert), that all of them hold; the first key
        column when there is none, so the statement still reads."""
        chosen = [
            c
            for c in self.column_order
            if c in self.insertable and c not in self.key_columns and all(c in i for i in images)
        ]
        return chosen or [self.key_columns[0]]


@dataclass(frozen=True)
class ForeignKeyInfo:
    """A foreign key of a captured table: its constraint's name, the child's columns, the parent
    (by the engine's handle, as TableShape.ref) and the parent's columns they reference, in order."""

    name: str
    columns: tuple[str, ...]
    parent_ref: Any
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class UniqueKeyInfo:
    """A unique key of a captured table other than its primary key: its name and columns, in order."""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class SequenceInfo:
    """A sequence that hands out a captured table's keys (serial, identity, AUTO_INCREMENT)."""

    column: str
    ref: Any
    name: str
    increment: int
    minimum: int
    maximum: int


@dataclass(frozen=True)
class UniqueClash:
    """A row holding a unique value a lost row needs: the constraint, the row as printed, its key."""

    constraint: str
    row: str
    key: str


@dataclass(frozen=True)
class CurrentRow:
    """What a key holds now: the row as the database prints it, and whether it has the image's content."""

    text: str  # empty when the row holds the image (not fetched: nothing needs showing)
    differs: tuple[str, ...] = ()  # the image's columns whose value the row does not hold

    @property
    def same(self) -> bool:
        return not self.differs


@dataclass(frozen=True)
class ChangeOutcome:
    """What replaying one update or delete found: `applied` (the row held its before image and now
    holds the change), `present` (it already holds the change: the after image, or for a delete no
    row), or neither — a conflict, with the row the key holds now (None: no row). `read_back` is False
    when an applied row does not read back as its after image (a trigger changed it)."""

    outcome: str  # "applied", "present" or "conflict"
    current_row: str | None = None
    read_back: bool = True


@dataclass(frozen=True)
class OutboxSlice:
    """Outbox events read oldest first from a time range: each event's id (16 bytes) and the time its
    row was created (ms). `until_ms` is where the read stopped: the range [since_ms, until_ms) is
    covered completely (no event of it left out), which may be short of the range asked for."""

    events: list[tuple[bytes, int]]
    until_ms: int


@dataclass(frozen=True)
class SlotHealth:
    """The relay's replication slot as the watcher reports it.

    `wal_status` is the engine's word for how safe the retained log is (PostgreSQL: reserved, extended,
    unreserved, lost); `safe_wal_bytes` how much more log may be written before the slot is at risk of
    being invalidated (None: no limit is set); `retained_bytes` the log kept for the slot;
    `unconfirmed_bytes` the log written since the position the relay last confirmed.
    """

    active: bool
    wal_status: str | None
    safe_wal_bytes: int | None
    retained_bytes: int | None
    unconfirmed_bytes: int | None


class RecoverySession(ABC):
    """One connection to the promoted database, for replay and fence.

    Work happens in an open transaction; `commit` makes it durable, `rollback` drops it, and
    `savepoint()` scopes a part that may be rolled back alone (translating rejected rows into
    `RowsRejected`).
    """

    @abstractmethod
    def require_outbox(self) -> None: ...

    @abstractmethod
    def captured_tables(self) -> dict[str, Any]:
        """Canonical name → ref of every table drledger captures here (never drledger's own)."""

    @abstractmethod
    def table_shape(self, name: TableName, ref: Any) -> TableShape: ...

    @abstractmethod
    def row_keys(self, shape: TableShape, images: Sequence[str]) -> list[str | None]:
        """Each image turned into a row of the table's types and keyed as capture keys it; raises
        RowsRejected if the database refuses any of them."""

    @abstractmethod
    def missing_rights(self, duty: str, command: str, tables: Sequence[TableName] = ()) -> list[MissingRight]:
        """The rights of `duty`'s list (the one --print-grants prints and init --check --as verifies)
        that `command` uses, for these tables, and this session's role lacks."""

    def require_rights(self, duty: str, command: str, tables: Sequence[TableName] = ()) -> None:
        """Every right `command` uses of `duty`'s list, or one sentence naming the command, the right and
        the GRANT that gives it (exit 2)."""
        require(command, self.missing_rights(duty, command, tables))

    @abstractmethod
    def ensure_replay_log(self) -> None: ...

    @abstractmethod
    def begin_chunk(self) -> None:
        """Start a chunk's transaction: capture suppressed, one replay at a time in this database."""

    @abstractmethod
    def savepoint(self) -> AbstractContextManager[None]: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    def check_deferred(self) -> None:
        """Check now what the database would check only at COMMIT (deferred constraints), raising
        RowsRejected as a COMMIT would: a dry run's stand-in for the commit it never makes. MySQL
        defers nothing."""
        return None

    @abstractmethod
    def outbox_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """event id → the fingerprint of the outbox row holding it, for ids the outbox has."""

    @abstractmethod
    def insert_if_absent(
        self, shape: TableShape, columns: Sequence[str], events: Sequence[LedgerEvent]
    ) -> dict[str, bool]:
        """Insert the rows of `events` whose keys are free: each key inserted → True when the engine
        proved, in the same statement, that the stored row equals its image; False leaves the reading
        back to current_rows."""

    def apply_changes(
        self, shape: TableShape, op: str, events: Sequence[LedgerEvent]
    ) -> dict[str, ChangeOutcome]:
        """Apply updates (op "update") or deletes (op "delete") of one table, each only where the key's
        row equals its before image (a delete's: its row image); event id → what each found. Keys are
        distinct within one call."""
        raise NotImplementedError

    @abstractmethod
    def current_rows(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, CurrentRow]:
        """event id → what its key holds now, for the events whose key holds a row."""

    def unique_clashes(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, UniqueClash]:
        """event id → the unique key (other than the primary key) whose value another row holds now,
        that row and its key, for events whose own key is free but whose insert was kept out."""
        return {}

    def foreign_keys(self, shape: TableShape) -> list[ForeignKeyInfo]:
        """The table's foreign keys, by constraint name: what a held-back transaction's dependents
        are found by (a later change whose row references a held-back row is held back with it)."""
        return []

    def unique_keys(self, shape: TableShape) -> list[UniqueKeyInfo]:
        """The table's unique keys besides the primary key (plain columns, no predicate): a later change
        that takes a value a held-back transaction frees is held back with it."""
        return []

    @abstractmethod
    def written_at(self, table: str, keys: Sequence[str]) -> dict[str, int]:
        """key → when the row now under it was written (ms), for the keys this table's outbox has a row
        for (the newest); a row written without capture has none. Asked only about conflicting keys."""

    @abstractmethod
    def restore_outbox(self, events: Sequence[LedgerEvent]) -> None:
        """Put the original outbox rows back, with their event ids and the images' fingerprints."""

    @abstractmethod
    def log_outcomes(self, outcomes: Sequence[tuple[str, str, str]]) -> None:
        """(event id, outcome, detail) into replay's audit log."""

    @abstractmethod
    def sequences(self, ref: Any) -> list[SequenceInfo]: ...

    @abstractmethod
    def sequence_state(self, shape_name: TableName, sequence: SequenceInfo) -> tuple[int | None, int | None]:
        """(the sequence's last value or None if never used, the highest key the table holds)."""

    @abstractmethod
    def move_sequence(self, sequence: SequenceInfo, value: int) -> None:
        """Set the sequence so the next key it hands out is past `value`."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> RecoverySession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SourceDatabase(ABC):
    """A database drledger captures from or recovers into, named by a DSN."""

    #: The DSN with its secrets masked: safe to print.
    display: str
    #: How the relay starts streaming after a backfill: from the slot `ensure_slot` made before it
    #: ("no_data"), or, where no slot can be made first, with a snapshot of the outbox ("initial").
    snapshot_after_backfill: str = "no_data"

    # -- capture: the outbox and its triggers --------------------------------------------------

    @abstractmethod
    def install(self, tables: Sequence[str], ops: Sequence[str] = DEFAULT_OPS) -> list[str]:
        """Create the outbox and capture triggers for `ops` per table (safe to run again); canonical names."""

    @abstractmethod
    def check(self, tables: Sequence[str]) -> list[Finding]:
        """What the relay needs from this database, each item with how to fix it."""

    @abstractmethod
    def prune(self, older_than_ms: int, *, apply: bool) -> int: ...

    @abstractmethod
    def grant_script(self, roles: Mapping[str, str], tables: Sequence[str], phase: str | None = None) -> str:
        """The GRANTs as SQL: what an administrator runs before init, then what runs after it (`phase`
        'before' or 'after' gives one part alone: two people run them, at two times)."""

    @abstractmethod
    def check_roles(self, roles: Mapping[str, str], tables: Sequence[str]) -> list[Finding]: ...

    @abstractmethod
    def missing_rights(self, duty: str, command: str, tables: Sequence[str] = ()) -> list[MissingRight]:
        """The rights of `duty`'s list (the one --print-grants prints and init --check --as verifies)
        that `command` uses, for these tables, and the DSN's role lacks; DatabaseUnavailable if the
        database cannot be reached."""

    def require_rights(self, duty: str, command: str, tables: Sequence[str] = ()) -> None:
        """The preflight every command runs before its first read or write: every right `command` uses
        of `duty`'s list, or one sentence naming the command, the right and the GRANT that gives it
        (MissingPrivilege, exit 2)."""
        require(command, self.missing_rights(duty, command, tables))

    # -- reading the outbox, for reconcile and backfill ------------------------------------------

    @abstractmethod
    def latest_commit_ms(self) -> int | None: ...

    @abstractmethod
    def read_window(self, since_ms: int | None, until_ms: int | None) -> Iterator[OutboxRow]: ...

    @abstractmethod
    def read_fingerprints(
        self, since_ms: int | None, until_ms: int | None, *, stored_only: bool = False
    ) -> list[bytes]:
        """Every outbox row's fingerprint in the window; with `stored_only`, only those the capture
        trigger (or replay) wrote beside the row, not ones computed for a row that has none."""

    @abstractmethod
    def created_at(self, ids: set[bytes]) -> dict[bytes, int]: ...

    @abstractmethod
    def ids_present(self, ids: set[bytes], since_ms: int, until_ms: int) -> set[bytes]: ...

    @abstractmethod
    def outbox_rows(self, event_ids: Sequence[str]) -> dict[str, OutboxRow]: ...

    @abstractmethod
    def writable_by_others(self) -> str | None:
        """Why this database could be taking application writes right now (it accepts writes by default,
        and how many other sessions are connected), or None if it refuses them (a standby, a database
        or server set read-only). Asked before an old primary's outbox is read as a ledger."""

    # -- watching: cheap reads, by index only, made every few seconds on a live primary and replica ---

    @abstractmethod
    def outbox_slice(self, since_ms: int, until_ms: int, limit: int) -> OutboxSlice:
        """The ids and creation times of the outbox events created in [since_ms, until_ms), oldest
        first, read by the creation-time index. At most about `limit` events: a larger range is cut
        short at a millisecond boundary and `until_ms` of the answer says where (at least one whole
        millisecond is always read, however many events it holds)."""

    @abstractmethod
    def count_events(self, since_ms: int, until_ms: int, cap: int) -> int:
        """How many outbox events were created in [since_ms, until_ms), counting at most `cap` (the
        answer is `cap` when there are more): an index range, never a scan of the outbox."""

    @abstractmethod
    def slot_health(self, slot: str) -> SlotHealth | None:
        """The replication slot's health (see SlotHealth); None if there is no such slot (on an engine
        without slots: if no relay by that name ever registered)."""

    def close(self) -> None:  # noqa: B027 - an engine that keeps nothing open has nothing to close
        """Release any connection kept between calls (the watcher's reads share one); calls after
        this open anew."""

    # -- recovery ------------------------------------------------------------------------------

    @abstractmethod
    def recovery_session(self) -> RecoverySession: ...

    # -- the relay: the engine's change-capture connector and its replication stream -------------

    @abstractmethod
    def prepare_relay(self, slot: str) -> None:
        """Everything the relay needs from the database, or the first thing missing as one sentence;
        and whatever lets a watcher find the relay reading through `slot` (where no slot shows it)."""

    @abstractmethod
    def identify(self, slot: str) -> SourceIdentity:
        """Whose history a position read through `slot` belongs to."""

    @abstractmethod
    def slot_info(self, slot: str) -> SlotInfo | None: ...

    def other_relay_slots(self, slot: str) -> list[str]:
        """Other slots that decode this database's changes for a relay like this one (none where the
        engine has no slots to tell them by): two relays into one ledger write every event twice."""
        return []

    @abstractmethod
    def ensure_slot(self, slot: str) -> bool:
        """Create the replication stream's slot if missing; True if it was created."""

    @abstractmethod
    def connector_password(self) -> str | None:
        """The password the database driver found (DSN, environment, password file), for the connector."""

    @abstractmethod
    def connector_properties(self, settings: RelaySettings, *, password: str | None = None) -> dict[str, str]:
        """The Debezium connector's properties for a relay on this database (validates the DSN)."""

    @abstractmethod
    def classify_failure(
        self, chain: Sequence[Cause], *, slot: str, state_dir: str, backfill_hint: str
    ) -> DrledgerError:
        """The one-sentence error (exit 2 or 75) a relay whose connector failed with `chain` exits with."""
