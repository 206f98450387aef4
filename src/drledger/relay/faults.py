"""A Debezium failure as plain data, and the words every relay message shares.

Debezium reports a failure as a Java exception chain (a ConnectException around a PSQLException
around a SocketException, say). The chain is reduced here to plain data — class name, message,
SQLSTATE — and each source engine classifies it (PostgreSQL's rules: source/postgres/faults.py),
without a JVM, so every rule is tested directly:

- **operator needed** (exit 2): the position is not in the database any more, the slot was
  invalidated, a privilege is missing, the publication or the outbox is broken, wal_level is wrong;
  restarting would fail the same way;
- **retry later** (exit 75): the connection was lost, the server is shutting down or refuses
  connections for now, the slot is still held by a relay that just died; a restart resumes from the
  last batch the ledger acknowledged, so nothing is lost. Anything not recognised is treated so too,
  with Debezium's own first line in the message.
"""

from __future__ import annotations

from typing import Any

from drledger.streaming import CHECK, RESTART, Cause, first_line

__all__ = ["CHECK", "RESTART", "Cause", "causes_of", "first_line", "stack_trace"]


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
