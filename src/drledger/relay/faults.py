"""Why the Debezium engine stopped, said in one sentence, with the exit code a supervisor acts on.

Debezium reports a failure as a Java exception chain (a ConnectException around a PSQLException
around a SocketException, say). The chain is reduced to plain data — class name, message, SQLSTATE
— and classified here, without a JVM, so every rule is tested directly:

- **operator needed** (exit 2): the position is not in the database any more, the slot was
  invalidated, a privilege is missing, the publication or the outbox is broken, wal_level is wrong;
  restarting would fail the same way;
- **retry later** (exit 75): the connection was lost, the server is shutting down or refuses
  connections for now, the slot is still held by a relay that just died; a restart resumes from the
  last batch the ledger acknowledged, so nothing is lost. Anything not recognised is treated so too,
  with Debezium's own first line in the message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drledger.errors import DrledgerError, RetryLater
from drledger.source.postgres.outbox import PUBLICATION

RESTART = (
    "the relay exits so that its supervisor starts it again, and resumes from the last batch the ledger "
    "acknowledged"
)
CHECK = "drledger init --check lists what the relay needs"


@dataclass(frozen=True)
class Cause:
    """One link of a Java exception chain."""

    java_class: str
    message: str
    sqlstate: str | None = None


def causes_of(throwable: Any) -> list[Cause]:
    """A Java Throwable's chain as plain data (cause by cause, at most 20 deep)."""
    chain: list[Cause] = []
    seen: set[int] = set()
    current = throwable
    while current is not None and len(chain) < 20 and id(current) not in seen:
        seen.add(id(current))
        sqlstate = None
        if hasattr(current, "getSQLState"):
            try:
                state = current.getSQLState()
                sqlstate = str(state) if state is not None else None
            except Exception:
                sqlstate = None
        message = current.getMessage()
        chain.append(
            Cause(str(current.getClass().getName()), str(message) if message is not None else "", sqlstate)
        )
        current = current.getCause()
    return chain


def stack_trace(throwable: Any) -> str:
    """The Java stack trace as text, for the debug log only."""
    try:
        import jpype

        writer = jpype.JClass("java.io.StringWriter")()
        throwable.printStackTrace(jpype.JClass("java.io.PrintWriter")(writer))
        return str(writer.toString())
    except Exception:
        return repr(throwable)


def first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(ERROR|FATAL):\s*", "", line.strip())
    return line.rstrip(".")


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
        return RetryLater(
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
