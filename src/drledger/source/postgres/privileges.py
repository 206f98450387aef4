"""Least privilege on PostgreSQL: what each of drledger's roles needs, the GRANTs that give it, and
checks of both. The four duties (see drledger.roles):

- **installer** runs `init`: it creates schema `drledger` (and so owns the outbox and the capture
  functions, which run with its rights) and the publication, and puts a trigger on each captured
  table. The first run needs CREATE on the database; every run needs TRIGGER on the captured tables.
- **relay** runs `relay`: a replication connection, and reads the outbox and the heartbeat table,
  which it also writes.
- **reader** runs `reconcile` (and `watch`): reads the outbox.
- **recoverer** runs `replay` and `fence`: reads and writes the captured tables (replay applies lost
  inserts, updates and deletes) and the outbox, writes replay's audit log, and moves the tables'
  sequences. Writing the audit log is also what lets its
  sessions suppress capture; no other role can.

The application keeps its own role and privileges; it needs nothing on schema `drledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from drledger.names import TableName, quote_ident
from drledger.roles import MissingRight
from drledger.source.base import Finding
from drledger.source.postgres.outbox import SCHEMA, ident, table_oid


@dataclass(frozen=True)
class Need:
    """One privilege a duty needs: how to test it for a role, and the statement that grants it."""

    duty: str
    what: str
    test: sql.Composable  # a boolean expression over the placeholder %(role)s
    grant: sql.Composable  # the statement, with {role} already filled in
    after_init: bool = False  # on drledger's own objects: granted by the installer once init has run
    #: The duty's commands that use it (None: every one, see drledger.roles.DUTY_COMMANDS).
    commands: frozenset[str] | None = None

    def used_by(self, command: str) -> bool:
        return self.commands is None or command in self.commands


def _table_needs(conn: psycopg.Connection[Any], tables: list[TableName]) -> list[tuple[TableName, list[str]]]:
    """Each captured table with the sequences its columns own (serial and identity)."""
    found = []
    for table in tables:
        sequences = conn.execute(
            "SELECT n.nspname, s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_namespace n ON n.oid = s.relnamespace "
            "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            "AND d.refobjid = %s AND d.deptype IN ('a', 'i') ORDER BY 1, 2",
            (table_oid(conn, table),),
        ).fetchall()
        # Schema-qualified whatever the search_path of the session that runs the GRANT.
        found.append((table, [TableName(r[0], r[1]).qualified for r in sequences]))
    return found


def _need(
    duty: str, role: str, what: str, test: str, grant: str, after_init: bool = False, **parts: Any
) -> Need:
    """`test` and `grant` are SQL with {placeholders} filled from `parts`; `grant` also gets {role}."""
    values = {k: v if isinstance(v, sql.Composable) else sql.Literal(v) for k, v in parts.items()}
    return Need(
        duty,
        what,
        sql.SQL(test).format(**values),
        sql.SQL(grant).format(role=sql.Identifier(role), **values),
        after_init,
    )


def needs(conn: psycopg.Connection[Any], roles: dict[str, str], tables: list[TableName]) -> list[Need]:
    """What each named role needs in this database for these captured tables."""
    database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    db: dict[str, Any] = {"db": database, "db_ident": sql.Identifier(database)}
    with_sequences = _table_needs(conn, tables)
    out: list[Need] = []
    for duty, role in roles.items():
        out.append(
            _need(
                duty,
                role,
                f"CONNECT on database {database}",
                "has_database_privilege(%(role)s, {db}, 'CONNECT')",
                "GRANT CONNECT ON DATABASE {db_ident} TO {role}",
                **db,
            )
        )
        if duty == "relay":  # first: without it, nothing else the relay holds matters
            out.append(
                _need(
                    duty,
                    role,
                    "the REPLICATION attribute (on RDS/Aurora: membership in rds_replication)",
                    "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = %(role)s) OR EXISTS "
                    "(SELECT 1 FROM pg_roles r WHERE r.rolname = 'rds_replication' AND pg_has_role(%(role)s, r.oid, 'MEMBER'))",
                    "ALTER ROLE {role} WITH REPLICATION",
                )
            )
        if duty == "installer":
            out.append(
                _need(
                    duty,
                    role,
                    f"CREATE on database {database} (the first init creates schema drledger and the publication)",
                    "has_database_privilege(%(role)s, {db}, 'CREATE') OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {schema})",
                    "GRANT CREATE ON DATABASE {db_ident} TO {role}",
                    schema=SCHEMA,
                    **db,
                )
            )
            for table, _sequences in with_sequences:
                out.append(_schema_usage(duty, role, table))
                out.append(
                    _need(
                        duty,
                        role,
                        f"TRIGGER on {table.qualified}",
                        "has_table_privilege(%(role)s, {oid}::oid, 'TRIGGER')",
                        "GRANT TRIGGER ON {table} TO {role}",
                        oid=table_oid(conn, table),
                        table=ident(table),
                    )
                )
            continue
        out.append(
            _need(
                duty,
                role,
                f"USAGE on schema {SCHEMA}",
                "has_schema_privilege(%(role)s, {schema}, 'USAGE')",
                "GRANT USAGE ON SCHEMA {schema_ident} TO {role}",
                True,
                schema=SCHEMA,
                schema_ident=sql.Identifier(SCHEMA),
            )
        )
        own = {
            "relay": [
                ("outbox", "SELECT"),
                ("heartbeat", "SELECT"),
                ("heartbeat", "INSERT"),
                ("heartbeat", "UPDATE"),
            ],
            "reader": [("outbox", "SELECT")],
            "recoverer": [("outbox", "SELECT"), ("outbox", "INSERT"), ("replay_log", "INSERT")],
        }[duty]
        for name, privilege in own:
            out.append(
                _need(
                    duty,
                    role,
                    f"{privilege} on {SCHEMA}.{name}",
                    f"has_table_privilege(%(role)s, {{table_text}}, '{privilege}')",
                    f"GRANT {privilege} ON {{table}} TO {{role}}",
                    True,
                    table_text=f"{SCHEMA}.{name}",
                    table=sql.Identifier(SCHEMA, name),
                )
            )
        if duty == "recoverer":
            for table, sequences in with_sequences:
                out.append(_schema_usage(duty, role, table))
                # UPDATE and DELETE: replay applies a lost update or delete onto the row it changed.
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    out.append(
                        _need(
                            duty,
                            role,
                            f"{privilege} on {table.qualified}",
                            f"has_table_privilege(%(role)s, {{oid}}::oid, '{privilege}')",
                            f"GRANT {privilege} ON {{table}} TO {{role}}",
                            oid=table_oid(conn, table),
                            table=ident(table),
                        )
                    )
                for sequence in sequences:
                    out.append(
                        _need(
                            duty,
                            role,
                            f"SELECT and UPDATE on sequence {sequence}",
                            "has_sequence_privilege(%(role)s, {seq}, 'SELECT') AND has_sequence_privilege(%(role)s, {seq}, 'UPDATE')",
                            # regclass text is already quoted as SQL needs
                            "GRANT SELECT, UPDATE ON SEQUENCE {seq_sql} TO {role}",
                            seq=sequence,
                            seq_sql=sql.SQL(sequence),
                        )
                    )
    return _unique(out)


def missing(
    conn: psycopg.Connection[Any], role: str, duty: str, command: str, tables: list[TableName]
) -> list[MissingRight]:
    """The first right of `duty`'s list that `command` uses and `role` lacks here, if any (those on
    drledger's own objects only once init has made them: before, the command's own "run drledger init"
    is the news). The first only: the list is in order (USAGE on a schema before a table in it), and a
    role without the schema's USAGE may not even name the tables in it."""
    has_schema = bool(conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone())
    for item in needs(conn, {duty: role}, tables):
        if not item.used_by(command) or (item.after_init and not has_schema):
            continue
        row = conn.execute(
            sql.SQL("SELECT coalesce(({}), false)").format(item.test), {"role": role}
        ).fetchone()
        if not (row and row[0]):
            return [MissingRight(role, duty, item.what, item.grant.as_string(conn))]
    return []


