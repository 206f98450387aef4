"""drledger's outbox in MySQL: the `drledger` database, capture triggers, checks, pruning, window reads.

MySQL has no statement-level triggers: each captured table gets one `AFTER INSERT … FOR EACH ROW`
trigger, generated from information_schema at `init`, that writes the outbox row in the same
transaction as the business row. Triggers run with their definer's rights (the installer), so the
application's role needs nothing on database `drledger`. The payload is LONGTEXT utf8mb4: the text
JSON_OBJECT printed is the text the relay ships and the fingerprint hashes. The transaction id is not
known inside a trigger; the relay takes it from the binlog.

Capture is suppressed for a connection listed in `drledger.replay_session` — replay lists its own
connection inside each transaction it commits and removes it before the commit, so the row is never
seen by anyone else, and only a role that may write that table (the recoverer) can suppress capture.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from drledger.errors import DrledgerError
from drledger.events import DEFAULT_OPS, LATEST_MS, OutboxRow
from drledger.names import TableName
from drledger.source.base import Finding
from drledger.source.mysql.columns import Column, image_expression, key_expression, literal, quote
from drledger.source.mysql.connection import connect, error_code, parse_dsn
from drledger.source.mysql.mariadb import replica_finding

SCHEMA = "drledger"
TRIGGER_PREFIX = "drledger_capture_"
# created_at is a DATETIME(6) in UTC. Instants go in and out as epoch milliseconds by arithmetic, not
# FROM_UNIXTIME/UNIX_TIMESTAMP, which stop at 2038 on MariaDB and would make an open window empty.
_AT = "TIMESTAMPADD(MICROSECOND, %s, '1970-01-01 00:00:00')"  # its parameter: microseconds


def ms_of(column: str) -> str:
    return f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) DIV 1000"


def _us(ms: float) -> int:
    return int(ms) * 1000


_DDL = [
    f"CREATE DATABASE IF NOT EXISTS {SCHEMA} CHARACTER SET utf8mb4",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
        id            CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        aggregatetype VARCHAR(400) CHARACTER SET utf8mb4 NOT NULL,
        aggregateid   TEXT CHARACTER SET utf8mb4 NOT NULL,
        type          VARCHAR(16) NOT NULL DEFAULT 'insert',
        payload       LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        txid          BIGINT NULL,
        created_at    DATETIME(6) NOT NULL,
        fingerprint   VARBINARY(48) NULL,
        before_image  LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        KEY outbox_created_at_idx (created_at)
    ) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.heartbeat (
        id INT PRIMARY KEY, beat_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB""",
    # Each relay by name, with the account it reads the binlog as: a binlog reader is a thread of that
    # account, which is how a watcher tells the relay is reading (MySQL has no slot to show it).
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.relays (
        slot          VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL PRIMARY KEY,
        account       VARCHAR(128) CHARACTER SET utf8mb4 NOT NULL,
        server_id     BIGINT UNSIGNED NOT NULL,
        registered_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.replay_log (
        event_id  CHAR(36) CHARACTER SET ascii NOT NULL,
        outcome   VARCHAR(32) NOT NULL,
        detail    TEXT,
        logged_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        KEY replay_log_event_id_idx (event_id)
    ) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.replay_session (
        connection_id BIGINT UNSIGNED PRIMARY KEY
    ) ENGINE=InnoDB""",
]


def parse_table(text: str, default_schema: str) -> TableName:
    """`table`, `database.table`, with backticks or double quotes around parts; case kept (MySQL's
    table names are case-sensitive on Linux). The canonical text drledger prints parses back too."""
    parts: list[str] = []
    i, stripped = 0, text.strip()
    while i < len(stripped):
        if stripped[i] in '`"':
            mark = stripped[i]
            j, chars = i + 1, []
            while True:
                end = stripped.find(mark, j)
                if end < 0:
                    raise DrledgerError(f"{text!r} is not a table name (a quote is not closed).")
                chars.append(stripped[j:end])
                if stripped.startswith(mark, end + 1):
                    chars.append(mark)
                    j = end + 2
                    continue
                i = end + 1
                break
            parts.append("".join(chars))
        else:
            end = stripped.find(".", i)
            end = len(stripped) if end < 0 else end
            parts.append(stripped[i:end])
            i = end
        if i < len(stripped):
            if stripped[i] != ".":
                raise DrledgerError(f"{text!r} is not a table name; write it as database.table.")
            i += 1
    if not parts or len(parts) > 2 or not all(parts):
        raise DrledgerError(f"{text!r} is not a table name; write it as database.table.")
    if any(len(p) > 64 for p in parts):
        raise DrledgerError(f"{text!r} is longer than MySQL's 64-character limit for a name.")
    return TableName(parts[0], parts[1]) if len(parts) == 2 else TableName(default_schema, parts[0])


def ident(table: TableName) -> str:
    return f"{quote(table.schema)}.{quote(table.name)}"


def trigger_name(table: TableName) -> str:
    # Trigger names are per database and at most 64 characters: a digest keeps them short and unique.
    return TRIGGER_PREFIX + hashlib.sha1(table.qualified.encode()).hexdigest()[:16]


def query(conn: Any, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall())


def table_columns(conn: Any, table: TableName) -> list[Column]:
    """The table's columns in order; one sentence if the table is missing or is a view."""
    kind = query(
        conn,
        "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (table.schema, table.name),
    )
    if not kind:
        near = query(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE LOWER(TABLE_SCHEMA) = LOWER(%s) AND LOWER(TABLE_NAME) = LOWER(%s) LIMIT 1",
            (table.schema, table.name),
        )
        hint = f"; did you mean {TableName(near[0][0], near[0][1]).qualified}?" if near else "."
        raise DrledgerError(f"The table {table.qualified} does not exist in this database{hint}")
    if kind[0][0] != "BASE TABLE":
        raise DrledgerError(f"{table.qualified} is a view; drledger captures inserts into tables only.")
    json_columns = _json_checked_columns(conn, table)
    rows = query(
        conn,
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (table.schema, table.name),
    )
    return [
        Column(name, data_type, column_type, name in json_columns, "GENERATED" in (extra or "").upper())
        for name, data_type, column_type, extra in rows
    ]


ER_TABLEACCESS_DENIED = 1142
_JSON_VALID = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)


