"""drledger's outbox in PostgreSQL: schema, capture triggers, checks, pruning, and window reads.

The capture trigger is statement-level with a transition table, so an INSERT of many rows costs one
extra INSERT … SELECT into the outbox rather than one trigger call per row. It writes the outbox row
in the same transaction as the business row: either both commit or neither does.

A TRUNCATE of a captured table is refused by a trigger of its own (TRUNCATE_TRIGGER): it fires no
row trigger, so nothing of it could reach the ledger.

Setting `drledger.suppress_capture = on` in a transaction (SET LOCAL) makes the triggers write
nothing; replay uses it so a recovered row does not mint a second event.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from drledger.errors import DrledgerError
from drledger.events import CAPTURABLE_OPS, DEFAULT_OPS, FINGERPRINT_BYTES, LATEST_MS, OutboxRow
from drledger.names import TableName
from drledger.source.base import Finding
from drledger.source.postgres.connection import connect

SCHEMA = "drledger"

# Replay's audit trail: one row per event per replay that applied it, found it present, or skipped it.
# Append-only: a conflict skipped again by a later replay is logged again, with its own time.
REPLAY_LOG_DDL = """
CREATE TABLE IF NOT EXISTS drledger.replay_log (
    event_id   uuid        NOT NULL,
    outcome    text        NOT NULL,
    detail     text,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS replay_log_event_id_idx ON drledger.replay_log (event_id)
"""
PUBLICATION = "drledger_pub"
SUPPRESS_SETTING = "drledger.suppress_capture"

# The schema itself is created only when missing: CREATE SCHEMA IF NOT EXISTS asks for CREATE on the
# database even when the schema is there, and a re-run of init should need nothing it did not.
_SCHEMA_DDL = f"CREATE SCHEMA {SCHEMA}"
_BASE_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL DEFAULT 'insert',
    payload       jsonb       NOT NULL,
    txid          bigint      NOT NULL DEFAULT txid_current(),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_created_at_idx ON {SCHEMA}.outbox (created_at);
-- The event's fingerprint (its id's 16 bytes, then the SHA-256 of the row image's jsonb text),
-- written with the row by the capture trigger (a few microseconds) and carried to the DR replica,
-- so reconcile compares a million rows without hashing a million payloads after failover. A plain
-- column, not a generated one, so replay writes the fingerprint it already knows. A row written
-- without one (by hand) is fingerprinted when read.
ALTER TABLE {SCHEMA}.outbox ADD COLUMN IF NOT EXISTS fingerprint bytea;
-- An update's row before the change (NULL for an insert or a delete, whose payload is the row).
ALTER TABLE {SCHEMA}.outbox ADD COLUMN IF NOT EXISTS before_image jsonb;
-- Written by the relay's heartbeat so the replication slot advances while the outbox is idle.
CREATE TABLE IF NOT EXISTS {SCHEMA}.heartbeat (
    id       int PRIMARY KEY,
    beat_at  timestamptz NOT NULL
);
"""


# Replay runs the DR database's own triggers on the rows it restores; one that writes the outbox would
# mint an event replay never proved (a later replay, reading this database as a ledger, would apply it).
# Replay restores outbox rows at the top level (its COPY), capture writes them from its trigger while
# replay suppresses it: an outbox write from inside any trigger during replay is someone else's code.
_REPLAY_GUARD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.replay_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF pg_trigger_depth() > 1 AND current_setting('{SUPPRESS_SETTING}', true) = 'on'
     AND has_table_privilege(session_user, '{SCHEMA}.replay_log', 'INSERT') THEN
    RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
      MESSAGE = 'a trigger wrote drledger.outbox while replay applied this transaction; replay lets no code '
                'it did not write mint an event (disable the trigger for the replay)';
  END IF;
  RETURN NULL;
END $$
"""
# The WHEN clause keeps the guard's function out of every capture's path: it runs only in a session that
# suppresses capture (replay's), where it then checks who is asking. A sixth of a captured update's cost
# otherwise (benchmarks/pgbench.py).
_REPLAY_GUARD_TRIGGER = f"""
CREATE OR REPLACE TRIGGER drledger_replay_guard BEFORE INSERT ON {SCHEMA}.outbox
FOR EACH STATEMENT WHEN (current_setting('{SUPPRESS_SETTING}', true) = 'on')
EXECUTE FUNCTION {SCHEMA}.replay_guard()
"""


def ident(table: TableName) -> sql.Identifier:
    """The table as a quoted SQL identifier: how every statement names it."""
    return sql.Identifier(table.schema, table.name)


def trigger_function(table: TableName) -> sql.Identifier:
    # Table names may be long or odd; a digest keeps the function name short and unique.
    digest = hashlib.sha1(table.qualified.encode()).hexdigest()[:12]
    return sql.Identifier(SCHEMA, f"capture_{digest}")


_RELATION_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "an index",
    "c": "a composite type",
    "t": "a TOAST table",
}


def table_oid(conn: psycopg.Connection[Any], table: TableName) -> int:
    """The table's OID, found by its parts (never by parsing text); one sentence if it is not there."""
    row = conn.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    if row is not None and row[1] in ("r", "p"):
        return int(row[0])
    if row is not None:
        kind = _RELATION_KINDS.get(row[1], "not a table")
        raise DrledgerError(f"{table.qualified} is {kind}; drledger captures inserts into tables only.")
    # The usual slip: a mixed-case table typed without quotes, which folds to lower case.
    near = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE lower(n.nspname) = lower(%s) AND lower(c.relname) = lower(%s) AND c.relkind IN ('r', 'p') "
        "LIMIT 1",
        (table.schema, table.name),
    ).fetchone()
    hint = f"; did you mean {TableName(near[0], near[1]).qualified}?" if near else "."
    raise DrledgerError(f"The table {table.qualified} does not exist in this database{hint}")


