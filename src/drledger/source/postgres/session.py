"""Replay's and fence's SQL on PostgreSQL: one connection, its transactions steered by replay.

Rows go in set-based: each table's images as one JSON array through `jsonb_populate_recordset`
(identity columns overridden, generated ones left to the database), `INSERT … ON CONFLICT DO
NOTHING`, keys computed by the same expression the capture trigger uses. Images and ids are handed
over joined into one JSON document: they were proven to be single JSON values, and one parameter
costs a fraction of an array parameter's escaping.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from drledger.errors import DrledgerError, RowsRejected, SourceUnavailable
from drledger.events import LedgerEvent
from drledger.names import TableName
from drledger.roles import MissingRight
from drledger.source.base import (
    ChangeOutcome,
    CurrentRow,
    ForeignKeyInfo,
    RecoverySession,
    SequenceInfo,
    TableShape,
    UniqueClash,
    UniqueKeyInfo,
)
from drledger.source.postgres.outbox import (
    SUPPRESS_SETTING,
    captured_tables,
    ensure_replay_log,
    ident,
    key_expression,
    primary_key_columns,
    require_outbox,
)

REPLAY_LOCK = 0x64726C6564676572  # "drledger"


def first_line(exc: BaseException) -> str:
    """The database's own reason, first line, without psycopg's decoration."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


def _json_array(documents: Iterable[str]) -> str:
    return "[" + ",".join(documents) + "]"


