"""The PostgreSQL replication side of the relay: who the source is, its slot, and the password libpq
found for Debezium's Java driver."""

from __future__ import annotations

from typing import Any

import psycopg

from drledger.errors import DrledgerError
from drledger.source.postgres.connection import connect
from drledger.streaming import SlotInfo, SourceIdentity


def identify(dsn: str, slot: str) -> SourceIdentity:
    """IDENTIFY_SYSTEM over a replication connection: the system identifier and the *current* timeline
    (pg_control's checkpoint timeline lags a promotion until the next checkpoint)."""
    with connect(dsn, autocommit=True, replication="database") as conn:
        result = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
        if result.ntuples != 1 or result.nfields < 4:
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise DrledgerError(
                f"The database did not identify itself to a replication connection: {message}."
            )
        system_id, timeline, _lsn, database = ((result.get_value(0, i) or b"").decode() for i in range(4))
    return SourceIdentity(system_id, int(timeline), database, slot)


def slot_info(dsn: str, slot: str) -> SlotInfo | None:
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_jsonb(s) FROM pg_replication_slots s WHERE slot_name = %s", (slot,)
        ).fetchone()
    if row is None:
        return None
    doc: dict[str, Any] = row[0]
    return SlotInfo(
        doc.get("database"), doc.get("plugin"), doc.get("wal_status"), doc.get("invalidation_reason")
    )


def ensure_slot(dsn: str, slot: str) -> bool:
    """Create the logical replication slot if it does not exist; True if it was created."""
    with connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
            return False
        try:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        except psycopg.errors.DuplicateObject:
            return False
    return True


def source_password(dsn: str) -> str | None:
    """The password libpq used (the DSN's, PGPASSWORD, or ~/.pgpass), for Debezium's Java driver."""
    with connect(dsn) as conn:
        return conn.info.password or None
