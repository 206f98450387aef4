"""The relay's state directory, tied to one source database, and the checks made before Debezium starts.

Debezium keeps its position (offsets) in `--state-dir`, one file per slot. A position only means
something in the database it was read from: resumed against another one, Debezium would either
refuse with a stack trace or — worse — start from a position of another history and skip events. So
beside the offsets the relay records whose they are (`<slot>.source.json`): the server's identity
(PostgreSQL's system identifier; MySQL's server UUID, or MariaDB's server id), the timeline, the
database and the slot. A relay whose database does not match is refused, in one sentence naming the
directory; nothing is overwritten.

On PostgreSQL, the timeline is what tells a promoted replica from its old primary: both share the system identifier,
but promotion starts a new timeline, and an LSN of the old timeline past the fork point names WAL the
new one never had. A relay on the promoted database needs its own slot and a backfill (the runbook's
`relay --slot drledger_dr --backfill-since …`), which starts a new state file; reusing the old
primary's offsets there is refused.

Everything here is private to the relay's user: the directory is made 0700 and its files 0600
(offsets and stats name positions and times of business data).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

from drledger.errors import DrledgerError
from drledger.files import PRIVATE_DIR, PRIVATE_FILE, create_private, write_private
from drledger.streaming import RelaySettings, SlotInfo, SourceIdentity
from drledger.timeutil import format_instant, now_ms

log = logging.getLogger("drledger.relay")

_STATE_SUFFIXES = (".offsets", ".source.json", ".stats.json", ".lock", ".tmp")
# A backfill from the relay's last event reaches back this much further, for transactions that were
# open then (an outbox row carries its transaction's start time, not its commit time).
BACKFILL_MARGIN_MS = 15 * 60_000


class RelayState:
    """The state directory of one relay (one slot): lock, offsets, identity and stats files."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.directory = settings.state_dir
        self._lock: int | None = None

    def open(self) -> None:
        """Create the directory (0700), take the slot's lock, make its files private."""
        directory = self.directory
        try:
            directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            self._make_private(directory)
            for path in (self.settings.offsets_file, self.settings.stats_file, self.settings.identity_file):
                if path.exists():
                    os.chmod(path, PRIVATE_FILE)
            fd = os.open(self.settings.lock_file, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as exc:
            raise DrledgerError(
                f"Cannot use {directory} as the relay's state directory: {exc.strerror or exc}; "
                "give --state-dir a directory this user may write."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DrledgerError(
                f"Another relay (pid {holder}) is running with slot {self.settings.slot} in {directory}: "
                "stop it first, or give this one its own --state-dir and --slot."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd
        # Debezium's offsets store keeps the mode of a file it overwrites, and reads an empty one as
        # "no offsets yet": creating it here is how it comes to be private.
        if not self.settings.offsets_file.exists():
            create_private(self.settings.offsets_file)

    @staticmethod
    def _make_private(directory: Path) -> None:
        """0700 for a directory of relay state only (one an older relay made 0755, say); a directory that
        holds anything else (a home, /tmp, `.`) is not the relay's to change: a warning says so."""
        info = directory.stat()
        if info.st_mode & 0o077 == 0:
            return
        ours = info.st_uid == os.geteuid() and all(
            entry.name.endswith(_STATE_SUFFIXES) or ".offsets.replaced-" in entry.name
            for entry in directory.iterdir()
        )
        if ours:
            os.chmod(directory, PRIVATE_DIR)
        else:
            log.warning(
                "the state directory %s is open to other users and holds more than relay state: give the relay "
                "a directory of its own (it makes one 0700)",
                directory,
            )

    def has_offsets(self) -> bool:
        try:
            return self.settings.offsets_file.stat().st_size > 0
        except OSError:
            return False

    def recorded_identity(self) -> SourceIdentity | None:
        try:
            doc = json.loads(self.settings.identity_file.read_text())
            return SourceIdentity(
                str(doc["system_identifier"]), int(doc["timeline"]), str(doc["database"]), str(doc["slot"])
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise DrledgerError(
                f"The relay's record of its database, {self.settings.identity_file}, cannot be read; "
                "restore it, or move the directory aside to start afresh (with --backfill-since if events may be missing)."
            ) from None

    def record_identity(self, identity: SourceIdentity) -> None:
        write_private(self.settings.identity_file, json.dumps({**asdict(identity), "recorded_ms": now_ms()}))

    def last_relayed_ms(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            value = json.loads(self.settings.stats_file.read_text()).get("last_commit_ms")
            return int(value) if value is not None else None
        return None

    def snapshot_due(self) -> bool:
        """Whether Debezium reads the outbox whole on this start (see `snapshot_due`)."""
        try:
            offsets = self.settings.offsets_file.read_bytes()
        except OSError:
            offsets = b""
        return snapshot_due(offsets, self.settings.snapshot)

    def set_aside_offsets(self) -> Path:
        """Move the offsets of a slot that no longer exists out of the way; where they went."""
        aside = self.settings.offsets_file.with_name(f"{self.settings.offsets_file.name}.replaced-{now_ms()}")
        os.replace(self.settings.offsets_file, aside)
        create_private(self.settings.offsets_file)
        return aside

    def backfill_hint(self) -> str:
        """A --backfill-since value that surely reaches back before the relay's last event."""
        last = self.last_relayed_ms()
        if last is None:
            return "<the ledger's last commit, from drledger ledger inspect, less 15 minutes>"
        return str(format_instant(last - BACKFILL_MARGIN_MS)).replace("+00:00", "Z")


# The position in Debezium's offsets file (a serialized Java map of byte arrays): one flat JSON object.
_POSITION = re.compile(rb"\{\"[^{}]*\}")


def snapshot_due(offsets: bytes, mode: str) -> bool:
    """Whether Debezium will read the outbox whole (its snapshot) on a start from these offsets: with
    the 'initial' mode, when there is no position yet, or the position is one of a snapshot that was
    cut short (a relay killed in its first seconds); Debezium then takes the snapshot again from its
    start, so what the cut one published reaches the ledger twice unless the relay leaves it out. Pure."""
    if mode != "initial":
        return False
    positions = _POSITION.findall(offsets)
    if not positions:
        return True
    try:
        position = json.loads(positions[-1])
    except ValueError:
        return True  # unreadable: Debezium decides; checking the ledger first costs a read, never an event
    if not isinstance(position, dict) or position.get("snapshot") in (None, False, "false"):
        return False  # a streaming position: the snapshot was taken
    completed = position.get("snapshot_completed", position.get("last_snapshot_record"))
    return completed is not True


def check_source(
    state: RelayState, identity: SourceIdentity, slot: SlotInfo | None, *, backfill: bool
) -> None:
    """Refuse, in one sentence, a relay whose state or slot cannot give every event; else record whose
    state this is. `backfill` says a backfill will create the slot first and cover what it lacks."""
    directory = state.directory
    name = identity.slot
    recorded = state.recorded_identity()
    offsets = state.has_offsets()
    if recorded is not None and recorded != identity and not offsets:
        # A record without a position (a relay that never got to relay) protects nothing: start afresh.
        log.info("%s held no position yet; it is now %s's", directory, identity.describe())
        state.settings.stats_file.unlink(missing_ok=True)
        recorded = None
    if recorded is not None and recorded != identity:
        if (recorded.system_identifier, recorded.database) != (identity.system_identifier, identity.database):
            raise DrledgerError(
                f"The relay state in {directory} belongs to another database ({recorded.describe()}; this is "
                f"{identity.describe()}): resuming from its offsets would skip or repeat events, so give this "
                "database its own --state-dir."
            )
        raise DrledgerError(
            f"The relay state in {directory} was written on timeline {recorded.timeline} of this database, which "
            f"is now on timeline {identity.timeline} (it was promoted or restored since), so its offsets may point "
            "past what this timeline holds: after a failover start the relay with a new --slot and --backfill-since "
            "(see the runbook), or give it a new --state-dir."
        )
    if slot is not None and slot.database is not None and slot.database != identity.database:
        raise DrledgerError(
            f"The replication slot '{name}' belongs to the database '{slot.database}' on this server, not to "
            f"'{identity.database}': choose another --slot."
        )
    if slot is not None and slot.plugin not in (None, "pgoutput"):
        raise DrledgerError(
            f"The replication slot '{name}' decodes with '{slot.plugin}', but the relay needs 'pgoutput': "
            "choose another --slot."
        )
    if slot is not None and slot.lost:
        reason = slot.invalidation_reason or f"wal_status {slot.wal_status}"
        if reason in ("wal_status lost", "wal_removed"):
            reason += ": PostgreSQL removed WAL it still needed, see max_slot_wal_keep_size"
        raise DrledgerError(
            f"The replication slot '{name}' was invalidated ({reason}), so changes since the relay's last "
            "position cannot be streamed: drop it "
            f"(SELECT pg_drop_replication_slot('{name}')) and start the relay with --backfill-since "
            f"{state.backfill_hint()}, which creates the slot anew and publishes what the ledger lacks."
        )
    if slot is None and offsets and not backfill:
        raise DrledgerError(
            f"The replication slot '{name}' no longer exists, but {directory} holds the relay's position in it, so "
            "changes since then may never have reached the ledger: start the relay with --backfill-since "
            f"{state.backfill_hint()}, which creates the slot and publishes what the ledger lacks."
        )
    if recorded is None:
        if offsets and slot is None:
            raise DrledgerError(
                f"{directory} holds offsets for slot '{name}' from an unknown database, and this database has no "
                "such slot: give this database its own --state-dir."
            )
        if offsets:
            log.info(
                "recording %s as the source of the existing offsets in %s", identity.describe(), directory
            )
        state.record_identity(identity)
