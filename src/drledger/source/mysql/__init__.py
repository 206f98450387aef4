"""MySQL (Aurora MySQL 3; MariaDB with `version=8.0.2` as its stand-in in tests) behind the seam.

`outbox` holds the database `drledger`, the per-row capture triggers and the window reads;
`recovery` replay's and fence's SQL; `relay` Debezium's MySQL connector, the server's identity and
its failures; `privileges` the least-privilege grants; `columns` how each column type travels in a
row image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from drledger.errors import DrledgerError
from drledger.events import DEFAULT_OPS, OutboxRow
from drledger.masking import mask_dsn
from drledger.names import TableName
from drledger.roles import MissingRight
from drledger.source.base import Finding, OutboxSlice, RecoverySession, SlotHealth, SourceDatabase
from drledger.source.mysql import outbox
from drledger.source.mysql.connection import connect, parse_dsn
from drledger.streaming import Cause, RelaySettings, SlotInfo, SourceIdentity


class MySQLSource(SourceDatabase):
    #: A MySQL relay cannot create a slot before its backfill as PostgreSQL's does: it starts with a
    #: snapshot of the outbox instead, so no row committed during the backfill falls in between.
    snapshot_after_backfill = "initial"

    def __init__(self, dsn: str) -> None:
        parse_dsn(dsn)  # a bad DSN is one sentence before anything connects
        self.dsn = dsn
        self.display = mask_dsn(dsn)

    def _names(self, tables: Sequence[str]) -> list[TableName]:
        default = parse_dsn(self.dsn).database
        if tables:
            return [outbox.parse_table(t, default) for t in tables]
        conn = connect(self.dsn)
        try:
            return [TableName(*ref) for ref in outbox.captured_tables(conn).values()]
        finally:
            conn.close()

    def install(self, tables: Sequence[str], ops: Sequence[str] = DEFAULT_OPS) -> list[str]:
        self.require_rights("installer", "init", tables)
        return outbox.install(self.dsn, list(tables), ops)

    def check(self, tables: Sequence[str]) -> list[Finding]:
        return outbox.check(self.dsn, list(tables))

    def prune(self, older_than_ms: int, *, apply: bool) -> int:
        return outbox.prune(self.dsn, older_than_ms, apply=apply)

    def grant_script(self, roles: Mapping[str, str], tables: Sequence[str], phase: str | None = None) -> str:
        from drledger.source.mysql.privileges import grant_script

        names = self._names(tables)
        if not names:
            raise DrledgerError("Name the tables to capture with --table; this database captures none yet.")
        return grant_script(dict(roles), names, phase)

    def check_roles(self, roles: Mapping[str, str], tables: Sequence[str]) -> list[Finding]:
        """Each role's privileges for its duty, then who else may TRUNCATE a captured table: MySQL fires
        no trigger for it, so it cannot be refused as on PostgreSQL (drledger's own roles, the named and
        the default ones, aside)."""
        from drledger.roles import DEFAULT_ROLES
        from drledger.source.mysql.privileges import check_roles, truncate_findings

        conn = connect(self.dsn)
        try:
            own = [*DEFAULT_ROLES.values(), *roles.values()]
            if not roles:
                user = str(outbox.query(conn, "SELECT CURRENT_USER()")[0][0])
                roles = {"relay": user}
            names = self._names(tables)
            return [*check_roles(conn, dict(roles), names), *truncate_findings(conn, names, own)]
        finally:
            conn.close()

    def missing_rights(self, duty: str, command: str, tables: Sequence[str] = ()) -> list[MissingRight]:
        from drledger.source.mysql.privileges import missing

        default = parse_dsn(self.dsn).database
        conn = connect(self.dsn)
        try:
            role = str(outbox.query(conn, "SELECT CURRENT_USER()")[0][0])
            return missing(conn, role, duty, command, [outbox.parse_table(t, default) for t in tables])
        finally:
            conn.close()

    def latest_commit_ms(self) -> int | None:
        return outbox.latest_commit_ms(self.dsn)

    def read_window(self, since_ms: int | None, until_ms: int | None) -> Iterator[OutboxRow]:
        return outbox.read_window(self.dsn, since_ms, until_ms)

    def writable_by_others(self) -> str | None:
        return outbox.writable_by_others(self.dsn)

    def read_fingerprints(
        self, since_ms: int | None, until_ms: int | None, *, stored_only: bool = False
    ) -> list[bytes]:
        return outbox.read_fingerprints(self.dsn, since_ms, until_ms, stored_only=stored_only)

    def created_at(self, ids: set[bytes]) -> dict[bytes, int]:
        return outbox.created_at(self.dsn, ids)

    def ids_present(self, ids: set[bytes], since_ms: int, until_ms: int) -> set[bytes]:
        return outbox.ids_present(self.dsn, ids, since_ms, until_ms)

    def outbox_rows(self, event_ids: Sequence[str]) -> dict[str, OutboxRow]:
        return outbox.outbox_rows(self.dsn, list(event_ids))

    def outbox_slice(self, since_ms: int, until_ms: int, limit: int) -> OutboxSlice:
        events, end = outbox.outbox_slice(self.dsn, since_ms, until_ms, limit)
        return OutboxSlice(events, end)

    def count_events(self, since_ms: int, until_ms: int, cap: int) -> int:
        return outbox.count_events(self.dsn, since_ms, until_ms, cap)

    def slot_health(self, slot: str) -> SlotHealth | None:
        from drledger.source.mysql.relay import relay_health

        return relay_health(self.dsn, slot)

    def recovery_session(self) -> RecoverySession:
        from drledger.source.mysql.session import MySQLRecoverySession

        return MySQLRecoverySession(connect(self.dsn, autocommit=False))

    def prepare_relay(self, slot: str) -> None:
        from drledger.source.mysql.relay import register

        outbox.require_relay_prerequisites(self.dsn)
        register(self.dsn, slot)

    def identify(self, slot: str) -> SourceIdentity:
        from drledger.source.mysql.relay import identify

        return identify(self.dsn, slot)

    def slot_info(self, slot: str) -> SlotInfo | None:
        from drledger.source.mysql.relay import slot_info

        return slot_info(self.dsn, slot)

    def ensure_slot(self, slot: str) -> bool:
        return False  # the binlog is the stream; see snapshot_after_backfill

    def connector_password(self) -> str | None:
        return parse_dsn(self.dsn).password or None

    def connector_properties(self, settings: RelaySettings, *, password: str | None = None) -> dict[str, str]:
        from drledger.source.mysql.relay import debezium_properties

        return debezium_properties(self.dsn, settings, password=password)

    def classify_failure(
        self, chain: Sequence[Cause], *, slot: str, state_dir: str, backfill_hint: str
    ) -> DrledgerError:
        from drledger.source.mysql.relay import classify

        return classify(chain, slot=slot, state_dir=state_dir, backfill_hint=backfill_hint)