def _json_checked_columns(conn: Any, table: TableName) -> set[str]:
    """MariaDB's JSON columns: LONGTEXT with a json_valid(`column`) check (MySQL's JSON is a type).

    Read from SHOW CREATE TABLE, which any account with a privilege on the table may run, so every
    role gets the same answer: information_schema.CHECK_CONSTRAINTS hides the checks from an account
    that holds only table-level grants, and a JSON column then read as text was written as NULL.
    """
    try:
        shown = query(conn, f"SHOW CREATE TABLE {ident(table)}")
    except Exception as exc:
        if error_code(exc) == ER_TABLEACCESS_DENIED:  # no privilege on the table: no column shows either
            return set()
        raise
    return {name.replace("``", "`") for name in _JSON_VALID.findall(str(shown[0][1]))} if shown else set()


def primary_key_columns(conn: Any, table: TableName) -> list[str]:
    rows = query(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (table.schema, table.name),
    )
    if not rows:
        raise DrledgerError(
            f"The table {table.qualified} has no primary key; drledger needs one to identify rows."
        )
    return [r[0] for r in rows]


#: Each captured operation's trigger: its name's suffix after trigger_name(table), and its event.
_OP_TRIGGERS = {"insert": ("", "INSERT"), "update": ("_u", "UPDATE"), "delete": ("_d", "DELETE")}
# The text an event's hash is taken of, as events.change_text builds it: an insert's payload alone.
# CHAR(10), not '\\n': a session with NO_BACKSLASH_ESCAPES would read that as two characters.
_NL = "CONVERT(CHAR(10) USING utf8mb4)"
_CHANGE_TEXT = (
    f"IF(type = 'insert', payload, CONCAT(type, {_NL}, COALESCE(before_image, ''), {_NL}, payload))"
)


