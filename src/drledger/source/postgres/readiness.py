"""The watcher's reads of a live primary and its hot standby: cheap enough to run every few seconds.

Every read goes through the outbox's created_at index (a range, bounded by a LIMIT), its primary key,
or a catalog view; none scans the outbox, whatever its size. The reads share one connection kept
between calls (a new connection costs more than the reads themselves), each in a short transaction
with a statement timeout, so a database that hangs costs the watcher a cycle, never its life; a
connection lost is dropped, said as SourceUnavailable, and made anew by the next read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from drledger.errors import SourceUnavailable
from drledger.masking import mask_dsn, scrub
from drledger.source.base import OutboxSlice, SlotHealth
from drledger.source.postgres.connection import connect
from drledger.source.postgres.outbox import require_outbox

# A watch read that takes longer than this is a sign of trouble, not something to wait for.
STATEMENT_TIMEOUT_MS = 5000
_MS = "to_timestamp(%s / 1000.0)"


class KeptConnection:
    """One connection to `dsn`, opened on first use and kept until closed or lost."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def reading(self, timeout_ms: int | None = STATEMENT_TIMEOUT_MS) -> Iterator[psycopg.Connection[Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, autocommit=True)
        conn = self._conn
        try:
            with conn.transaction():
                if timeout_ms is not None:
                    conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
                yield conn
        except psycopg.OperationalError as exc:
            self.close()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
            raise SourceUnavailable(
                f"The database at {mask_dsn(self.dsn)} went away: {scrub(first, self.dsn)}."
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def latest_commit_ms(kept: KeptConnection) -> int | None:
    with kept.reading(timeout_ms=None) as conn:
        require_outbox(conn)
        row = conn.execute(
            "SELECT (extract(epoch FROM max(created_at)) * 1000)::bigint FROM drledger.outbox"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def ids_present(kept: KeptConnection, ids: set[bytes], since_ms: int, until_ms: int) -> set[bytes]:
    """Which of these event ids (16-byte UUIDs) the outbox holds among rows created in the window."""
    with kept.reading(timeout_ms=None) as conn:
        rows = conn.execute(
            "SELECT uuid_send(id) FROM drledger.outbox "
            "WHERE id = ANY(string_to_array(%s, ' ')::uuid[]) "
            f"AND created_at BETWEEN {_MS} AND {_MS}",
            # One text of hex ids (uuid input takes them without hyphens): no Python object per id on
            # either side of the wire, where a list costs the client more than the query costs the server.
            (" ".join(i.hex() for i in ids), since_ms, until_ms),
            binary=True,
            # Never a prepared statement: its generic plan would test each row against the array one
            # element after another (thousands by thousands); a one-off plan hashes the array.
            prepare=False,
        ).fetchall()
    return {bytes(r[0]) for r in rows}


def outbox_slice(kept: KeptConnection, since_ms: int, until_ms: int, limit: int) -> OutboxSlice:
    """Ids and creation times in [since_ms, until_ms), oldest first, cut at a millisecond boundary
    once past `limit` (a transaction's rows share one creation time, so a cut inside a millisecond
    would split them between two reads)."""
    read = (
        "SELECT uuid_send(id), floor(extract(epoch FROM created_at) * 1000)::bigint "
        f"FROM drledger.outbox WHERE created_at >= {_MS} AND created_at < {_MS} ORDER BY created_at"
    )
    with kept.reading() as conn:
        require_outbox(conn)
        # One pass over the index: a row past the limit says where to cut.
        rows = conn.execute(read + " LIMIT %s", (since_ms, until_ms, limit + 1), binary=True).fetchall()
        end = until_ms
        if len(rows) > limit:
            # Stop at the millisecond the limit falls in, or just after it when the whole read is one
            # millisecond: then every row of that millisecond is read, however many.
            end = max(int(rows[limit][1]), since_ms + 1)
            if end == since_ms + 1 and int(rows[limit][1]) == since_ms:
                rows = conn.execute(read, (since_ms, end), binary=True).fetchall()
            else:
                rows = rows[: bisect_left(rows, end, key=lambda r: int(r[1]))]
    return OutboxSlice([(bytes(r[0]), int(r[1])) for r in rows], end)


def count_events(kept: KeptConnection, since_ms: int, until_ms: int, cap: int) -> int:
    with kept.reading() as conn:
        require_outbox(conn)
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM drledger.outbox "
            f"WHERE created_at >= {_MS} AND created_at < {_MS} LIMIT %s) capped",
            (since_ms, until_ms, cap),
        ).fetchone()
    return int(row[0]) if row else 0


def slot_health(kept: KeptConnection, slot: str) -> SlotHealth | None:
    """pg_replication_slots, with the byte distances measured from the current WAL position (on a
    standby, which has no current position of its own, from the last one received)."""
    with kept.reading() as conn:
        row = conn.execute(
            "SELECT s.active, s.wal_status, s.safe_wal_size, "
            "pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint, "
            "pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots s, "
            "(SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
            "ELSE pg_current_wal_lsn() END AS lsn) w "
            "WHERE s.slot_name = %s",
            (slot,),
        ).fetchone()
    if row is None:
        return None
    active, wal_status, safe, retained, unconfirmed = row
    return SlotHealth(
        bool(active),
        wal_status,
        int(safe) if safe is not None else None,
        max(0, int(retained)) if retained is not None else None,
        max(0, int(unconfirmed)) if unconfirmed is not None else None,
    )
