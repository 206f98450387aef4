"""Why the Debezium engine stopped on PostgreSQL, said in one sentence with the exit code a supervisor
acts on: 2 when an operator is needed, 75 (RetryLater) when a restart will do (see relay/faults.py)."""

from __future__ import annotations

from collections.abc import Sequence

from drledger.errors import DrledgerError, RetryLater, SlotBusy
from drledger.source.postgres.outbox import PUBLICATION
from drledger.streaming import CHECK, RESTART, Cause, first_line


def _postgres_reason(chain: Sequence[Cause]) -> str:
    """The most telling message in the chain: PostgreSQL's own if there is one, else the innermost."""
    for cause in chain:
        if cause.sqlstate and cause.message:
            return first_line(cause.message)
    for cause in reversed(chain):
        if cause.message:
            return first_line(cause.message)
    return chain[0].java_class if chain else "no reason given"


_CONNECTION_WORDS = (
    "connection refused",
    "connection reset",
    "connection attempt failed",
    "i/o error",
    "database connection failed",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection",
    "broken pipe",
    "an error occurred while setting up the connection",
)
_CONNECTION_CLASSES = ("java.net.", "java.io.EOFException", "java.nio.channels.")


def classify(chain: Sequence[Cause], *, slot: str, state_dir: str, backfill_hint: str) -> DrledgerError:
    """The error a relay whose engine failed with this chain exits with."""
    text = " | ".join(c.message for c in chain).lower()
    states = {c.sqlstate for c in chain if c.sqlstate}
    reason = _postgres_reason(chain)
    backfill = (
        f"start the relay with --backfill-since {backfill_hint}, which creates the slot anew and publishes what "
        "the ledger lacks"
    )
    if "no longer available on the server" in text:
        return DrledgerError(
            f"The position the relay saved in {state_dir} is no longer available in the replication slot '{slot}' "
            f"(the slot was dropped, recreated or advanced elsewhere), so resuming would skip events: drop the slot "
            f"(SELECT pg_drop_replication_slot('{slot}')) and {backfill}."
        )
    if "publication autocreation is disabled" in text:
        return DrledgerError(
            f"The publication {PUBLICATION} is missing ({reason}): run drledger init to restore it; {CHECK}."
        )
    if "publication" in text and ("does not exist" in text or "42704" in states):
        return DrledgerError(
            f"PostgreSQL cannot decode the slot's changes with the publication {PUBLICATION} ({reason}): if drledger "
            f"init --check shows it missing, run drledger init; if it exists, it was created after the slot's position, "
            f"so drop the slot (SELECT pg_drop_replication_slot('{slot}')) and {backfill}."
        )
    if (
        "55000" in states
        and "replication slot" in text
        and ("invalidated" in text or "can no longer" in text)
    ) or ("58P01" in states and "wal" in text):
        return DrledgerError(
            f"The replication slot '{slot}' was invalidated ({reason}: PostgreSQL removed WAL it still needed, see "
            f"max_slot_wal_keep_size): drop it (SELECT pg_drop_replication_slot('{slot}')) and {backfill}."
        )
    if (
        "42501" in states
        or "permission denied" in text
        or "must be superuser or replication role" in text
        or ("must have replication" in text)
    ):
        return DrledgerError(f"The database user lacks a privilege the relay needs ({reason}): {CHECK}.")
    if states & {"42P01", "42703"} or ("drledger.outbox" in text and "does not exist" in text):
        return DrledgerError(f"The outbox is not as drledger init made it ({reason}): {CHECK}.")
    if "wal_level" in text and "logical" in text:
        return DrledgerError(
            f"The database cannot decode its WAL for the relay ({reason}): set wal_level = logical and restart "
            "PostgreSQL (on Aurora/RDS: rds.logical_replication = 1)."
        )
    if states & {"28P01", "28000"} or "authentication failed" in text:
        return DrledgerError(
            f"The database refused the relay's login ({reason}): check the DSN's user and password."
        )
    if "3D000" in states:
        return DrledgerError(f"The relay's database does not exist ({reason}): check the DSN.")
    if "55006" in states or "is active for pid" in text:
        return SlotBusy(
            f"The replication slot '{slot}' is held by another connection ({reason}): if a relay just died the "
            f"server frees it shortly, so {RESTART.replace('the relay exits', 'this relay exits')}; if another relay runs on "
            "this slot, stop one of them."
        )
    if (
        any(s.startswith(("08", "57P", "53")) for s in states)
        or any(c.java_class.startswith(_CONNECTION_CLASSES) for c in chain)
        or any(word in text for word in _CONNECTION_WORDS)
    ):
        return RetryLater(f"The relay lost its connection to the database ({reason}): {RESTART}.")
    return RetryLater(f"The Debezium engine stopped ({reason}): {RESTART}.")