def _outbox_row(table: TableName, key: str, op: str, payload: str, before: str = "NULL") -> str:
    """The capture trigger's INSERT of one event (`payload`, `before`: SQL expressions of the images)."""
    text = (
        "v_payload" if op == "insert" else f"CONCAT('{op}', {_NL}, COALESCE(v_before, ''), {_NL}, v_payload)"
    )
    return f"""    SET v_id = UUID();
    SET v_payload = {payload};
    SET v_before = {before};
    INSERT INTO {SCHEMA}.outbox (id, aggregatetype, aggregateid, type, payload, before_image, created_at, fingerprint)
    VALUES (v_id, {literal(table.qualified)}, {key}, '{op}', v_payload, v_before, UTC_TIMESTAMP(6),
            CONCAT(UNHEX(REPLACE(v_id, '-', '')), UNHEX(SHA2({text}, 256))));
"""


def _trigger_ddl(table: TableName, columns: list[Column], keys: list[str], op: str = "insert") -> str:
    """The row trigger that captures `op`. An update keeps its key: one `update` event with both
    images; an update that changes the key is a `delete` of the old key and an `insert` of the new."""
    by_name = {c.name: c for c in columns}
    key_columns = [by_name[k] for k in keys]
    new_key = key_expression(key_columns, {k: f"NEW.{quote(k)}" for k in keys})
    old_key = key_expression(key_columns, {k: f"OLD.{quote(k)}" for k in keys})
    suffix, event = _OP_TRIGGERS[op]
    if op == "insert":
        body = _outbox_row(table, new_key, "insert", image_expression(columns))
    elif op == "delete":
        body = _outbox_row(table, old_key, "delete", image_expression(columns, "OLD"))
    else:
        same_key = " AND ".join(f"NEW.{quote(k)} <=> OLD.{quote(k)}" for k in keys)
        body = (
            f"    IF {same_key} THEN\n"
            + _outbox_row(
                table, new_key, "update", image_expression(columns), image_expression(columns, "OLD")
            )
            + "    ELSE\n"
            + _outbox_row(table, old_key, "delete", image_expression(columns, "OLD"))
            + _outbox_row(table, new_key, "insert", image_expression(columns))
            + "    END IF;\n"
        )
    return f"""CREATE TRIGGER {quote(table.schema)}.{quote(trigger_name(table) + suffix)}
AFTER {event} ON {ident(table)} FOR EACH ROW
BEGIN
  DECLARE v_id CHAR(36) CHARACTER SET ascii;
  DECLARE v_payload LONGTEXT CHARACTER SET utf8mb4;
  DECLARE v_before LONGTEXT CHARACTER SET utf8mb4;
  IF NOT EXISTS (SELECT 1 FROM {SCHEMA}.replay_session WHERE connection_id = CONNECTION_ID()) THEN
{body}  END IF;
END"""


def captured_ops(conn: Any, table: TableName) -> tuple[str, ...]:
    """The operations whose capture trigger the table has."""
    names = {
        r[0]
        for r in query(
            conn,
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s "
            "AND EVENT_OBJECT_TABLE = %s",
            (table.schema, table.name),
        )
    }
    return tuple(op for op, (suffix, _) in _OP_TRIGGERS.items() if trigger_name(table) + suffix in names)


def has_before_image(conn: Any) -> bool:
    return bool(
        query(
            conn,
            "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'outbox' "
            "AND COLUMN_NAME = 'before_image'",
            (SCHEMA,),
        )
    )


