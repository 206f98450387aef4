"""The relay on MySQL: Debezium's MySQL connector, the server's identity, and its failures in one sentence.

MySQL streams from its binlog, not from a slot: the relay's position (a binlog file and offset, or a
GTID set) lives in its offsets, and the connector reads as a replica with its own server id, derived
from the relay's name so two relays never share one. What a slot's loss is on PostgreSQL, a purged
binlog is here: the position is gone, and only a backfill can cover the gap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from drledger.errors import DrledgerError, RetryLater
from drledger.source.base import SlotHealth
from drledger.source.mysql.connection import connect, parse_dsn
from drledger.source.mysql.outbox import SCHEMA, query
from drledger.streaming import (
    CHECK,
    RESTART,
    Cause,
    RelaySettings,
    SlotInfo,
    SourceIdentity,
    engine_properties,
    first_line,
)

HEARTBEAT_QUERY = (
    f"INSERT INTO {SCHEMA}.heartbeat (id, beat_at) VALUES (1, UTC_TIMESTAMP(6)) "
    "ON DUPLICATE KEY UPDATE beat_at = VALUES(beat_at)"
)


def server_id(slot: str) -> int:
    """The replica server id the connector reads the binlog as: stable for a relay, unlikely to clash."""
    return 5_400 + int(hashlib.sha1(slot.encode()).hexdigest()[:7], 16) % 2_000_000_000


def debezium_properties(dsn: str, settings: RelaySettings, *, password: str | None = None) -> dict[str, str]:
    address = parse_dsn(dsn)
    props = engine_properties(settings)
    props.update(
        {
            "connector.class": "io.debezium.connector.mysql.MySqlConnector",
            "database.hostname": address.host,
            "database.port": str(address.port),
            "database.user": address.user,
            "database.server.id": str(server_id(settings.slot)),
            "topic.prefix": "drledger",
            "database.include.list": SCHEMA,
            "table.include.list": f"{SCHEMA}.outbox,{SCHEMA}.heartbeat",
            "include.schema.changes": "false",
            # provide.transaction.metadata (every engine's): MySQL's triggers cannot know their
            # transaction, the binlog does.
            # Only the outbox is read: no global read lock is needed (nor the RELOAD privilege it takes).
            "snapshot.locking.mode": "none",
            "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
            "schema.history.internal.file.filename": str(
                settings.state_dir / f"{settings.slot}.schema-history"
            ),
            "heartbeat.action.query": HEARTBEAT_QUERY,
            "binary.handling.mode": "base64",
            "connect.keep.alive": "true",
        }
    )
    secret = address.password or password
    if secret:
        props["database.password"] = secret
    if address.tls:
        props["database.ssl.mode"] = (
            "verify_identity" if address.tls.get("check_hostname") == "true" else "required"
        )
    return props


def identify(dsn: str, slot: str) -> SourceIdentity:
    """The server whose binlog a position belongs to: its UUID (MySQL) or server id (MariaDB). A
    promoted replica is another server with another binlog, so a position never carries over."""
    conn = connect(dsn)
    try:
        row = query(conn, "SELECT @@server_id")[0]
        try:
            uuid_row = query(conn, "SELECT @@server_uuid")
            system = str(uuid_row[0][0])
        except Exception:  # MariaDB has no server_uuid
            system = f"server-id {row[0]}"
    finally:
        conn.close()
    return SourceIdentity(system, 1, parse_dsn(dsn).database or SCHEMA, slot)


def register(dsn: str, slot: str) -> None:
    """Record the account this relay reads the binlog as, which is how a watcher finds its thread."""
    import pymysql

    conn = connect(dsn)
    try:
        query(
            conn,
            f"INSERT INTO {SCHEMA}.relays (slot, account, server_id, registered_at) "
            "VALUES (%s, SUBSTRING_INDEX(USER(), '@', 1), %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
            "account = VALUES(account), server_id = VALUES(server_id), registered_at = VALUES(registered_at)",
            (slot, server_id(slot)),
        )
    except pymysql.err.ProgrammingError as exc:  # 1146: an outbox from before drledger.relays
        raise DrledgerError(
            f"This database's drledger schema predates the relay registry ({exc.args[-1]}): run drledger "
            "init again (it is idempotent)."
        ) from None
    except pymysql.err.OperationalError as exc:  # 1142: the relay's account may not write it
        raise DrledgerError(f"The relay cannot register itself ({exc.args[-1]}): {CHECK}.") from None
    finally:
        conn.close()


def relay_health(dsn: str, slot: str) -> SlotHealth | None:
    """Whether the relay named `slot` is reading the binlog now: a binlog dump thread of the account it
    registered with. None if no relay by that name ever registered. What the binlog keeps is the
    server's to say (binlog_expire_logs_seconds; init --check), not a slot's, so the rest is unknown."""
    conn = connect(dsn)
    try:
        registered = query(conn, f"SELECT account FROM {SCHEMA}.relays WHERE slot = %s", (slot,))
        if not registered:
            return None
        account = str(registered[0][0])
        readers = query(
            conn,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND LIKE 'Binlog Dump%%'",
            (account,),
        )[0][0]
        if not readers and not _sees_every_thread(conn, account):
            raise DrledgerError(
                f"This account cannot see the relay's threads (it runs as {account}): grant it PROCESS "
                "to watch the relay on MySQL (drledger init --print-grants lists it)."
            )
    finally:
        conn.close()
    return SlotHealth(
        active=bool(readers),
        wal_status=None,
        safe_wal_bytes=None,
        retained_bytes=None,
        unconfirmed_bytes=None,
    )


def _sees_every_thread(conn: object, account: str) -> bool:
    me = str(query(conn, "SELECT SUBSTRING_INDEX(USER(), '@', 1)")[0][0])
    if me == account:
        return True
    held = query(
        conn,
        "SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE IN ('PROCESS', 'SUPER') "
        "AND GRANTEE = CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", "
        "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")",
    )
    return bool(held)


def slot_info(dsn: str, slot: str) -> SlotInfo | None:
    # No slot on MySQL: the binlog is the stream, always there while the server keeps it.
    return SlotInfo(parse_dsn(dsn).database or SCHEMA, None, None, None)


def classify(chain: Sequence[Cause], *, slot: str, state_dir: str, backfill_hint: str) -> DrledgerError:
    """The error a relay whose MySQL connector failed with this chain exits with (2 or 75)."""
    text = " | ".join(c.message for c in chain).lower()
    reason = next((first_line(c.message) for c in reversed(chain) if c.message), "no reason given")
    if "binlog" in text and (
        "purged" in text or "no longer available" in text or "could not find first log" in text
    ):
        return DrledgerError(
            f"The binlog position the relay saved in {state_dir} is no longer on the server ({reason}), so "
            f"resuming would skip events: move {state_dir} aside and start the relay with --backfill-since "
            f"{backfill_hint}, which publishes what the ledger lacks."
        )
    if "access denied" in text or "1045" in text:
        return DrledgerError(
            f"The database refused the relay's login ({reason}): check the DSN's user and password."
        )
    if (
        "replication slave" in text
        or "replication client" in text
        or "command denied" in text
        or "1227" in text
    ):
        return DrledgerError(f"The database user lacks a privilege the relay needs ({reason}): {CHECK}.")
    if (
        "binlog_format" in text
        or "binlog_row_image" in text
        or ("binary log" in text and "not enabled" in text)
    ):
        return DrledgerError(f"The server's binlog is not as the relay needs it ({reason}): {CHECK}.")
    if "doesn't exist" in text and "drledger" in text:
        return DrledgerError(f"The outbox is not as drledger init made it ({reason}): {CHECK}.")
    if any(
        word in text
        for word in (
            "communications link failure",
            "connection refused",
            "connect timed out",
            "eof",
            "broken pipe",
            "socket",
        )
    ):
        return RetryLater(f"The relay lost its connection to the database ({reason}): {RESTART}.")
    return RetryLater(f"The Debezium engine stopped ({reason}): {RESTART}.")
