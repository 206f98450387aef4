"""PostgreSQL (and Aurora PostgreSQL) behind the source-database seam.

The outbox, its capture triggers and checks live in `drledger.outbox.postgres`, replay's and fence's
SQL in `recovery`, the least-privilege grants in `privileges`; this class is the seam's face.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from drledger.errors import DrledgerError
from drledger.events import DEFAULT_OPS, OutboxRow
from drledger.masking import mask_dsn
from drledger.names import TableName
from drledger.roles import MissingRight
from drledger.source.base import Finding, OutboxSlice, RecoverySession, SlotHealth, SourceDatabase
from drledger.source.postgres import outbox
from drledger.source.postgres.connection import connect
from drledger.streaming import Cause, RelaySettings, SlotInfo, SourceIdentity


class PostgresSource(SourceDatabase):
    def __init__(self, dsn: str) -> None:
        from drledger.source.postgres.readiness import KeptConnection

        self.dsn = dsn
        self.display = mask_dsn(dsn)
        # The repeated small reads (the watcher's every few seconds) share one connection.
        self._kept = KeptConnection(dsn)

    def close(self) -> None:
        self._kept.close()

    def install(self, tables: Sequence[str], ops: Sequence[str] = DEFAULT_OPS) -> list[str]:
        self.require_rights("installer", "init", tables)
        return outbox.install(self.dsn, list(tables), ops)

    def check(self, tables: Sequence[str]) -> list[Finding]:
        return [*outbox.check(self.dsn, list(tables)), *outbox.partition_findings(self.dsn, list(tables))]

    def prune(self, older_than_ms: int, *, apply: bool) -> int:
        return outbox.prune(self.dsn, older_than_ms, apply=apply)

    def _tables(self, conn: object, tables: Sequence[str]) -> list[TableName]:
        if tables:
            return [TableName.parse(t) for t in tables]
        return [TableName.parse(t) for t in sorted(outbox.captured_tables(conn))]  # type: ignore[arg-type]

    def grant_script(self, roles: Mapping[str, str], tables: Sequence[str], phase: str | None = None) -> str:
        from drledger.source.postgres.privileges import grant_script

        with connect(self.dsn) as conn:
            names = self._tables(conn, tables)
            if not names:
                raise DrledgerError(
                    "Name the tables to capture with --table; this database captures none yet."
                )
            return grant_script(conn, dict(roles), names, phase)

    def check_roles(self, roles: Mapping[str, str], tables: Sequence[str]) -> list[Finding]:
        from drledger.source.postgres.privileges import check_roles

        with connect(self.dsn) as conn:
            if not roles:
                roles = {"relay": str(conn.execute("SELECT current_user").fetchone()[0])}  # type: ignore[index]
            return check_roles(conn, dict(roles), self._tables(conn, tables))

    def missing_rights(self, duty: str, command: str, tables: Sequence[str] = ()) -> list[MissingRight]:
        from drledger.source.postgres.privileges import missing

        with connect(self.dsn) as conn:
            role = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
            return missing(conn, role, duty, command, [TableName.parse(t) for t in tables])

    def latest_commit_ms(self) -> int | None:
        from drledger.source.postgres.readiness import latest_commit_ms

        return latest_commit_ms(self._kept)

    def read_window(self, since_ms: int | None, until_ms: int | None) -> Iterator[OutboxRow]:
        return outbox.read_window(self.dsn, since_ms, until_ms)

    def read_fingerprints(
        self, since_ms: int | None, until_ms: int | None, *, stored_only: bool = False
    ) -> list[bytes]:
        return outbox.read_fingerprints(self.dsn, since_ms, until_ms, stored_only=stored_only)

    def created_at(self, ids: set[bytes]) -> dict[bytes, int]:
        return outbox.created_at(self.dsn, ids)

    def ids_present(self, ids: set[bytes], since_ms: int, until_ms: int) -> set[bytes]:
        from drledger.source.postgres.readiness import ids_present

        return ids_present(self._kept, ids, since_ms, until_ms)

    def outbox_rows(self, event_ids: Sequence[str]) -> dict[str, OutboxRow]:
        return outbox.outbox_rows(self.dsn, list(event_ids))

    def writable_by_others(self) -> str | None:
        return outbox.writable_by_others(self.dsn)

    def outbox_slice(self, since_ms: int, until_ms: int, limit: int) -> OutboxSlice:
        from drledger.source.postgres.readiness import outbox_slice

        return outbox_slice(self._kept, since_ms, until_ms, limit)

    def count_events(self, since_ms: int, until_ms: int, cap: int) -> int:
        from drledger.source.postgres.readiness import count_events

        return count_events(self._kept, since_ms, until_ms, cap)

    def slot_health(self, slot: str) -> SlotHealth | None:
        from drledger.source.postgres.readiness import slot_health

        return slot_health(self._kept, slot)

    def recovery_session(self) -> RecoverySession:
        from drledger.source.postgres.session import PostgresRecoverySession

        return PostgresRecoverySession(connect(self.dsn))

    def prepare_relay(self, slot: str) -> None:
        outbox.require_logical_wal(self.dsn)

    def identify(self, slot: str) -> SourceIdentity:
        from drledger.source.postgres.replication import identify

        return identify(self.dsn, slot)

    def slot_info(self, slot: str) -> SlotInfo | None:
        from drledger.source.postgres.replication import slot_info

        return slot_info(self.dsn, slot)

    def other_relay_slots(self, slot: str) -> list[str]:
        with connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() "
                "AND plugin = 'pgoutput' AND slot_type = 'logical' AND slot_name <> %s ORDER BY 1",
                (slot,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def ensure_slot(self, slot: str) -> bool:
        from drledger.source.postgres.replication import ensure_slot

        return ensure_slot(self.dsn, slot)

    def connector_password(self) -> str | None:
        from drledger.source.postgres.replication import source_password

        return source_password(self.dsn)

    def connector_properties(self, settings: RelaySettings, *, password: str | None = None) -> dict[str, str]:
        from drledger.source.postgres.debezium import debezium_properties

        return debezium_properties(self.dsn, settings, password=password)

    def classify_failure(
        self, chain: Sequence[Cause], *, slot: str, state_dir: str, backfill_hint: str
    ) -> DrledgerError:
        from drledger.source.postgres.faults import classify

        return classify(chain, slot=slot, state_dir=state_dir, backfill_hint=backfill_hint)
