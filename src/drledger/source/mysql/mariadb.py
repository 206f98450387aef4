"""MariaDB standing in for MySQL: what its `version=8.0.2` (the version Debezium's MySQL connector
accepts) costs its replicas.

A MariaDB replica takes a primary whose version reads below 10 for one without MariaDB's GTIDs: it
logs "Falling back to Using_Gtid=No because master does not support GTIDs" and replicates by binlog
file and position, even when told `CHANGE MASTER TO MASTER_USE_GTID=slave_pos` (or `current_pos`).
The override hides MariaDB from `@@version` and `@@version_comment` alike; the variable
`gtid_domain_id`, MariaDB's own, still tells it, and InnoDB's plugin version is the real one.
"""

from __future__ import annotations

from typing import Any

from drledger.source.base import Finding

#: What `init --check` says on MariaDB with its version overridden (after its first words, which name
#: the server): the cost, and what to do.
REPLICA_COST = (
    "its MariaDB replicas replicate by binlog file and position, not GTID (Using_Gtid=No, even with "
    "MASTER_USE_GTID=slave_pos)"
)
REPLICA_FIX = "point failover tooling at file and position (Relay_Master_Log_File, Exec_Master_Log_Pos)"


def _rows(conn: Any, statement: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(statement)
        return list(cursor.fetchall())


def is_mariadb(conn: Any) -> bool:
    return bool(_rows(conn, "SHOW GLOBAL VARIABLES LIKE 'gtid_domain_id'"))


def replica_finding(conn: Any) -> Finding | None:
    """On MariaDB reporting a version below 10 (`version=8.0.2`), the one line that says what it costs
    its replicas and what to do; nothing elsewhere (MySQL, Aurora, MariaDB as it is)."""
    if not is_mariadb(conn):
        return None
    reported = str(_rows(conn, "SELECT @@version")[0][0])
    major = reported.split(".", 1)[0]
    if not major.isdigit() or int(major) >= 10:
        return None
    real = _rows(
        conn, "SELECT PLUGIN_AUTH_VERSION FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'InnoDB'"
    )
    server = f"MariaDB {real[0][0]}" if real and real[0][0] else "MariaDB"
    return Finding(True, f"{server} reports version={reported}: {REPLICA_COST}", REPLICA_FIX)