def primary_key_columns(conn: psycopg.Connection[Any], table: TableName) -> list[str]:
    oid = table_oid(conn, table)
    columns = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (oid,),
    ).fetchall()
    if not columns:
        raise DrledgerError(
            f"The table {table.qualified} has no primary key; drledger needs one to identify rows."
        )
    return [c[0] for c in columns]


def key_expression(columns: list[str], alias: str = "n") -> sql.Composable:
    """The row key as text: the value itself for one column, a JSON object for a composite key.

    The capture trigger and replay both use this, so a replayed row's key reads exactly as captured.
    """
    row = sql.Identifier(alias)
    if len(columns) == 1:
        return sql.SQL("{}.{}::text").format(row, sql.Identifier(columns[0]))
    pairs = sql.SQL(", ").join(
        sql.SQL("{}, {}.{}").format(sql.Literal(c), row, sql.Identifier(c)) for c in columns
    )
    return sql.SQL("jsonb_build_object({})::text").format(pairs)


_OPS_COMMENT = "drledger capture of: "

# The text an event's hash is taken of, as events.change_text builds it: an insert's payload alone.
_CHANGE_TEXT = (
    "CASE e.op WHEN 'insert' THEN e.payload::text "
    "ELSE e.op || E'\\n' || coalesce(e.before_image::text, '') || E'\\n' || e.payload::text END"
)


def _capture_function_ddl(table: TableName, key_columns: list[str], ops: Sequence[str]) -> sql.Composed:
    """The capture function: SECURITY DEFINER, so it writes the outbox with drledger's rights, not the
    inserting role's; the application needs no privilege on schema drledger, and cannot write the
    outbox itself. Its search_path is pinned, so no object of the caller's can stand in for one it
    uses. Capture is suppressed only for a session whose login role may write replay's audit log
    (the recoverer, see the README's least-privilege roles): an application setting the flag is
    captured all the same.

    An UPDATE's old and new rows are paired by key: a pair is an `update` (both images); a new key
    without an old one is an `insert` and an old key without a new one a `delete` (an update that
    changes the key is a delete and an insert in the same transaction), deletes first. The operations
    not in `ops` are ignored (their trigger may stay from an earlier init: dropping it needs the
    table's owner)."""
    new_key = key_expression(key_columns, "n")
    old_key = key_expression(key_columns, "o")
    captured = sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(op.upper()) for op in ops))
    body = sql.SQL(
        "BEGIN\n"
        "  IF current_setting({suppress}, true) = 'on'\n"
        "     AND has_table_privilege(session_user, 'drledger.replay_log', 'INSERT') THEN\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        "  IF TG_OP NOT IN {captured} THEN\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, type, payload, fingerprint)\n"
        "    SELECT e.id, {table_literal}, e.key, 'insert', e.payload, {fingerprint}\n"
        "    FROM (SELECT gen_random_uuid() AS id, {new_key} AS key, to_jsonb(n.*) AS payload FROM drledger_new_rows n) e;\n"
        "  ELSIF TG_OP = 'DELETE' THEN\n"
        "    INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, type, payload, fingerprint)\n"
        "    SELECT e.id, {table_literal}, e.key, e.op, e.payload, uuid_send(e.id) || sha256(convert_to({change}, 'UTF8'))\n"
        "    FROM (SELECT gen_random_uuid() AS id, {old_key} AS key, 'delete'::text AS op, to_jsonb(o.*) AS payload,\n"
        "          NULL::jsonb AS before_image FROM drledger_old_rows o) e;\n"
        "  ELSE\n"
        "    INSERT INTO drledger.outbox (id, aggregatetype, aggregateid, type, payload, before_image, fingerprint)\n"
        "    SELECT e.id, {table_literal}, e.key, e.op, e.payload, e.before_image,\n"
        "           uuid_send(e.id) || sha256(convert_to({change}, 'UTF8'))\n"
        "    FROM (SELECT gen_random_uuid() AS id, coalesce(a.key, b.key) AS key,\n"
        "                 CASE WHEN a.key IS NULL THEN 'delete' WHEN b.key IS NULL THEN 'insert' ELSE 'update' END AS op,\n"
        "                 coalesce(a.image, b.image) AS payload,\n"
        "                 CASE WHEN a.key IS NOT NULL AND b.key IS NOT NULL THEN b.image END AS before_image\n"
        "          FROM (SELECT {new_key} AS key, to_jsonb(n.*) AS image FROM drledger_new_rows n) a\n"
        "          FULL JOIN (SELECT {old_key} AS key, to_jsonb(o.*) AS image FROM drledger_old_rows o) b\n"
        "          ON a.key = b.key\n"
        "          ORDER BY CASE WHEN a.key IS NULL THEN 0 WHEN b.key IS NULL THEN 2 ELSE 1 END) e;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(
        suppress=sql.Literal(SUPPRESS_SETTING),
        captured=captured,
        # Written out, not wrapped in a SQL function: convert_to is only stable, so such a function
        # would not be inlined and each row would pay for a function executor (a fifth of insert TPS).
        fingerprint=sql.SQL("uuid_send(e.id) || sha256(convert_to(e.payload::text, 'UTF8'))"),
        change=sql.SQL(_CHANGE_TEXT),
        table_literal=sql.Literal(table.qualified),
        new_key=new_key,
        old_key=old_key,
    )
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {body}"
    ).format(function=trigger_function(table), body=sql.Literal(body.as_string(None)))