def install(dsn: str, tables: list[str], ops: Sequence[str] = DEFAULT_OPS) -> list[str]:
    """Create database drledger with its tables, and a capture trigger per table; safe to run again."""
    default = parse_dsn(dsn).database
    names = [parse_table(t, default) for t in tables]
    for name in names:
        if name.schema == SCHEMA:
            raise DrledgerError(
                f"{name.qualified} is one of drledger's own tables; capture the application's tables only."
            )
    conn = connect(dsn)
    try:
        plans = []
        for table in names:
            columns = table_columns(conn, table)
            bad = [f"{c.name} ({c.data_type})" for c in columns if c.unsupported()]
            if bad:
                raise DrledgerError(
                    f"drledger cannot capture {table.qualified}: its columns {', '.join(bad)} have types it does not carry."
                )
            plans.append((table, columns, primary_key_columns(conn, table)))
        if not query(conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (SCHEMA,)):
            query(conn, _DDL[0])
        for statement in _DDL[1:]:
            query(conn, statement)
        if not has_before_image(conn):  # an outbox made before updates and deletes were captured
            query(
                conn,
                f"ALTER TABLE {SCHEMA}.outbox ADD COLUMN before_image LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL",
            )
        for table, columns, keys in plans:
            for op, (suffix, _) in _OP_TRIGGERS.items():
                query(
                    conn,
                    f"DROP TRIGGER IF EXISTS {quote(table.schema)}.{quote(trigger_name(table) + suffix)}",
                )
                if op in ops:
                    query(conn, _trigger_ddl(table, columns, keys, op))
    finally:
        conn.close()
    return [t.qualified for t in names]


def _variable(conn: Any, name: str) -> str | None:
    rows = query(conn, "SHOW GLOBAL VARIABLES LIKE %s", (name,))
    return str(rows[0][1]) if rows else None


def check(dsn: str, tables: list[str]) -> list[Finding]:
    """What the relay needs from this server, each item with how to fix it (on Aurora: the parameter group)."""
    default = parse_dsn(dsn).database
    findings: list[Finding] = []
    conn = connect(dsn)
    try:
        wanted = [
            ("log_bin", "ON", "turn on binary logging (on Aurora: enable binlog by setting binlog_format)"),
            ("binlog_format", "ROW", "set binlog_format = ROW (on Aurora: the DB cluster parameter group)"),
            (
                "binlog_row_image",
                "FULL",
                "set binlog_row_image = FULL (on Aurora: the DB cluster parameter group)",
            ),
        ]
        for name, want, fix in wanted:
            value = _variable(conn, name)
            ok = (value or "").upper() in (want, "1" if want == "ON" else want)
            findings.append(
                Finding(ok, f"{name} is {value!r}" + ("" if ok else f", not {want!r}"), None if ok else fix)
            )
        trusted = (_variable(conn, "log_bin_trust_function_creators") or "").upper() in ("ON", "1")
        findings.append(
            Finding(
                trusted,
                "log_bin_trust_function_creators is " + ("on" if trusted else "off"),
                None
                if trusted
                else "set log_bin_trust_function_creators = 1 (on Aurora: the parameter group), so init may create triggers",
            )
        )
        gtid = _variable(conn, "gtid_mode")
        if gtid is not None:  # MySQL; MariaDB's GTIDs are always on
            ok = gtid.upper() == "ON"
            findings.append(
                Finding(
                    ok,
                    f"gtid_mode is {gtid!r}",
                    None
                    if ok
                    else "preferably set gtid_mode = ON and enforce_gtid_consistency = ON (parameter group)",
                )
            )
        if (replicas := replica_finding(conn)) is not None:
            findings.append(replicas)
        retention = (
            "binlog retention: on Aurora, CALL mysql.rds_set_configuration('binlog retention hours', 24)"
        )
        findings.append(Finding(True, retention))
        has_outbox = bool(
            query(
                conn,
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'outbox'",
                (SCHEMA,),
            )
        )
        findings.append(
            Finding(
                has_outbox,
                "the drledger.outbox table " + ("exists" if has_outbox else "is missing"),
                None if has_outbox else "run drledger init",
            )
        )
        triggers = {
            r[0]
            for r in query(
                conn,
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE %s",
                ("drledger\\_capture\\_%",),
            )
        }
        for text in tables:
            table = parse_table(text, default)
            ok = trigger_name(table) in triggers
            ops = captured_ops(conn, table) if ok else ()
            # A transaction is whole in the ledger only if every change it makes is captured.
            what = f" (capturing {', '.join(ops)}{'' if len(ops) == 3 else '; its other changes are not in the ledger'})"
            findings.append(
                Finding(
                    ok,
                    f"the capture trigger on {table.qualified} "
                    + (f"is installed{what}" if ok else "is missing"),
                    None if ok else f"run drledger init --table {table.qualified}",
                )
            )
    finally:
        conn.close()
    return findings


