"""What the relay and a source database's change-capture connector share: neutral types.

The relay's settings, whose history a saved position belongs to (`SourceIdentity`), the state of the
source's replication stream (`SlotInfo`), and a connector failure as plain data (`Cause`). The relay
(above the seams) and each engine's connector configuration (behind the source seam) both use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from drledger.errors import DrledgerError
from drledger.timeutil import parse_duration

#: The relay's slot unless told otherwise: PostgreSQL's replication slot, or the name a MySQL relay
#: registers under (and names its state files by, on either engine).
DEFAULT_SLOT = "drledger_slot"
#: What a relay publishes on its first start: the outbox rows already there ('initial'), or not.
SNAPSHOT_MODES = ("initial", "no_data")


#: The records held for one open source transaction before the relay refuses to hold more: each is a
#: ledger event in Python and Debezium's record in the JVM's 1 GB heap, with its row images.
DEFAULT_MAX_TRANSACTION_CHANGES = 100_000


@dataclass(frozen=True)
class RelaySettings:
    slot: str = DEFAULT_SLOT
    state_dir: Path = Path(".drledger")
    snapshot: str = "initial"
    heartbeat_ms: int = 1000
    # Debezium's default of 500 ms is a floor under commit→ledger latency; 5 ms costs little CPU.
    poll_interval_ms: int = 5
    max_batch_size: int = 4096
    max_queue_size: int = 32768
    # How long a batch is retried against an unavailable ledger before the relay exits (code 75).
    ledger_timeout_s: float = 120.0
    # How often Debezium restarts its connector after a transient error (a database that went away),
    # 5 s apart, before the relay exits 75: about two minutes. Debezium's -1 (forever) would hide an
    # outage from supervisors. Errors that are not transient stop the relay at once (see engine.py).
    db_retries: int = 20
    # The changes of one source transaction the relay holds to publish it whole (see relay/transactions.py).
    max_transaction_changes: int = DEFAULT_MAX_TRANSACTION_CHANGES

    def __post_init__(self) -> None:
        _check_snapshot(self.snapshot)
        _check_slot(self.slot)

    @classmethod
    def from_options(
        cls,
        *,
        slot: str,
        state_dir: Path,
        snapshot: str,
        heartbeat: str,
        ledger_timeout: str,
        max_transaction_changes: int = DEFAULT_MAX_TRANSACTION_CHANGES,
    ) -> RelaySettings:
        """Settings as the command line takes them, durations as typed ('1s', '2m'); each checked in
        that order, so the first wrong one is the one named."""
        _check_snapshot(snapshot)
        _check_slot(slot)
        return cls(
            slot=slot,
            state_dir=state_dir,
            snapshot=snapshot,
            heartbeat_ms=int(parse_duration(heartbeat) * 1000),
            ledger_timeout_s=parse_duration(ledger_timeout),
            max_transaction_changes=_check_max_transaction_changes(max_transaction_changes),
        )

    @property
    def offsets_file(self) -> Path:
        return self.state_dir / f"{self.slot}.offsets"

    @property
    def stats_file(self) -> Path:
        return self.state_dir / f"{self.slot}.stats.json"

    @property
    def identity_file(self) -> Path:
        return self.state_dir / f"{self.slot}.source.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / f"{self.slot}.lock"


#: A replication slot's name as PostgreSQL takes it (lower-case letters, digits, underscores; 63 bytes);
#: it also names the relay's files in its state directory.
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


def _check_slot(slot: str) -> None:
    # Checked before Debezium starts: PostgreSQL would refuse the name only once the engine runs, and
    # the relay would exit 75, which a supervisor answers by restarting it into the same refusal.
    if not _SLOT_NAME.fullmatch(slot):
        raise DrledgerError(
            f"--slot {slot[:70]!r} is not a replication slot name: use 1 to 63 lower-case letters, digits or "
            "underscores."
        )


def _check_max_transaction_changes(limit: int) -> int:
    if limit < 1:
        raise DrledgerError("--max-transaction-changes must be a positive number of changes.")
    return limit


def _check_snapshot(snapshot: str) -> None:
    if snapshot not in SNAPSHOT_MODES:
        raise DrledgerError("--snapshot must be 'initial' or 'no_data'.")


_BINLOG_TRANSACTION = re.compile(r"file=[^,]*?(\d+),pos=(\d+)")
_BINLOG_FILE_NUMBER = re.compile(r"(\d+)$")


def binlog_transaction_txid(transaction_id: str) -> int | None:
    """A MySQL transaction's id from Debezium's transaction metadata id ("file=…binlog.000003,pos=…"):
    where it begins in the binlog, as (file number << 32) | offset; None if the id says no position."""
    found = _BINLOG_TRANSACTION.search(transaction_id)
    return (int(found.group(1)) << 32) | int(found.group(2)) if found else None


def binlog_position(file: object, pos: int, row: int) -> int:
    """A MySQL change's place in the binlog, as one number that grows with it (0 if unknown): file
    number, offset of its rows event, and its row within that event (an event holds several)."""
    found = _BINLOG_FILE_NUMBER.search(str(file or ""))
    if not found:
        return 0
    event = (int(found.group(1)) << 32) | int(pos or 0)
    return (event << 10) | min(int(row or 0), 1023)


def engine_properties(settings: RelaySettings) -> dict[str, str]:
    """The Debezium engine's properties every connector shares: batching, offsets and retries."""
    return {
        "name": f"drledger-relay-{settings.slot}",
        "snapshot.mode": settings.snapshot,
        "heartbeat.interval.ms": str(settings.heartbeat_ms),
        "poll.interval.ms": str(settings.poll_interval_ms),
        "max.batch.size": str(settings.max_batch_size),
        "max.queue.size": str(settings.max_queue_size),
        "tombstones.on.delete": "false",
        # BEGIN and END records around every source transaction, and each change's transaction id:
        # the relay publishes a transaction only once it holds all of it (relay/transactions.py).
        "provide.transaction.metadata": "true",
        "decimal.handling.mode": "string",
        # Offsets are flushed after every batch: the saved position follows what the ledger holds.
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(settings.offsets_file),
        "offset.flush.interval.ms": "0",
        "offset.flush.timeout.ms": "10000",
        "converter.schemas.enable": "false",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        # Reconnect after a lost connection a bounded number of times, then fail: the relay exits 75 and
        # its supervisor restarts it.
        "errors.max.retries": str(settings.db_retries),
        "errors.retry.delay.initial.ms": "500",
        "errors.retry.delay.max.ms": "5000",
        "retriable.restart.connector.wait.ms": "5000",
    }


@dataclass(frozen=True)
class SourceIdentity:
    """Which database's history a position belongs to."""

    system_identifier: str
    timeline: int
    database: str
    slot: str

    def describe(self) -> str:
        return (
            f"system {self.system_identifier}, timeline {self.timeline}, database {self.database}, "
            f"slot {self.slot}"
        )


@dataclass(frozen=True)
class SlotInfo:
    database: str | None
    plugin: str | None
    wal_status: str | None
    invalidation_reason: str | None

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or bool(self.invalidation_reason)


@dataclass(frozen=True)
class Cause:
    """One link of a Java exception chain."""

    java_class: str
    message: str
    sqlstate: str | None = None


RESTART = (
    "the relay exits so that its supervisor starts it again, and resumes from the last batch the ledger "
    "acknowledged"
)
CHECK = "drledger init --check lists what the relay needs"


def first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(ERROR|FATAL):\s*", "", line.strip())
    return line.rstrip(".")