_TRIGGERS = {
    "insert": ("drledger_capture", "AFTER INSERT", "REFERENCING NEW TABLE AS drledger_new_rows"),
    "update": (
        "drledger_capture_update",
        "AFTER UPDATE",
        "REFERENCING OLD TABLE AS drledger_old_rows NEW TABLE AS drledger_new_rows",
    ),
    "delete": ("drledger_capture_delete", "AFTER DELETE", "REFERENCING OLD TABLE AS drledger_old_rows"),
}


# TRUNCATE fires no row trigger and leaves no transition table: nothing of it could reach the ledger,
# and the DR database would keep (or replay would bring back) rows the primary no longer has. So init
# refuses it on every captured table and partition with a statement-level BEFORE TRUNCATE trigger;
# this covers `TRUNCATE a, b` and a `TRUNCATE … CASCADE` that reaches a captured table, since each
# truncated table's BEFORE TRUNCATE triggers fire. Only the table's owner (or a superuser, with
# session_replication_role) can take the refusal away; `init --check` names a missing or disabled one.
TRUNCATE_TRIGGER = "drledger_capture_truncate"
REFUSE_TRUNCATE = sql.Identifier(SCHEMA, "refuse_truncate")
# Not SECURITY DEFINER: it only raises, so it runs with the truncating role's rights and hands
# drledger's to no one; its search_path is pinned all the same. The sentence and the hint are the
# trigger's arguments, written by init for each table (a partition's names its captured table).
_REFUSE_TRUNCATE_FUNCTION = sql.SQL(
    "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
    "SET search_path = pg_catalog, pg_temp AS $$\n"
    "BEGIN\n"
    "  RAISE EXCEPTION USING ERRCODE = 'prohibited_sql_statement_attempted', MESSAGE = TG_ARGV[0], HINT = TG_ARGV[1];\n"
    "END $$"
).format(function=REFUSE_TRUNCATE)


def truncate_refusal(on: TableName, captured: TableName, ops: Sequence[str]) -> tuple[str, str]:
    """What a TRUNCATE of `on` (the captured table or one of its partitions) is refused with: the
    sentence, whole in itself, and the hint on stopping capture."""
    what = captured.qualified if on == captured else f"{on.qualified} (a partition of {captured.qualified})"
    instead = "use DELETE, which is captured" if "delete" in ops else "use DELETE"
    return (
        f"drledger captures {what}: TRUNCATE would leave no trace in the DR ledger; {instead}, "
        "or stop capturing the table first",
        f"To stop capturing {captured.qualified}, its owner drops the drledger_capture triggers on it "
        "and on its partitions.",
    )


def _truncate_trigger_ddl(on: TableName, captured: TableName, ops: Sequence[str]) -> sql.Composed:
    message, hint = truncate_refusal(on, captured, ops)
    return sql.SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION {function}({message}, {hint})"
    ).format(
        name=sql.Identifier(TRUNCATE_TRIGGER),
        table=ident(on),
        function=REFUSE_TRUNCATE,
        message=sql.Literal(message),
        hint=sql.Literal(hint),
    )


def _capture_trigger_ddl(on: TableName, captured: TableName, op: str = "insert") -> sql.Composed:
    # CREATE OR REPLACE needs only the TRIGGER privilege on the table; DROP would need its ownership.
    name, when, referencing = _TRIGGERS[op]
    return sql.SQL(
        "CREATE OR REPLACE TRIGGER {name} {when} ON {table} {referencing} "
        "FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    ).format(
        name=sql.Identifier(name),
        when=sql.SQL(when),
        referencing=sql.SQL(referencing),
        table=ident(on),
        function=trigger_function(captured),
    )


