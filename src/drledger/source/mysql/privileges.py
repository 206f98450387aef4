"""Least privilege on MySQL: what each of drledger's roles needs, the GRANTs that give it, and checks.

Accounts are `'name'@'host'`; a role named without a host is `'name'@'%'`. Triggers run with their
definer's rights (the installer's), so the application needs nothing on database `drledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drledger.names import TableName
from drledger.roles import MissingRight
from drledger.source.base import Finding
from drledger.source.mysql.columns import quote
from drledger.source.mysql.connection import error_code
from drledger.source.mysql.outbox import SCHEMA, query


def account(role: str) -> tuple[str, str]:
    name, _, host = role.partition("@")
    return name.strip("'`\""), (host or "%").strip("'`\"")


def _account_sql(role: str) -> str:
    name, host = account(role)
    return f"'{name}'@'{host}'"


@dataclass(frozen=True)
class Need:
    duty: str
    privilege: str  # one privilege word, as information_schema lists it
    level: str  # "global", or "db" (database), or "db.table"
    before_init: bool = True
    #: The duty's commands that use it (None: every one, see drledger.roles.DUTY_COMMANDS).
    commands: frozenset[str] | None = None

    def used_by(self, command: str) -> bool:
        return self.commands is None or command in self.commands

    @property
    def what(self) -> str:
        """The privilege and where it is held, as the GRANT names them."""
        on = "*.*" if self.level == "global" else (self.level if "." in self.level else f"{self.level}.*")
        return f"{self.privilege} on {on}"

    def grant(self, role: str) -> str:
        on = (
            "*.*"
            if self.level == "global"
            else (f"{quote(self.level)}.*" if "." not in self.level else self._table())
        )
        return f"GRANT {self.privilege} ON {on} TO {_account_sql(role)}"

    def _table(self) -> str:
        schema, table = self.level.split(".", 1)
        return f"{quote(schema)}.{quote(table)}"


def needs(roles: dict[str, str], tables: list[TableName]) -> list[tuple[str, Need]]:
    out: list[tuple[str, Need]] = []
    for duty, role in roles.items():
        if duty == "installer":
            out.append((role, Need(duty, "ALL PRIVILEGES", SCHEMA)))
            for table in tables:
                out.append((role, Need(duty, "TRIGGER", f"{table.schema}.{table.name}")))
                out.append((role, Need(duty, "SELECT", f"{table.schema}.{table.name}")))
        elif duty == "relay":
            out.append((role, Need(duty, "REPLICATION SLAVE", "global")))
            out.append((role, Need(duty, "REPLICATION CLIENT", "global")))
            out.append((role, Need(duty, "SELECT", f"{SCHEMA}.outbox", False)))
            for kept in ("heartbeat", "relays"):
                for privilege in ("SELECT", "INSERT", "UPDATE"):
                    out.append((role, Need(duty, privilege, f"{SCHEMA}.{kept}", False)))
        elif duty == "reader":
            out.append((role, Need(duty, "SELECT", f"{SCHEMA}.outbox", False)))
            # watch: whether the relay is reading is a thread of the relay's account, seen with PROCESS.
            watch = frozenset({"watch"})
            out.append((role, Need(duty, "SELECT", f"{SCHEMA}.relays", False, watch)))
            out.append((role, Need(duty, "PROCESS", "global", commands=watch)))
        elif duty == "recoverer":
            for name, privilege in (
                ("outbox", "SELECT"),
                ("outbox", "INSERT"),
                ("replay_log", "INSERT"),
                # SELECT too: replay's DELETE … WHERE connection_id = CONNECTION_ID() reads the column.
                ("replay_session", "SELECT"),
                ("replay_session", "INSERT"),
                ("replay_session", "DELETE"),
            ):
                out.append((role, Need(duty, privilege, f"{SCHEMA}.{name}", False)))
            for table in tables:
                # UPDATE and DELETE: replay applies a lost update or delete onto the row it changed;
                # ALTER: fencing moves AUTO_INCREMENT with ALTER TABLE.
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "ALTER"):
                    out.append((role, Need(duty, privilege, f"{table.schema}.{table.name}")))
    return out


def grant_script(roles: dict[str, str], tables: list[TableName], phase: str | None = None) -> str:
    items = needs(roles, tables)
    lines: list[str] = []
    for before in (True, False):
        if phase is not None and phase != ("before" if before else "after"):
            continue
        if before:
            lines.append("-- Before drledger init: run as an administrator.")
            lines += [f"CREATE USER IF NOT EXISTS {_account_sql(r)};" for r in roles.values()]
        else:
            lines += [
                *([""] if lines else []),
                "-- After drledger init: run as an administrator (or the installer).",
            ]
        for duty in roles:
            chosen = [(r, n) for r, n in items if n.duty == duty and n.before_init == before]
            if chosen:
                lines.append(f"-- {duty}")
                lines += [f"{n.grant(r)};" for r, n in chosen]
    return "\n".join(lines) + "\n"


# MariaDB 10.5 renamed some global privileges; either name counts.
_ALIASES = {"REPLICATION CLIENT": {"REPLICATION CLIENT", "BINLOG MONITOR"}}


def held(conn: Any, role: str, need: Need) -> bool:
    name, host = account(role)
    grantee = f"'{name}'@'{host}'"
    privilege = need.privilege.upper()
    global_rows = query(
        conn, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s", (grantee,)
    )
    if privilege == "ALL PRIVILEGES":
        schema_rows = query(
            conn,
            "SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s AND TABLE_SCHEMA = %s",
            (grantee, need.level),
        )
        return bool(schema_rows[0][0]) or len(global_rows) > 20
    if any(r[0] in _ALIASES.get(privilege, {privilege}) for r in global_rows):
        return True
    if need.level == "global":
        return False
    schema, _, table = need.level.partition(".")
    if query(
        conn,
        "SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s AND TABLE_SCHEMA = %s "
        "AND PRIVILEGE_TYPE = %s",
        (grantee, schema, privilege),
    ):
        return True
    return bool(
        table
        and query(
            conn,
            "SELECT 1 FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = %s AND TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND PRIVILEGE_TYPE = %s",
            (grantee, schema, table, privilege),
        )
    )


def check_roles(conn: Any, roles: dict[str, str], tables: list[TableName]) -> list[Finding]:
    findings: list[Finding] = []
    for role, need in needs(roles, tables):
        ok = held(conn, role, need)
        findings.append(
            Finding(
                ok,
                f"{role} ({need.duty}) " + ("has " if ok else "lacks ") + need.what,
                None if ok else need.grant(role),
            )
        )
    return findings


def missing(conn: Any, role: str, duty: str, command: str, tables: list[TableName]) -> list[MissingRight]:
    """The rights of `duty`'s list that `command` uses and the account `role` lacks, read from
    information_schema (which shows an account its own privileges)."""
    return [
        MissingRight(role, duty, need.what, need.grant(account_role))
        for account_role, need in needs({duty: role}, tables)
        if need.used_by(command) and not held(conn, account_role, need)
    ]


# -- TRUNCATE ------------------------------------------------------------------------------------------
# MySQL fires no trigger for TRUNCATE TABLE, so capture cannot see it nor refuse it: the rows go and
# nothing reaches the ledger. What can be known is who may run it: TRUNCATE TABLE needs DROP on the
# table. `init --check` names each account holding DROP on a captured table, read from the grant
# tables themselves (information_schema shows an account only its own grants), or says it could not tell.

_GRANT_TABLES = "mysql.user, mysql.db and mysql.tables_priv"
# Access denied to a database, a table, a column: this account may not read the grant tables.
_DENIED = (1044, 1142, 1143)


def _grantee(name: str, host: str) -> str:
    """The account as GRANT and REVOKE name it; a MariaDB role has no host."""
    return f"'{name}'@'{host}'" if host else f"'{name}'"


def _named(name: str, host: str) -> str:
    # A role's accounts hold what it holds.
    return _grantee(name, host) if host else f"the role '{name}'"


def _is_own(name: str, host: str, own: list[str]) -> bool:
    return any(name == n and host in (h, "") for n, h in map(account, own))


def truncate_findings(conn: Any, tables: list[TableName], own: list[str]) -> list[Finding]:
    """Who may TRUNCATE a captured table (hold DROP on it), drledger's own roles (`own`) aside: each
    account whose grant on a captured table or its database allows it is a ✗ with its REVOKE; those
    holding DROP on every database (administrators: root, Aurora's master user) are named in one line
    that does not fail the check; and an account that may not read the grant tables could not tell, ✗."""
    if not tables:
        return []
    listed = ", ".join(t.qualified for t in tables)
    try:
        everywhere = [
            (str(n), str(h))
            for n, h in query(
                conn, "SELECT User, Host FROM mysql.user WHERE Drop_priv = 'Y' ORDER BY User, Host"
            )
        ]
        # account → the tables it may truncate, and the grants that let it (a database's name may be a
        # pattern: `shop\_%`.*).
        holders: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for table in tables:
            grants = [
                (str(n), str(h), f"{quote(str(db))}.*")
                for n, h, db in query(
                    conn,
                    "SELECT User, Host, Db FROM mysql.db WHERE Drop_priv = 'Y' AND %s LIKE Db ORDER BY User, Host",
                    (table.schema,),
                )
            ] + [
                (str(n), str(h), f"{quote(table.schema)}.{quote(table.name)}")
                for n, h in query(
                    conn,
                    "SELECT User, Host FROM mysql.tables_priv WHERE Db = %s AND Table_name = %s "
                    "AND FIND_IN_SET('Drop', Table_priv) ORDER BY User, Host",
                    (table.schema, table.name),
                )
            ]
            for name, host, on in grants:
                if (name, host) in everywhere or _is_own(name, host, own):
                    continue
                held_on, revokes = holders.setdefault((name, host), ([], []))
                if table.qualified not in held_on:
                    held_on.append(table.qualified)
                if on not in revokes:
                    revokes.append(on)
    except Exception as exc:
        if error_code(exc) not in _DENIED:
            raise
        return [
            Finding(
                False,
                f"could not tell which accounts may TRUNCATE TABLE {listed}, which would leave no trace in the "
                f"ledger (MySQL fires no trigger for it; it needs DROP): this account may not read {_GRANT_TABLES}",
                f"run drledger init --check as an account that may read {_GRANT_TABLES} (an administrator)",
            )
        ]
    findings = [
        Finding(
            False,
            f"{_named(*who)} holds DROP on {', '.join(held_on)}: "
            + ("its" if who[1] else "its accounts'")
            + " TRUNCATE TABLE would leave no trace in the ledger (MySQL fires no trigger for it)",
            "; ".join(f"REVOKE DROP ON {on} FROM {_grantee(*who)}" for on in revokes)
            + " (or see that it never truncates a captured table, and empties one with DELETE)",
        )
        for who, (held_on, revokes) in holders.items()
    ]
    if not holders:
        findings.append(
            Finding(
                True,
                f"no account but drledger's may TRUNCATE TABLE {listed} (it needs DROP) by a grant on the "
                "table or its database; a TRUNCATE would leave no trace in the ledger",
            )
        )
    administrators = [_named(n, h) for n, h in everywhere if not _is_own(n, h, own)]
    if administrators:
        findings.append(
            Finding(
                True,
                f"{', '.join(administrators)} hold{'s' if len(administrators) == 1 else ''} DROP on every "
                f"database (an administrator's right): a TRUNCATE TABLE of {listed} by "
                f"{'it' if len(administrators) == 1 else 'any of them'} would leave no trace in the ledger",
                "empty a captured table with DELETE, never TRUNCATE TABLE",
            )
        )
    return findings