def _schema_usage(duty: str, role: str, table: TableName) -> Need:
    return _need(
        duty,
        role,
        f"USAGE on schema {quote_ident(table.schema)}",
        "has_schema_privilege(%(role)s, {schema}, 'USAGE')",
        "GRANT USAGE ON SCHEMA {schema_ident} TO {role}",
        schema=table.schema,
        schema_ident=sql.Identifier(table.schema),
    )


def _unique(items: list[Need]) -> list[Need]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for item in items:
        if (item.duty, item.what) not in seen:
            seen.add((item.duty, item.what))
            kept.append(item)
    return kept


def grant_script(
    conn: psycopg.Connection[Any], roles: dict[str, str], tables: list[TableName], phase: str | None = None
) -> str:
    """The GRANTs, as SQL: first what a superuser or the tables' owner runs before init, then what the
    installer (the owner of drledger's objects) runs once init has created them."""
    items = needs(conn, roles, tables)
    lines: list[str] = []
    for after_init in (False, True):
        if phase is not None and phase != ("after" if after_init else "before"):
            continue
        if after_init:
            lines += [
                *([""] if lines else []),
                "-- After drledger init: run as the installer, which owns schema drledger.",
            ]
        else:
            lines.append("-- Before drledger init: run as a superuser or the captured tables' owner.")
            lines += [f"CREATE ROLE {sql.Identifier(r).as_string(conn)} LOGIN;" for r in roles.values()]
        for duty in roles:
            chosen = [i for i in items if i.duty == duty and i.after_init == after_init]
            if chosen:
                lines.append(f"-- {duty}")
                lines += [f"{i.grant.as_string(conn)};" for i in chosen]
    return "\n".join(lines) + "\n"


def check_roles(
    conn: psycopg.Connection[Any], roles: dict[str, str], tables: list[TableName]
) -> list[Finding]:
    """For each role, each privilege its duty needs: held or not, and the GRANT that fixes it."""
    findings: list[Finding] = []
    for role in dict.fromkeys(roles.values()):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            findings.append(
                Finding(
                    False,
                    f"the role {role} does not exist",
                    f"CREATE ROLE {sql.Identifier(role).as_string(conn)} LOGIN",
                )
            )
    present = {
        r
        for r in roles.values()
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (r,)).fetchone()
    }
    has_schema = bool(conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone())
    for item in needs(conn, {d: r for d, r in roles.items() if r in present}, tables):
        role = roles[item.duty]
        if item.after_init and not has_schema:
            continue  # nothing to grant on until init has run; the missing outbox is its own finding
        row = conn.execute(
            sql.SQL("SELECT coalesce(({}), false)").format(item.test), {"role": role}
        ).fetchone()
        ok = bool(row and row[0])
        findings.append(
            Finding(
                ok,
                f"{role} ({item.duty}) " + ("has " if ok else "lacks ") + item.what,
                None if ok else item.grant.as_string(conn),
            )
        )
    return findings