def require_relay_prerequisites(dsn: str) -> None:
    for finding in check(dsn, []):
        if not finding.ok:
            if finding.what == "the drledger.outbox table is missing":
                raise DrledgerError("This database has no drledger.outbox; run drledger init first.")
            if finding.what.startswith("log_bin_trust"):
                continue  # needed to create triggers, not to relay
            raise DrledgerError(f"The relay cannot run here: {finding.what}; {finding.fix}.")


def captured_tables(conn: Any) -> dict[str, tuple[str, str]]:
    """Canonical name → (database, table) of every table with a drledger capture trigger."""
    rows = query(
        conn,
        "SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
        "WHERE TRIGGER_NAME LIKE 'drledger\\_capture\\_%%' AND EVENT_OBJECT_SCHEMA <> %s",
        (SCHEMA,),
    )
    return {TableName(s, t).qualified: (s, t) for s, t in rows}


def require_outbox(conn: Any) -> None:
    if not query(
        conn,
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'outbox'",
        (SCHEMA,),
    ):
        raise DrledgerError("The DR database has no drledger.outbox; is this the right database?")


def prune(dsn: str, older_than_ms: int, *, apply: bool) -> int:
    conn = connect(dsn)
    try:
        bound = (_us(older_than_ms),)
        if apply:
            with conn.cursor() as cursor:
                return int(cursor.execute(f"DELETE FROM {SCHEMA}.outbox WHERE created_at < {_AT}", bound))
        return int(query(conn, f"SELECT COUNT(*) FROM {SCHEMA}.outbox WHERE created_at < {_AT}", bound)[0][0])
    finally:
        conn.close()


def _row_columns(has_before: bool) -> str:
    """An OutboxRow's columns; the digest is of the change's text exactly as stored."""
    # The row's creation in microseconds orders a transaction's changes (the trigger's clock, per row).
    position = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at)"
    if not has_before:
        return (
            f"id, aggregatetype, aggregateid, type, payload, COALESCE(txid, 0), {ms_of('created_at')}, "
            f"SHA2(payload, 256), NULL, {position}"
        )
    return (
        "id, aggregatetype, aggregateid, type, payload, COALESCE(txid, 0), "
        f"{ms_of('created_at')}, SHA2({_CHANGE_TEXT}, 256), before_image, {position}"
    )


def fingerprint_expression(has_before: bool) -> str:
    """A row's fingerprint computed by the server (for a row written without one)."""
    text = _CHANGE_TEXT if has_before else "payload"
    return f"CONCAT(UNHEX(REPLACE(id, '-', '')), UNHEX(SHA2({text}, 256)))"


def _bounds(since_ms: int | None, until_ms: int | None) -> tuple[int, int]:
    """A window's ends as _AT's parameters (microseconds); an open end is the epoch or the latest time."""
    return _us(since_ms if since_ms is not None else 0), _us(until_ms if until_ms is not None else LATEST_MS)


def read_window(dsn: str, since_ms: int | None, until_ms: int | None) -> Iterator[OutboxRow]:
    import pymysql.cursors

    conn = connect(dsn)
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cursor:
            columns = _row_columns(has_before_image(conn))
            cursor.execute(
                f"SELECT {columns} FROM {SCHEMA}.outbox WHERE created_at BETWEEN {_AT} AND {_AT}",
                _bounds(since_ms, until_ms),
            )
            for row in cursor:
                yield OutboxRow(*row)
    finally:
        conn.close()


def read_fingerprints(
    dsn: str, since_ms: int | None, until_ms: int | None, *, stored_only: bool = False
) -> list[bytes]:
    """Every outbox row's fingerprint in the window, computed by the server where one is missing (left
    out, with `stored_only`)."""
    conn = connect(dsn)
    try:
        require_outbox(conn)
        chosen = (
            "fingerprint"
            if stored_only
            else f"COALESCE(fingerprint, {fingerprint_expression(has_before_image(conn))})"
        )
        rows = query(
            conn,
            f"SELECT {chosen} FROM {SCHEMA}.outbox WHERE created_at BETWEEN {_AT} AND {_AT}",
            _bounds(since_ms, until_ms),
        )
    finally:
        conn.close()
    return [bytes(r[0]) for r in rows if r[0] is not None]