def captured_ops(conn: psycopg.Connection[Any], table: TableName) -> tuple[str, ...]:
    """The operations init last chose for a captured table, as its capture function records them."""
    row = conn.execute(
        "SELECT obj_description(%s::regprocedure, 'pg_proc')",
        (f"{trigger_function(table).as_string(conn)}()",),
    ).fetchone()
    text = row[0] if row and row[0] else ""
    if not text.startswith(_OPS_COMMENT):
        return DEFAULT_OPS
    return tuple(op for op in text[len(_OPS_COMMENT) :].split(",") if op in CAPTURABLE_OPS)


def partitions(conn: psycopg.Connection[Any], oid: int) -> list[TableName]:
    """Every partition below a partitioned table, at any depth."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_partition_tree(%s::oid::regclass) t "
        "JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.relid <> %s::oid::regclass ORDER BY t.level, c.relname",
        (oid, oid),
    ).fetchall()
    return [TableName(r[0], r[1]) for r in rows]


# The columns whose value to_jsonb would turn into JSON through a cast someone defined: to_jsonb uses
# a user type's cast to json or jsonb, and in the capture trigger that function would run with
# drledger's rights (SECURITY DEFINER). Types are followed through domains, arrays and composites. A key
# column's cast to text runs there too (the key is printed with ::text).
_JSON_CASTS = """
WITH RECURSIVE t(col, typ) AS (
    SELECT a.attname, a.atttypid FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT t.col, x.next FROM t JOIN pg_type ty ON ty.oid = t.typ CROSS JOIN LATERAL (
        SELECT ty.typbasetype AS next WHERE ty.typtype = 'd'
        UNION ALL SELECT ty.typelem WHERE ty.typcategory = 'A' AND ty.typelem <> 0
        UNION ALL SELECT c.atttypid FROM pg_attribute c
            WHERE ty.typtype = 'c' AND c.attrelid = ty.typrelid AND c.attnum > 0 AND NOT c.attisdropped
    ) x
)
SELECT DISTINCT t.col, format_type(t.typ, NULL), format_type(k.casttarget, NULL), k.castfunc::regprocedure::text
FROM t JOIN pg_cast k ON k.castsource = t.typ AND (
    k.casttarget IN ('json'::regtype, 'jsonb'::regtype)
    -- The key is printed with ::text (key_expression): a key column's cast to text runs there too.
    OR (k.casttarget = 'text'::regtype AND t.col IN (
        SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = %s AND i.indisprimary))
)
WHERE t.typ >= 16384 AND k.castmethod = 'f' ORDER BY 1
"""


def json_cast_columns(conn: psycopg.Connection[Any], oid: int) -> list[tuple[str, str, str, str]]:
    """(column, its type, json, jsonb or text, the cast's function) for each column captured through a
    cast someone defined: to json or jsonb (to_jsonb), or, for a key column, to text (the key's print)."""
    return [tuple(r) for r in conn.execute(_JSON_CASTS, (oid, oid)).fetchall()]


def _json_cast_sentence(table: TableName, column: str, type_name: str, target: str, function: str) -> str:
    return (
        f"The column {column} of {table.qualified} has type {type_name}, whose cast to {target} ({function}) "
        "capture would run with drledger's rights; drop the cast or keep the column out of a captured table"
    )


def _refuse_json_casts(conn: psycopg.Connection[Any], table: TableName, oid: int) -> None:
    for column, type_name, target, function in json_cast_columns(conn, oid)[:1]:
        raise DrledgerError(_json_cast_sentence(table, column, type_name, target, function) + ".")


def _refuse_partition(conn: psycopg.Connection[Any], table: TableName, oid: int) -> None:
    root = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_partition_root(%s::oid::regclass) r(oid) "
        "JOIN pg_class c ON c.oid = r.oid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE r.oid <> %s::oid::regclass",
        (oid, oid),
    ).fetchone()
    if root is not None:
        parent = TableName(root[0], root[1]).qualified
        raise DrledgerError(
            f"{table.qualified} is a partition of {parent}; capture {parent}, which captures every partition."
        )


def install(dsn: str, tables: list[str], ops: Sequence[str] = DEFAULT_OPS) -> list[str]:
    """Create the outbox, the publication and a capture trigger per table; safe to run again.

    A partitioned table is captured with every partition it has; a partition alone is refused (its
    rows are the partitioned table's). Returns the canonical names of the tables now captured.
    """
    names = [TableName.parse(t) for t in tables]
    for name in names:
        if name.schema == SCHEMA:
            raise DrledgerError(
                f"{name.qualified} is one of drledger's own tables; capture the application's tables only."
            )
    with connect(dsn) as conn:
        for table in names:
            _refuse_partition(conn, table, table_oid(conn, table))
            _refuse_json_casts(conn, table, table_oid(conn, table))
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone():
            conn.execute(_SCHEMA_DDL)
        for statement in (_BASE_DDL + ";" + REPLAY_LOG_DDL).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(_REPLAY_GUARD_FUNCTION)
        conn.execute(_REPLAY_GUARD_TRIGGER)
        conn.execute(_REFUSE_TRUNCATE_FUNCTION)
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(REFUSE_TRUNCATE))
        for table in names:
            conn.execute(_capture_function_ddl(table, primary_key_columns(conn, table), ops))
            conn.execute(
                sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(
                    trigger_function(table), sql.Literal(_OPS_COMMENT + ",".join(ops))
                )
            )
            # Only drledger's triggers call it; nobody needs to run it by hand.
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(trigger_function(table)))
            # A partitioned table's statement trigger fires for changes made through it; a change made
            # straight in a partition fires that partition's, so every partition gets one, naming the root.
            for target in [table, *partitions(conn, table_oid(conn, table))]:
                for op in ops:
                    conn.execute(_capture_trigger_ddl(target, table, op))
                conn.execute(_truncate_trigger_ddl(target, table, ops))
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (PUBLICATION,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE drledger.outbox, drledger.heartbeat").format(
                    sql.Identifier(PUBLICATION)
                )
            )
    return [t.qualified for t in names]