class PostgresRecoverySession(RecoverySession):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Rows refused become RowsRejected; a connection lost, SourceUnavailable."""
        try:
            yield
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise RowsRejected(first_line(exc)) from None
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"The database went away: {first_line(exc)}.") from None

    def require_outbox(self) -> None:
        require_outbox(self.conn)

    def captured_tables(self) -> dict[str, Any]:
        return dict(captured_tables(self.conn))

    def table_shape(self, name: TableName, ref: Any) -> TableShape:
        # Whether a column holds a time with a zone, through a domain and an array: such a value is
        # printed in the session's zone, so two sessions print one instant differently.
        rows = self.conn.execute(
            "SELECT a.attname, a.attgenerated = '', "
            "COALESCE(NULLIF(b.typelem, 0), b.oid) IN ('timestamptz'::regtype, 'timetz'::regtype) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (ref,),
        ).fetchall()
        parents = self.conn.execute(
            "SELECT DISTINCT confrelid FROM pg_constraint "
            "WHERE conrelid = %s AND contype = 'f' AND confrelid <> conrelid",
            (ref,),
        ).fetchall()
        return TableShape(
            name,
            ref,
            tuple(primary_key_columns(self.conn, name)),
            frozenset(r[0] for r in rows),
            frozenset(r[0] for r in rows if r[1]),
            tuple(r[0] for r in rows),
            frozenset(int(r[0]) for r in parents),
            frozenset(r[0] for r in rows if r[2]),
        )

    def row_keys(self, shape: TableShape, images: Sequence[str]) -> list[str | None]:
        statement = sql.SQL(
            "SELECT {key} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(doc, ord) "
            "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.doc) AS n ORDER BY e.ord"
        ).format(key=key_expression(list(shape.key_columns)), table=ident(shape.name))
        with self._translated(), self.conn.transaction():
            return [r[0] for r in self.conn.execute(statement, (_json_array(images),)).fetchall()]

    def missing_rights(self, duty: str, command: str, tables: Sequence[TableName] = ()) -> list[MissingRight]:
        from drledger.source.postgres.privileges import missing

        role = str(self.conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        return missing(self.conn, role, duty, command, list(tables))

    def ensure_replay_log(self) -> None:
        ensure_replay_log(self.conn)

    def begin_chunk(self) -> None:
        with self._translated():
            self.conn.execute("SELECT set_config(%s, 'on', true)", (SUPPRESS_SETTING,))
            # An ORM's foreign keys are often DEFERRABLE INITIALLY DEFERRED (Django's all are): checked at
            # COMMIT, a violation would roll back every source transaction in the chunk. Immediate, it
            # surfaces inside the source transaction that causes it, which is then held back alone.
            self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # One replay at a time per database: two would race between the outbox check and the COPY.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (REPLAY_LOCK,))

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        with self._translated(), self.conn.transaction():
            yield

    def commit(self) -> None:
        with self._translated():
            self.conn.commit()

    def rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()

    def check_deferred(self) -> None:
        # Retroactive: what was left to the end of the transaction (a trigger that deferred the
        # constraints again, say) is checked now.
        with self._translated():
            self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")

    def outbox_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        rows = self.conn.execute(
            "SELECT o.id::text, coalesce(o.fingerprint, "
            "uuid_send(o.id) || sha256(convert_to(o.payload::text, 'UTF8'))) FROM drledger.outbox o "
            "WHERE o.id IN (SELECT value::uuid FROM jsonb_array_elements_text(%s::jsonb))",
            (orjson.dumps(list(event_ids)).decode(),),
        ).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def written_at(self, table: str, keys: Sequence[str]) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT aggregateid, (extract(epoch FROM max(created_at)) * 1000)::bigint FROM drledger.outbox "
            "WHERE aggregatetype = %s AND aggregateid = ANY(%s) GROUP BY aggregateid",
            (table, list(keys)),
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def insert_if_absent(
        self, shape: TableShape, columns: Sequence[str], events: Sequence[LedgerEvent]
    ) -> dict[str, bool]:
        # What was stored comes back from the INSERT itself (after BEFORE triggers, defaults and
        # generated columns) and is compared there, as JSON, with the image under its key: equal is
        # proven at once; any other row is left to current_rows' column-by-column reading (a time with
        # a zone printed in another zone, an image without some column). The images go in twice: as an
        # array, inserted in the order given, and as an object by key, for the comparison (cheaper than
        # joining the INSERT's rows back to the array's).
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        key = key_expression(list(shape.key_columns))
        statement = sql.SQL(
            "INSERT INTO {table} AS n ({columns}) OVERRIDING SYSTEM VALUE "
            "SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %(images)s::jsonb) "
            "ON CONFLICT DO NOTHING RETURNING {key}, coalesce(to_jsonb(n.*) = (%(by_key)s::jsonb -> {key}), false)"
        ).format(table=ident(shape.name), columns=names, key=key)
        images = _json_array(e.row_json for e in events)
        by_key = "{" + ",".join(f"{orjson.dumps(e.key).decode()}:{e.row_json}" for e in events) + "}"
        rows = self.conn.execute(statement, {"images": images, "by_key": by_key}, prepare=False).fetchall()
        return {r[0]: bool(r[1]) for r in rows}

    def apply_changes(
        self, shape: TableShape, op: str, events: Sequence[LedgerEvent]
    ) -> dict[str, ChangeOutcome]:
        # Rows compare as JSON both printed here, the image read through the table's type first
        # (to_jsonb of jsonb_populate_record): the same instant in another zone, 1.0 and 1.00 in a
        # numeric(10,2), compare equal, as the same values do. The key's row is read back in the same
        # statement where the change did not apply: the statement's snapshot is the state before it.
        table = ident(shape.name)
        key_match = sql.SQL(" AND ").join(
            sql.SQL("n.{c} = i.{c}").format(c=sql.Identifier(c)) for c in shape.key_columns
        )
        absent = sql.SQL("n.{} IS NULL").format(sql.Identifier(shape.key_columns[0]))
        # Ids are UUIDs and images single JSON values: screening proved both.
        items = _json_array(
            f'{{"id": "{e.event_id}", "row": {e.row_json}, "before": {e.before_json or "null"}}}'
            for e in events
        )
        if op == "update":
            settable = shape.settable([orjson.loads(e.row_json) for e in events])
            targets = sql.SQL(", ").join(sql.Identifier(c) for c in settable)
            values = sql.SQL(", ").join(sql.SQL("i.{}").format(sql.Identifier(c)) for c in settable)
            statement = sql.SQL(
                "WITH r AS (SELECT e.item ->> 'id' AS id, e.item -> 'row' AS image, e.item -> 'before' AS prior "
                "FROM jsonb_array_elements(%(items)s::jsonb) AS e(item)), "
                "changed AS (UPDATE {table} AS n SET ({targets}) = ROW({values}) FROM r "
                "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.image) AS i "
                "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.prior) AS b "
                "WHERE {key_match} AND to_jsonb(n.*) = to_jsonb(b.*) "
                "RETURNING r.id, to_jsonb(n.*) = to_jsonb(i.*) AS same) "
                "SELECT r.id, c.id IS NOT NULL, coalesce(c.same, to_jsonb(n.*) = to_jsonb(i.*)), "
                "CASE WHEN c.id IS NULL AND NOT {absent} THEN to_jsonb(n.*)::text END, {absent} "
                "FROM r CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.image) AS i "
                "LEFT JOIN changed AS c ON c.id = r.id LEFT JOIN {table} AS n ON c.id IS NULL AND {key_match}"
            ).format(table=table, targets=targets, values=values, key_match=key_match, absent=absent)
        else:
            statement = sql.SQL(
                "WITH r AS (SELECT e.item ->> 'id' AS id, e.item -> 'row' AS image "
                "FROM jsonb_array_elements(%(items)s::jsonb) AS e(item)), "
                "gone AS (DELETE FROM {table} AS n USING r "
                "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.image) AS i "
                "WHERE {key_match} AND to_jsonb(n.*) = to_jsonb(i.*) RETURNING r.id) "
                "SELECT r.id, g.id IS NOT NULL, g.id IS NOT NULL OR {absent}, "
                "CASE WHEN g.id IS NULL AND NOT {absent} THEN to_jsonb(n.*)::text END, {absent} "
                "FROM r CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.image) AS i "
                "LEFT JOIN gone AS g ON g.id = r.id LEFT JOIN {table} AS n ON g.id IS NULL AND {key_match}"
            ).format(table=table, key_match=key_match, absent=absent)
        found: dict[str, ChangeOutcome] = {}
        with self._translated():
            rows = self.conn.execute(statement, {"items": items}, prepare=False).fetchall()
        for event_id, applied, holds_change, current, _ in rows:
            if applied:
                found[event_id] = ChangeOutcome("applied", read_back=bool(holds_change))
            elif holds_change:
                found[event_id] = ChangeOutcome("present")
            else:
                found[event_id] = ChangeOutcome("conflict", current)
        return found

    def current_rows(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, CurrentRow]:
        join = sql.SQL(" AND ").join(
            sql.SQL("n.{c} = k.{c}").format(c=sql.Identifier(c)) for c in shape.key_columns
        )
        # The same content means: every column the image names holds the image's value, compared as
        # JSON (numerics by value, never rounded through the column's type). A time with a zone is
        # printed in the printing session's zone, so there the image is read through the column's
        # type and printed here too: the same instant, the same text. A row equal to its image as a
        # whole (the usual case) is settled by one comparison, and its text is not fetched.
        statement = sql.SQL(
            "SELECT e.item ->> 'id', CASE WHEN s.stored = e.item -> 'row' THEN NULL ELSE s.stored::text END, "
            "CASE WHEN s.stored = e.item -> 'row' THEN NULL ELSE "
            "ARRAY(SELECT j.key FROM jsonb_each(e.item -> 'row') AS j "
            "WHERE (s.stored -> j.key) IS DISTINCT FROM j.value "
            "AND NOT (j.key = ANY(%s::text[]) AND (s.stored -> j.key) = (to_jsonb(k.*) -> j.key)) "
            "ORDER BY j.key) END "
            "FROM jsonb_array_elements(%s::jsonb) AS e(item) "
            "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.item -> 'row') AS k "
            "JOIN {table} AS n ON {join} CROSS JOIN LATERAL (SELECT to_jsonb(n.*) AS stored) AS s"
        ).format(table=ident(shape.name), join=join)
        items = _json_array(f'{{"id": "{e.event_id}", "row": {e.row_json}}}' for e in events)
        zoned = list(shape.zoned)
        return {
            r[0]: CurrentRow(r[1] or "", tuple(r[2] or ()))
            for r in self.conn.execute(statement, (zoned, items), prepare=False).fetchall()
        }

    def foreign_keys(self, shape: TableShape) -> list[ForeignKeyInfo]:
        rows = self.conn.execute(
            "SELECT c.conname, c.confrelid, "
            "array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), "
            "array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) "
            "FROM pg_constraint c WHERE c.conrelid = %s AND c.contype = 'f' ORDER BY c.conname",
            (shape.ref,),
        ).fetchall()
        return [
            ForeignKeyInfo(str(n), tuple(cols), int(parent), tuple(pcols)) for n, parent, cols, pcols in rows
        ]

    def unique_keys(self, shape: TableShape) -> list[UniqueKeyInfo]:
        rows = self.conn.execute(
            "SELECT c.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisunique AND NOT i.indisprimary AND i.indexprs IS NULL "
            "AND i.indpred IS NULL GROUP BY c.relname ORDER BY c.relname",
            (shape.ref,),
        ).fetchall()
        return [UniqueKeyInfo(str(name), tuple(columns)) for name, columns in rows]

    def unique_clashes(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, UniqueClash]:
        items = _json_array(f'{{"id": "{e.event_id}", "row": {e.row_json}}}' for e in events)
        found: dict[str, UniqueClash] = {}
        for name, columns in ((u.name, u.columns) for u in self.unique_keys(shape)):
            join = sql.SQL(" AND ").join(
                sql.SQL("n.{c} = k.{c}").format(c=sql.Identifier(c)) for c in columns
            )
            statement = sql.SQL(
                "SELECT e.item ->> 'id', to_jsonb(n.*)::text, {key} FROM jsonb_array_elements(%s::jsonb) AS e(item) "
                "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.item -> 'row') AS k "
                "JOIN {table} AS n ON {join}"
            ).format(key=key_expression(list(shape.key_columns)), table=ident(shape.name), join=join)
            for event_id, row, key in self.conn.execute(statement, (items,), prepare=False).fetchall():
                found.setdefault(event_id, UniqueClash(str(name), row, key))
        return found

    def restore_outbox(self, events: Sequence[LedgerEvent]) -> None:
        # COPY is the cheapest way in; no row can clash, since the ids were checked under the lock. An
        # update's before image goes back too (an outbox from before updates were captured has no
        # column for it, and never needs one for inserts).
        with_before = any(e.before_json is not None for e in events)
        columns = "id, aggregatetype, aggregateid, type, payload, txid, created_at, fingerprint" + (
            ", before_image" if with_before else ""
        )
        with (
            self.conn.cursor() as cursor,
            cursor.copy(f"COPY drledger.outbox ({columns}) FROM STDIN") as copy,
        ):
            for e in events:
                # The fingerprint of the change replayed: screening proved row_sha256 is its hash.
                row: tuple[Any, ...] = (
                    e.event_id,
                    e.table,
                    e.key,
                    e.op,
                    e.row_json,
                    e.txid,
                    _timestamp(e.commit_ts_ms),
                    e.fingerprint,
                )
                copy.write_row((*row, e.before_json) if with_before else row)

    def log_outcomes(self, outcomes: Sequence[tuple[str, str, str]]) -> None:
        with (
            self.conn.cursor() as cursor,
            cursor.copy("COPY drledger.replay_log (event_id, outcome, detail) FROM STDIN") as copy,
        ):
            for row in outcomes:
                copy.write_row(row)

    def sequences(self, ref: Any) -> list[SequenceInfo]:
        """The serial and identity sequences of a table, found through the catalog by OID."""
        rows = self.conn.execute(
            "SELECT a.attname, s.oid, n.nspname, s.relname, q.seqincrement, q.seqmin, q.seqmax "
            "FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_namespace n ON n.oid = s.relnamespace JOIN pg_sequence q ON q.seqrelid = s.oid "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            "AND d.refobjid = %s AND d.deptype IN ('a', 'i') AND NOT a.attisdropped ORDER BY a.attnum",
            (ref,),
        ).fetchall()
        return [
            SequenceInfo(r[0], int(r[1]), TableName(r[2], r[3]).qualified, int(r[4]), int(r[5]), int(r[6]))
            for r in rows
        ]

    def sequence_state(self, shape_name: TableName, sequence: SequenceInfo) -> tuple[int | None, int | None]:
        before, stored = self.conn.execute(
            sql.SQL(
                "SELECT pg_sequence_last_value(%s::oid::regclass), (SELECT max({col})::numeric FROM {table})"
            ).format(col=sql.Identifier(sequence.column), table=ident(shape_name)),
            (sequence.ref,),
        ).fetchone() or (None, None)
        return before, int(stored) if stored is not None else None

    def move_sequence(self, sequence: SequenceInfo, value: int) -> None:
        try:
            self.conn.execute("SELECT setval(%s::oid::regclass, %s, true)", (sequence.ref, value))
        except psycopg.errors.InsufficientPrivilege:
            raise DrledgerError(
                f"This role may not move the sequence {sequence.name}; grant it UPDATE on that sequence "
                "(see the README's least-privilege roles) and run the command again."
            ) from None

    def close(self) -> None:
        self.conn.close()


def _timestamp(epoch_ms: int) -> str:
    """COPY text for a timestamptz; the second's part is cached, since a chunk's events share few seconds."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}+00"


@functools.lru_cache(maxsize=4096)
def _utc_second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))