def _id_texts(ids: set[bytes]) -> list[str]:
    return [str(uuid.UUID(bytes=i)) for i in ids]


def created_at(dsn: str, ids: set[bytes]) -> dict[bytes, int]:
    if not ids:
        return {}
    conn = connect(dsn)
    try:
        rows = query(
            conn,
            f"SELECT id, {ms_of('created_at')} FROM {SCHEMA}.outbox WHERE id IN %s",
            (_id_texts(ids),),
        )
    finally:
        conn.close()
    return {uuid.UUID(r[0]).bytes: int(r[1]) for r in rows}


def ids_present(dsn: str, ids: set[bytes], since_ms: int, until_ms: int) -> set[bytes]:
    if not ids:
        return set()
    conn = connect(dsn)
    try:
        rows = query(
            conn,
            f"SELECT id FROM {SCHEMA}.outbox WHERE id IN %s AND created_at BETWEEN {_AT} AND {_AT}",
            (_id_texts(ids), _us(since_ms), _us(until_ms)),
        )
    finally:
        conn.close()
    return {uuid.UUID(r[0]).bytes for r in rows}


def outbox_rows(dsn: str, event_ids: list[str]) -> dict[str, OutboxRow]:
    if not event_ids:
        return {}
    conn = connect(dsn)
    try:
        rows = query(
            conn,
            f"SELECT {_row_columns(has_before_image(conn))} FROM {SCHEMA}.outbox WHERE id IN %s",
            (event_ids,),
        )
    finally:
        conn.close()
    return {r[0]: OutboxRow(*r) for r in rows}


def latest_commit_ms(dsn: str) -> int | None:
    conn = connect(dsn)
    try:
        require_outbox(conn)
        rows = query(conn, f"SELECT {ms_of('MAX(created_at)')} FROM {SCHEMA}.outbox")
    finally:
        conn.close()
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def outbox_slice(dsn: str, since_ms: int, until_ms: int, limit: int) -> tuple[list[tuple[bytes, int]], int]:
    """Ids and creation times in [since_ms, until_ms), oldest first, by the created_at index, cut at a
    millisecond boundary once past `limit` (a transaction's rows share a millisecond)."""
    read = (
        f"SELECT id, {ms_of('created_at')} FROM {SCHEMA}.outbox "
        f"WHERE created_at >= {_AT} AND created_at < {_AT} ORDER BY created_at"
    )
    conn = connect(dsn)
    try:
        # One pass over the index: a row past the limit says where to cut.
        rows = query(conn, read + " LIMIT %s", (_us(since_ms), _us(until_ms), limit + 1))
        end = until_ms
        if len(rows) > limit:
            end = max(int(rows[limit][1]), since_ms + 1)
            if end == since_ms + 1 and int(rows[limit][1]) == since_ms:
                rows = query(conn, read, (_us(since_ms), _us(end)))
            else:
                rows = rows[: bisect_left(rows, end, key=lambda r: int(r[1]))]
    finally:
        conn.close()
    return [(uuid.UUID(r[0]).bytes, int(r[1])) for r in rows], end


def count_events(dsn: str, since_ms: int, until_ms: int, cap: int) -> int:
    conn = connect(dsn)
    try:
        rows = query(
            conn,
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {SCHEMA}.outbox WHERE created_at >= {_AT} "
            f"AND created_at < {_AT} LIMIT %s) capped",
            (_us(since_ms), _us(until_ms), cap),
        )
    finally:
        conn.close()
    return int(rows[0][0]) if rows else 0


def writable_by_others(dsn: str) -> str | None:
    """Why this server could be taking writes (see SourceDatabase.writable_by_others), or None: read_only
    (Aurora's readers, a server set read-only) refuses every write but a privileged account's."""
    conn = connect(dsn)
    try:
        read_only, others = query(
            conn,
            "SELECT @@global.read_only, (SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID'))",
        )[0]
    finally:
        conn.close()
    if int(read_only):
        return None
    return f"it accepts writes (read_only is off), with {others} other session{'' if others == 1 else 's'} connected"