# The outbox columns the relay reads from every change, and how `init` declares each (for the fix).
RELAY_COLUMNS = {
    "id": "uuid NOT NULL DEFAULT gen_random_uuid()",
    "aggregatetype": "text NOT NULL",
    "aggregateid": "text NOT NULL",
    "type": "text NOT NULL DEFAULT 'insert'",
    "payload": "jsonb NOT NULL",
    "txid": "bigint NOT NULL DEFAULT txid_current()",
    "created_at": "timestamptz NOT NULL DEFAULT now()",
}


def check(dsn: str, tables: list[str]) -> list[Finding]:
    """What the relay needs from this database, each item said plainly with how to fix it."""
    with connect(dsn) as conn:
        # The connecting role's rights are not checked here: init --check checks them from the one list
        # (privileges.needs) for the relay's duty, or for the duties --as names.
        findings = [_wal_level_finding(conn)]
        has_outbox = outbox_exists(conn)
        findings.append(
            Finding(
                has_outbox,
                "the drledger.outbox table " + ("exists" if has_outbox else "is missing"),
                None if has_outbox else "run drledger init",
            )
        )
        if has_outbox:
            findings.extend(_outbox_findings(conn))
        has_pub = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (PUBLICATION,)).fetchone()
        findings.append(
            Finding(
                has_pub is not None,
                f"the publication {PUBLICATION} " + ("exists" if has_pub else "is missing"),
                None if has_pub else "run drledger init",
            )
        )
        if has_pub:
            findings.extend(_publication_findings(conn))
        for table in map(TableName.parse, tables):
            findings += [_trigger_finding(conn, table), _truncate_finding(conn, table)]
        for text in tables:
            findings.extend(_json_cast_findings(conn, TableName.parse(text)))
    return findings


def _json_cast_findings(conn: psycopg.Connection[Any], table: TableName) -> list[Finding]:
    """A cast to JSON created after init is still one capture would run as drledger: said, with the fix."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        return []
    return [
        Finding(
            False,
            _json_cast_sentence(table, column, type_name, target, function),
            f"DROP CAST ({type_name} AS {target})",
        )
        for column, type_name, target, function in json_cast_columns(conn, int(row[0]))
    ]


def _wal_level_finding(conn: psycopg.Connection[Any]) -> Finding:
    wal_level = conn.execute("SHOW wal_level").fetchone()[0]  # type: ignore[index]
    return Finding(
        wal_level == "logical",
        f"wal_level is '{wal_level}'" + ("" if wal_level == "logical" else ", not 'logical'"),
        None
        if wal_level == "logical"
        else "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL "
        "(on Aurora/RDS: set rds.logical_replication = 1 in the cluster parameter group)",
    )


def _trigger_finding(conn: psycopg.Connection[Any], table: TableName) -> Finding:
    trigger = conn.execute(
        "SELECT t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND t.tgname = 'drledger_capture'",
        (table.schema, table.name),
    ).fetchone()
    ok = trigger is not None and trigger[0] != "D"
    state = "is missing" if trigger is None else ("is disabled" if trigger[0] == "D" else "is installed")
    ops = captured_ops(conn, table) if ok else ()
    # A transaction is whole in the ledger only if every change it makes is captured.
    what = (
        f" (capturing {', '.join(ops)}{'' if len(ops) == 3 else '; its other changes are not in the ledger'})"
    )
    return Finding(
        ok,
        f"the capture trigger on {table.qualified} {state}" + (what if ok else ""),
        None if ok else f"run drledger init --table {table.qualified}",
    )


def _trigger_state(conn: psycopg.Connection[Any], table: TableName, trigger: str) -> str | None:
    """A trigger's tgenabled on the table ('D' when disabled), or None when it has none by that name."""
    row = conn.execute(
        "SELECT t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
        (table.schema, table.name, trigger),
    ).fetchone()
    return None if row is None else str(row[0])


