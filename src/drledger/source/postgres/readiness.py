"""The watcher's reads of a live primary and its hot standby: cheap enough to run every few seconds.

Every read goes through the outbox's created_at index (a range, bounded by a LIMIT) or a catalog
view; none scans the outbox, whatever its size. Each call opens one short connection and sets a
statement timeout, so a database that hangs costs the watcher a cycle, never its life.
"""

from __future__ import annotations

from typing import Any

import psycopg

from drledger.source.base import OutboxSlice, SlotHealth
from drledger.source.postgres.connection import connect
from drledger.source.postgres.outbox import require_outbox

# A watch read that takes longer than this is a sign of trouble, not something to wait for.
_STATEMENT_TIMEOUT_MS = 5000
_MS = "to_timestamp(%s / 1000.0)"


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = connect(dsn, autocommit=True, options=f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}")
    return conn


def outbox_slice(dsn: str, since_ms: int, until_ms: int, limit: int) -> OutboxSlice:
    """Ids and creation times in [since_ms, until_ms), oldest first, cut at a millisecond boundary
    once past `limit` (a transaction's rows share one creation time, so a cut inside a millisecond
    would split them between two reads)."""
    with _connect(dsn) as conn:
        require_outbox(conn)
        end = until_ms
        cut = conn.execute(
            f"SELECT floor(extract(epoch FROM created_at) * 1000)::bigint FROM drledger.outbox "
            f"WHERE created_at >= {_MS} AND created_at < {_MS} ORDER BY created_at OFFSET %s LIMIT 1",
            (since_ms, until_ms, limit),
        ).fetchone()
        if cut is not None:
            # Past the limit: stop at the millisecond the limit falls in (or just after it, when the
            # whole read is one millisecond).
            end = max(int(cut[0]), since_ms + 1)
        rows = conn.execute(
            f"SELECT uuid_send(id), floor(extract(epoch FROM created_at) * 1000)::bigint "
            f"FROM drledger.outbox WHERE created_at >= {_MS} AND created_at < {_MS} ORDER BY created_at",
            (since_ms, end),
            binary=True,
        ).fetchall()
    return OutboxSlice([(bytes(r[0]), int(r[1])) for r in rows], end)


def count_events(dsn: str, since_ms: int, until_ms: int, cap: int) -> int:
    with _connect(dsn) as conn:
        require_outbox(conn)
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM drledger.outbox "
            f"WHERE created_at >= {_MS} AND created_at < {_MS} LIMIT %s) capped",
            (since_ms, until_ms, cap),
        ).fetchone()
    return int(row[0]) if row else 0


def slot_health(dsn: str, slot: str) -> SlotHealth | None:
    """pg_replication_slots, with the byte distances measured from the current WAL position (on a
    standby, which has no current position of its own, from the last one received)."""
    with _connect(dsn) as conn:
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