def _truncate_finding(conn: psycopg.Connection[Any], table: TableName) -> Finding:
    """Whether a TRUNCATE of the table is refused, as init makes it (see TRUNCATE_TRIGGER)."""
    state = _trigger_state(conn, table, TRUNCATE_TRIGGER)
    ok = state is not None and state != "D"
    return Finding(
        ok,
        f"TRUNCATE of {table.qualified} "
        + (
            "is refused (it would leave no trace in the ledger)"
            if ok
            else f"is not refused: its {TRUNCATE_TRIGGER} trigger "
            + ("is missing" if state is None else "is disabled")
            + ", and a TRUNCATE would leave no trace in the ledger"
        ),
        None if ok else f"run drledger init --table {table.qualified}",
    )


def _outbox_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    """The outbox's columns, its replay guard, and the heartbeat table."""
    present = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'drledger.outbox'::regclass "
            "AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    }
    missing = [c for c in RELAY_COLUMNS if c not in present]
    findings = [
        Finding(
            not missing,
            "the drledger.outbox table has every column the relay reads"
            if not missing
            else f"the drledger.outbox table lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            None
            if not missing
            else "restore "
            + ("it" if len(missing) == 1 else "them")
            + ": "
            + "; ".join(f"ALTER TABLE drledger.outbox ADD COLUMN {c} {RELAY_COLUMNS[c]}" for c in missing),
        )
    ]
    guarded = conn.execute(
        "SELECT 1 FROM pg_trigger WHERE tgrelid = 'drledger.outbox'::regclass "
        "AND tgname = 'drledger_replay_guard' AND tgenabled <> 'D'"
    ).fetchone()
    findings.append(
        Finding(
            guarded is not None,
            "the replay guard on drledger.outbox "
            + ("is installed" if guarded else "is missing or disabled"),
            None if guarded else "run drledger init (a current one)",
        )
    )
    has_heartbeat = conn.execute("SELECT to_regclass('drledger.heartbeat') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    if not has_heartbeat:
        findings.append(Finding(False, "the drledger.heartbeat table is missing", "run drledger init"))
    return findings


def _publication_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    """Whether the publication carries the outbox's inserts and the heartbeat."""
    inserts = conn.execute(
        "SELECT pubinsert FROM pg_publication WHERE pubname = %s", (PUBLICATION,)
    ).fetchone()
    covered = {
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
            (PUBLICATION, SCHEMA),
        ).fetchall()
    }
    lacking = [t for t in ("outbox", "heartbeat") if t not in covered]
    findings = [
        Finding(
            not lacking,
            f"the publication {PUBLICATION} covers drledger.outbox and drledger.heartbeat"
            if not lacking
            else f"the publication {PUBLICATION} does not cover "
            + " or ".join(f"drledger.{t}" for t in lacking),
            None
            if not lacking
            else f"run ALTER PUBLICATION {PUBLICATION} ADD TABLE "
            + ", ".join(f"drledger.{t}" for t in lacking),
        )
    ]
    if inserts is not None and not inserts[0]:
        findings.append(
            Finding(
                False,
                f"the publication {PUBLICATION} does not publish inserts",
                f"run ALTER PUBLICATION {PUBLICATION} SET (publish = 'insert, update, delete, truncate')",
            )
        )
    return findings


def require_logical_wal(dsn: str) -> None:
    """Everything the relay needs from the database, or the first thing missing as one sentence."""
    for finding in check(dsn, []):
        if not finding.ok:
            if finding.what == "the drledger.outbox table is missing":
                raise DrledgerError("This database has no drledger.outbox; run drledger init first.")
            raise DrledgerError(f"The relay cannot run here: {finding.what}; {finding.fix}.")


def partition_findings(dsn: str, tables: list[str]) -> list[Finding]:
    """A partition created after init has no capture trigger of its own: inserts made straight into it
    would not be captured, and a TRUNCATE of it would not be refused. Each captured partitioned table's
    partitions, checked."""
    findings: list[Finding] = []
    with connect(dsn) as conn:
        for text in tables:
            table = TableName.parse(text)
            oid = table_oid(conn, table)
            kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (oid,)).fetchone()
            if kind is None or kind[0] != "p":
                continue
            for part in partitions(conn, oid):
                captured = _trigger_state(conn, part, "drledger_capture") is not None
                refused = _trigger_state(conn, part, TRUNCATE_TRIGGER) is not None
                lacks = " and no ".join(
                    w for w, has in (("capture trigger", captured), ("TRUNCATE refusal", refused)) if not has
                )
                findings.append(
                    Finding(
                        captured and refused,
                        f"the partition {part.qualified} of {table.qualified} "
                        + ("is captured" if not lacks else f"has no {lacks}"),
                        None if not lacks else f"run drledger init --table '{table.qualified}' again",
                    )
                )
    return findings


def prune(dsn: str, older_than_ms: int, *, apply: bool) -> int:
    """Delete (or, without `apply`, count) outbox rows created before the cutoff."""
    with connect(dsn) as conn:
        if apply:
            deleted = conn.execute(
                "DELETE FROM drledger.outbox WHERE created_at < to_timestamp(%s / 1000.0)", (older_than_ms,)
            ).rowcount
            return int(deleted)
        row = conn.execute(
            "SELECT count(*) FROM drledger.outbox WHERE created_at < to_timestamp(%s / 1000.0)",
            (older_than_ms,),
        ).fetchone()
        return int(row[0])  # type: ignore[index]


def has_before_image(conn: psycopg.Connection[Any]) -> bool:
    """Whether this outbox has the before_image column (init adds it; an outbox from before lacks it,
    and holds inserts only)."""
    row = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'drledger.outbox'::regclass "
        "AND attname = 'before_image' AND NOT attisdropped"
    ).fetchone()
    return row is not None


def _change_text(has_before: bool) -> str:
    """The text of a row's change, as events.change_text builds it (an insert: its payload alone)."""
    if not has_before:
        return "payload::text"
    return (
        "CASE type WHEN 'insert' THEN payload::text "
        "ELSE type || E'\\n' || coalesce(before_image::text, '') || E'\\n' || payload::text END"
    )


#: Bits of an outbox row's position given to its command number within the transaction (a million
#: commands; beyond, a transaction's last changes share one position and keep the order they are read in).
_COMMAND_BITS = 20


def _row_columns(has_before: bool) -> str:
    """An OutboxRow's columns; the digest is the database's hash of the same text the relay hashed."""
    return (
        "id::text, aggregatetype, aggregateid, type, payload::text, txid, "
        f"(extract(epoch FROM created_at) * 1000)::bigint, "
        f"encode(sha256(convert_to({_change_text(has_before)}, 'UTF8')), 'hex'), "
        + ("before_image::text" if has_before else "NULL::text")
        # The command within its transaction that wrote the row orders a transaction's changes; the
        # transaction id before it orders transactions whose rows carry the same millisecond (replay
        # sorts by commit time, then this), as no commit position is kept in the table.
        + f", txid * {1 << _COMMAND_BITS} + least(cmin::text::bigint + 1, {(1 << _COMMAND_BITS) - 1})"
    )


def _fingerprint_expression(has_before: bool) -> str:
    return f"uuid_send(id) || sha256(convert_to({_change_text(has_before)}, 'UTF8'))"


def read_window(dsn: str, since_ms: int | None, until_ms: int | None) -> Iterator[OutboxRow]:
    """The outbox rows created in the window, streamed with a server-side cursor."""
    low = since_ms if since_ms is not None else 0
    high = until_ms if until_ms is not None else LATEST_MS
    with connect(dsn) as conn, conn.cursor(name="drledger_window") as cursor:
        cursor.itersize = 20_000
        cursor.execute(
            f"SELECT {_row_columns(has_before_image(conn))} FROM drledger.outbox "
            "WHERE created_at BETWEEN to_timestamp(%s / 1000.0) AND to_timestamp(%s / 1000.0)",
            (low, high),
        )
        for row in cursor:
            yield OutboxRow(*row)


# One value per part of the window: a bytea holds up to 1 GB, 48 bytes a row, and parts are sized
# far below that. No GROUP BY and nothing computed per row: the server only reads and appends.
_DIGEST_QUERY = (
    "SELECT string_agg({fingerprint}, ''::bytea) FROM drledger.outbox "
    "WHERE created_at >= to_timestamp(%s / 1000.0) AND created_at < to_timestamp(%s / 1000.0)"
)
# A row without a stored fingerprint (an outbox from before it, a row written by hand) is
# fingerprinted by the query instead.
# At least two parts, read at once by their own server processes; more for a large window.
_MIN_PARTS = 2
_ROWS_PER_PART = 2_000_000


def read_fingerprints(
    dsn: str, since_ms: int | None, until_ms: int | None, *, stored_only: bool = False
) -> list[bytes]:
    """The fingerprint of every outbox row created in [since_ms, until_ms]: no payload crosses the wire.
    With `stored_only`, rows without a stored fingerprint are left out (an outbox from before the column
    existed is read as before)."""
    low = since_ms if since_ms is not None else 0
    end = (until_ms if until_ms is not None else LATEST_MS) + 1  # half-open from here on
    with connect(dsn) as conn:
        require_outbox(conn)
        stored = conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = 'drledger.outbox'::regclass "
            "AND attname = 'fingerprint' AND NOT attisdropped"
        ).fetchone()
        computed = _fingerprint_expression(has_before_image(conn))
        span = conn.execute(
            "SELECT (extract(epoch FROM min(created_at)) * 1000)::bigint, "
            "(extract(epoch FROM max(created_at)) * 1000)::bigint, count(*) FROM drledger.outbox "
            "WHERE created_at >= to_timestamp(%s / 1000.0) AND created_at < to_timestamp(%s / 1000.0)",
            (low, end),
        ).fetchone()
    if span is None or not span[2]:
        return []
    chosen = ("fingerprint" if stored_only else f"coalesce(fingerprint, {computed})") if stored else computed
    query = _DIGEST_QUERY.format(fingerprint=chosen)  # string_agg skips the NULLs of rows without one
    # Equal spans of time between the first and last row (a millisecond of slack for rounding).
    first, last = max(low, span[0] - 1), min(end, span[1] + 2)
    parts = max(_MIN_PARTS, -(-span[2] // _ROWS_PER_PART))
    step = max(1, -(-(last - first) // parts))
    bounds = [(start, min(start + step, last)) for start in range(first, last, step)]
    with ThreadPoolExecutor(max_workers=_MIN_PARTS, thread_name_prefix="dr-read") as pool:
        read = list(pool.map(lambda b: _read_part(dsn, query, *b), bounds))
    return read[0] if len(read) == 1 else [p for part in read for p in part]


def _read_part(dsn: str, query: str, start_ms: int, end_ms: int) -> list[bytes]:
    width = FINGERPRINT_BYTES
    with connect(dsn) as conn:
        row = conn.execute(query, (start_ms, end_ms), binary=True).fetchone()
    prints = row[0] if row is not None and row[0] is not None else b""
    return [prints[i : i + width] for i in range(0, len(prints), width)]


def created_at(dsn: str, ids: set[bytes]) -> dict[bytes, int]:
    """event id (16 bytes) → its outbox row's created_at (ms), for the ids the outbox holds."""
    if not ids:
        return {}
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT uuid_send(id), (extract(epoch FROM created_at) * 1000)::bigint FROM drledger.outbox "
            "WHERE id = ANY(%s::uuid[])",
            ([uuid.UUID(bytes=i) for i in ids],),
            binary=True,
        ).fetchall()
    return {bytes(r[0]): int(r[1]) for r in rows}


def outbox_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('drledger.outbox') IS NOT NULL").fetchone()
    return bool(row and row[0])


def require_outbox(conn: psycopg.Connection[Any]) -> None:
    if not outbox_exists(conn):
        raise DrledgerError("The DR database has no drledger.outbox; is this the right database?")


def captured_tables(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Canonical name → OID of every table drledger captures here: those with its capture trigger.

    This is what `init` installed, so it is what replay and fence may write to; drledger's own
    tables are never among them.
    """
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.oid FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgname = 'drledger_capture' AND NOT t.tgisinternal AND c.relkind IN ('r', 'p') "
        "AND NOT c.relispartition AND n.nspname <> %s",
        (SCHEMA,),
    ).fetchall()
    return {TableName(schema, name).qualified: int(oid) for schema, name, oid in rows}


def ensure_replay_log(conn: psycopg.Connection[Any]) -> None:
    """Replay's audit table, made by init; an outbox installed before it existed gains it here."""
    exists = conn.execute("SELECT to_regclass('drledger.replay_log') IS NOT NULL").fetchone()
    if exists and exists[0]:
        return
    try:
        for statement in REPLAY_LOG_DDL.split(";"):
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        raise DrledgerError(
            "This database has no drledger.replay_log and this role may not create it; run drledger init on "
            "the primary (or as the schema's owner here) first."
        ) from None


def outbox_rows(dsn: str, event_ids: list[str]) -> dict[str, OutboxRow]:
    """event id → the whole outbox row, payload included."""
    if not event_ids:
        return {}
    with connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT {_row_columns(has_before_image(conn))} FROM drledger.outbox WHERE id = ANY(%s::uuid[])",
            (event_ids,),
        ).fetchall()
    return {r[0]: OutboxRow(*r) for r in rows}


def writable_by_others(dsn: str) -> str | None:
    """Why this server could be taking writes (see SourceDatabase.writable_by_others), or None.

    transaction_read_only is on in a standby and where default_transaction_read_only is set for the
    server, the database or this role: what every application session would get too."""
    with connect(dsn, autocommit=True) as conn:
        read_only, others = conn.execute(
            "SELECT current_setting('transaction_read_only') = 'on', "
            "(SELECT count(*) FROM pg_stat_activity "
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
        ).fetchone() or (False, 0)
    if read_only:
        return None
    return (
        f"it is a primary accepting writes, with {others} other session{'' if others == 1 else 's'} connected"
    )
