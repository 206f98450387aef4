"""Replay's and fence's SQL on MySQL: one connection, its transactions steered by replay.

Images are handed to the server as one JSON array and split by JSON_TABLE; each column is read back
with the cast its type allows (see columns.py), so a value that does not fit raises a warning, and any
warning rejects the rows (the session runs in strict mode, in UTC). MySQL has no INSERT … RETURNING:
insert-if-absent is `INSERT IGNORE` between two reads of which keys exist, and a warning other than a
duplicate key rejects the batch too, since IGNORE would otherwise have stored a truncated value.
Fencing is `ALTER TABLE … AUTO_INCREMENT`, DDL that commits by itself: it runs in a step of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson

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
from drledger.source.mysql.columns import Column, image_expression, key_expression, quote
from drledger.source.mysql.connection import error_code
from drledger.source.mysql.outbox import (
    SCHEMA,
    captured_tables,
    fingerprint_expression,
    has_before_image,
    ident,
    ms_of,
    primary_key_columns,
    query,
    require_outbox,
    table_columns,
)
from drledger.source.mysql.privileges import missing

REPLAY_LOCK = "drledger_replay"
_DUPLICATE_KEY = 1062
_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227}
_INTEGER_MAX = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}


def _json_array(documents: Sequence[str]) -> str:
    return "[" + ",".join(documents) + "]"


_IMAGES = "\x00images\x00"
_ROWS = f"JSON_TABLE({_IMAGES}, '$[*]' COLUMNS (ord FOR ORDINALITY, img JSON PATH '$')) AS jt"


def _over_images(statement: str) -> str:
    """A statement over the images' JSON array, its one parameter; generated names may hold a %."""
    return statement.replace("%", "%%").replace(_IMAGES, "%s")


class MySQLRecoverySession(RecoverySession):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._columns: dict[tuple[str, str], list[Column]] = {}
        self._savepoints = 0
        self._locked = False

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        import pymysql

        try:
            yield
        except pymysql.err.OperationalError as exc:
            if error_code(exc) in _PRIVILEGE_ERRORS:
                raise DrledgerError(
                    f"The database refused: {exc.args[1] if len(exc.args) > 1 else exc}; this role lacks a privilege "
                    "the recoverer needs (drledger init --print-grants lists the recoverer's)."
                ) from None
            if error_code(exc) in (2006, 2013, 2003):
                raise SourceUnavailable(f"The database went away: {exc.args[-1]}.") from None
            raise RowsRejected(str(exc.args[-1])) from None
        except (pymysql.err.DataError, pymysql.err.IntegrityError, pymysql.err.InternalError) as exc:
            raise RowsRejected(str(exc.args[-1])) from None

    def _warnings(self) -> list[tuple[Any, ...]]:
        return query(self.conn, "SHOW WARNINGS")

    def _columns_of(self, table: TableName) -> list[Column]:
        key = (table.schema, table.name)
        if key not in self._columns:
            self._columns[key] = table_columns(self.conn, table)
        return self._columns[key]

    def require_outbox(self) -> None:
        require_outbox(self.conn)

    def captured_tables(self) -> dict[str, Any]:
        return dict(captured_tables(self.conn))

    def table_shape(self, name: TableName, ref: Any) -> TableShape:
        columns = self._columns_of(name)
        parents = query(
            self.conn,
            "SELECT DISTINCT REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
            (name.schema, name.name),
        )
        return TableShape(
            name,
            ref,
            tuple(primary_key_columns(self.conn, name)),
            frozenset(c.name for c in columns),
            frozenset(c.name for c in columns if not c.generated),
            tuple(c.name for c in columns),
            frozenset((s, t) for s, t in parents if (s, t) != (name.schema, name.name)),
        )

    def _typed(self, shape: TableShape, source: str = "jt.img") -> dict[str, str]:
        return {c.name: c.decode(source) for c in self._columns_of(shape.name)}

    def _key_sql(self, shape: TableShape, typed: dict[str, str]) -> str:
        by_name = {c.name: c for c in self._columns_of(shape.name)}
        return key_expression([by_name[k] for k in shape.key_columns], typed)

    def row_keys(self, shape: TableShape, images: Sequence[str]) -> list[str | None]:
        typed = self._typed(shape)
        # Every column is read back with its cast, so a value that does not fit shows as a warning.
        values = ", ".join(typed.values())
        statement = _over_images(
            f"SELECT {self._key_sql(shape, typed)}, {values} FROM {_ROWS} ORDER BY jt.ord"
        )
        with self._translated():
            rows = query(self.conn, statement, (_json_array(images),))
            warnings = self._warnings()
        if warnings:
            raise RowsRejected(str(warnings[0][2]))
        return [r[0] for r in rows]

    def missing_rights(self, duty: str, command: str, tables: Sequence[TableName] = ()) -> list[MissingRight]:
        # Read from information_schema (which shows an account its own privileges), before the first write.
        role = str(query(self.conn, "SELECT CURRENT_USER()")[0][0])
        return missing(self.conn, role, duty, command, list(tables))

    def ensure_replay_log(self) -> None:
        present = query(
            self.conn,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME IN ('replay_log', 'replay_session')",
            (SCHEMA,),
        )
        if present[0][0] != 2:
            raise DrledgerError(
                "This database has no drledger.replay_log; run drledger init (a current one) first."
            )

    def begin_chunk(self) -> None:
        with self._translated():
            if not self._locked:
                # One replay at a time per server: two would race between the outbox check and the insert.
                self._locked = bool(query(self.conn, "SELECT GET_LOCK(%s, 600)", (REPLAY_LOCK,))[0][0])
            query(self.conn, f"INSERT INTO {SCHEMA}.replay_session (connection_id) VALUES (CONNECTION_ID())")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"drledger_{self._savepoints}"
        with self._translated():
            query(self.conn, f"SAVEPOINT {name}")
        try:
            with self._translated():
                yield
        except BaseException:
            with contextlib.suppress(Exception):
                query(self.conn, f"ROLLBACK TO SAVEPOINT {name}")
            raise
        with self._translated():
            query(self.conn, f"RELEASE SAVEPOINT {name}")

    def commit(self) -> None:
        with self._translated():
            # The suppression row never outlives the transaction that needed it.
            query(self.conn, f"DELETE FROM {SCHEMA}.replay_session WHERE connection_id = CONNECTION_ID()")
            self.conn.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.rollback()

    def outbox_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        if not event_ids:
            return {}
        rows = query(
            self.conn,
            f"SELECT id, COALESCE(fingerprint, {fingerprint_expression(has_before_image(self.conn))}) "
            f"FROM {SCHEMA}.outbox WHERE id IN %s",
            (list(event_ids),),
        )
        return {r[0]: bytes(r[1]) for r in rows}

    def written_at(self, table: str, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = query(
            self.conn,
            f"SELECT aggregateid, {ms_of('MAX(created_at)')} FROM {SCHEMA}.outbox "
            "WHERE aggregatetype = %s AND aggregateid IN %s GROUP BY aggregateid",
            (table, list(keys)),
        )
        return {r[0]: int(r[1]) for r in rows}

    def _existing_keys(self, shape: TableShape, images: str) -> set[str]:
        typed = self._typed(shape)
        join = " AND ".join(f"t.{quote(k)} <=> {typed[k]}" for k in shape.key_columns)
        by_name = {c.name: c for c in self._columns_of(shape.name)}
        stored = key_expression(
            [by_name[k] for k in shape.key_columns], {k: f"t.{quote(k)}" for k in shape.key_columns}
        )
        rows = query(
            self.conn,
            _over_images(f"SELECT {stored} FROM {_ROWS} JOIN {ident(shape.name)} AS t ON {join}"),
            (images,),
        )
        return {r[0] for r in rows}

    def insert_if_absent(
        self, shape: TableShape, columns: Sequence[str], events: Sequence[LedgerEvent]
    ) -> dict[str, bool]:
        # MySQL returns nothing from an INSERT: every row inserted is read back by current_rows.
        document = _json_array([e.row_json for e in events])
        with self._translated():
            before = self._existing_keys(shape, document)
            typed = self._typed(shape)
            names = ", ".join(quote(c) for c in columns)
            values = ", ".join(typed[c] for c in columns)
            query(
                self.conn,
                _over_images(
                    f"INSERT IGNORE INTO {ident(shape.name)} ({names}) SELECT {values} FROM {_ROWS}"
                ),
                (document,),
            )
            trouble = [w for w in self._warnings() if w[1] != _DUPLICATE_KEY]
            if trouble:
                raise RowsRejected(str(trouble[0][2]))
            after = self._existing_keys(shape, document)
        return dict.fromkeys(after - before, False)

    def apply_changes(
        self, shape: TableShape, op: str, events: Sequence[LedgerEvent]
    ) -> dict[str, ChangeOutcome]:
        # MySQL returns nothing from an UPDATE or a DELETE: the keys' rows are locked, compared with the
        # images as current_rows compares (each value through its column's type), changed where they
        # hold the state before, and an update's rows read back.
        typed = self._typed(shape)
        join = " AND ".join(f"t.{quote(k)} <=> {typed[k]}" for k in shape.key_columns)
        table = ident(shape.name)
        with self._translated():
            query(
                self.conn,
                _over_images(f"SELECT 1 FROM {_ROWS} JOIN {table} AS t ON {join} FOR UPDATE"),
                (_json_array([e.row_json for e in events]),),
            )
        after = self.current_rows(shape, events)
        before = (
            self.current_rows(shape, [replace(e, row_json=e.before_json or "{}") for e in events])
            if op == "update"
            else after
        )
        found: dict[str, ChangeOutcome] = {}
        due: list[LedgerEvent] = []
        for event in events:
            now, then = after.get(event.event_id), before.get(event.event_id)
            if op == "delete" and now is None:
                found[event.event_id] = ChangeOutcome("present")  # already gone
            elif then is not None and then.same:
                due.append(event)
            elif op == "update" and now is not None and now.same:
                found[event.event_id] = ChangeOutcome("present")
            else:
                held = now if now is not None else then
                found[event.event_id] = ChangeOutcome("conflict", held.text if held else None)
        if not due:
            return found
        document = _json_array([e.row_json for e in due])
        if op == "update":
            settable = shape.settable([orjson.loads(e.row_json) for e in due])
            assignments = ", ".join(f"t.{quote(c)} = {typed[c]}" for c in settable)
            statement = f"UPDATE {table} AS t JOIN {_ROWS} ON {join} SET {assignments}"
        else:
            statement = f"DELETE t FROM {table} AS t JOIN {_ROWS} ON {join}"
        with self._translated():
            query(self.conn, _over_images(statement), (document,))
            trouble = self._warnings()
        if trouble:
            raise RowsRejected(str(trouble[0][2]))
        stored = self.current_rows(shape, due) if op == "update" else {}
        for event in due:
            now = stored.get(event.event_id)
            found[event.event_id] = ChangeOutcome(
                "applied", read_back=op == "delete" or (now is not None and now.same)
            )
        return found

    def current_rows(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, CurrentRow]:
        typed = self._typed(shape)
        join = " AND ".join(f"t.{quote(k)} <=> {typed[k]}" for k in shape.key_columns)
        stored = image_expression(self._columns_of(shape.name), "t")
        document = _json_array([e.row_json for e in events])
        with self._translated():
            rows = query(
                self.conn,
                _over_images(f"SELECT jt.ord, {stored} FROM {_ROWS} JOIN {ident(shape.name)} AS t ON {join}"),
                (document,),
            )
        found: dict[str, CurrentRow] = {}
        for ordinal, text in rows:
            event = events[int(ordinal) - 1]
            mine, theirs = _parse(event.row_json), _parse(text)
            found[event.event_id] = CurrentRow(
                text, tuple(k for k, v in mine.items() if k not in theirs or theirs[k] != v)
            )
        return found

    def foreign_keys(self, shape: TableShape) -> list[ForeignKeyInfo]:
        rows = query(
            self.conn,
            "SELECT CONSTRAINT_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, COLUMN_NAME, "
            "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL "
            "ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
            (shape.name.schema, shape.name.name),
        )
        found: dict[str, ForeignKeyInfo] = {}
        for name, schema, table, column, referenced in rows:
            fk = found.get(str(name))
            if fk is None:
                found[str(name)] = ForeignKeyInfo(
                    str(name), (str(column),), (schema, table), (str(referenced),)
                )
            else:
                found[str(name)] = ForeignKeyInfo(
                    fk.name, (*fk.columns, str(column)), fk.parent_ref, (*fk.parent_columns, str(referenced))
                )
        return list(found.values())

    def unique_keys(self, shape: TableShape) -> list[UniqueKeyInfo]:
        rows = query(
            self.conn,
            "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX SEPARATOR '\\n') "
            "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
            "AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' GROUP BY INDEX_NAME ORDER BY INDEX_NAME",
            (shape.name.schema, shape.name.name),
        )
        return [UniqueKeyInfo(str(name), tuple(str(columns).split("\n"))) for name, columns in rows]

    def unique_clashes(self, shape: TableShape, events: Sequence[LedgerEvent]) -> dict[str, UniqueClash]:
        indexes = self.unique_keys(shape)
        typed = self._typed(shape)
        stored = image_expression(self._columns_of(shape.name), "t")
        by_name = {c.name: c for c in self._columns_of(shape.name)}
        key = key_expression(
            [by_name[k] for k in shape.key_columns], {k: f"t.{quote(k)}" for k in shape.key_columns}
        )
        document = _json_array([e.row_json for e in events])
        found: dict[str, UniqueClash] = {}
        for name, columns in ((u.name, u.columns) for u in indexes):
            join = " AND ".join(f"t.{quote(c)} = {typed[c]}" for c in columns)
            with self._translated():
                rows = query(
                    self.conn,
                    _over_images(
                        f"SELECT jt.ord, {stored}, {key} FROM {_ROWS} JOIN {ident(shape.name)} AS t ON {join}"
                    ),
                    (document,),
                )
            for ordinal, text, row_key in rows:
                found.setdefault(
                    events[int(ordinal) - 1].event_id, UniqueClash(str(name), text, str(row_key))
                )
        return found

    def restore_outbox(self, events: Sequence[LedgerEvent]) -> None:
        # An update's before image goes back too (an outbox from before updates were captured has no
        # column for it, and never needs one for inserts).
        with_before = any(e.before_json is not None for e in events)
        with self._translated(), self.conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {SCHEMA}.outbox (id, aggregatetype, aggregateid, type, payload, txid, created_at, "
                f"fingerprint{', before_image' if with_before else ''}) VALUES (%s, %s, %s, %s, %s, %s, "
                f"TIMESTAMPADD(MICROSECOND, %s, '1970-01-01 00:00:00'), %s{', %s' if with_before else ''})",
                [
                    (
                        e.event_id,
                        e.table,
                        e.key,
                        e.op,
                        e.row_json,
                        e.txid,
                        e.commit_ts_ms * 1000,
                        e.fingerprint,
                        *((e.before_json,) if with_before else ()),
                    )
                    for e in events
                ],
            )

    def log_outcomes(self, outcomes: Sequence[tuple[str, str, str]]) -> None:
        with self._translated(), self.conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {SCHEMA}.replay_log (event_id, outcome, detail) VALUES (%s, %s, %s)", outcomes
            )

    def sequences(self, ref: Any) -> list[SequenceInfo]:
        schema, table = ref
        rows = query(
            self.conn,
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND EXTRA LIKE %s",
            (schema, table, "%auto_increment%"),
        )
        found = []
        for column, data_type, column_type in rows:
            bits = _INTEGER_MAX.get(data_type, 64)
            maximum = 2**bits - 1 if "unsigned" in column_type.lower() else 2 ** (bits - 1) - 1
            name = f"{TableName(schema, table).qualified} AUTO_INCREMENT"
            found.append(SequenceInfo(column, ref, name, 1, 1, maximum))
        return found

    def sequence_state(self, shape_name: TableName, sequence: SequenceInfo) -> tuple[int | None, int | None]:
        schema, table = sequence.ref
        with contextlib.suppress(Exception):
            query(
                self.conn, "SET SESSION information_schema_stats_expiry = 0"
            )  # MySQL 8 caches AUTO_INCREMENT
        following = query(
            self.conn,
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        stored = query(
            self.conn, f"SELECT MAX({quote(sequence.column)}) FROM {ident(shape_name)}".replace("%", "%%"), ()
        )
        last = int(following[0][0]) - 1 if following and following[0][0] is not None else None
        return (last if last and last > 0 else None), (
            int(stored[0][0]) if stored and stored[0][0] is not None else None
        )

    def move_sequence(self, sequence: SequenceInfo, value: int) -> None:
        schema, table = sequence.ref
        with self._translated():
            query(self.conn, f"ALTER TABLE {quote(schema)}.{quote(table)} AUTO_INCREMENT = {int(value) + 1}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._locked:
                query(self.conn, "SELECT RELEASE_LOCK(%s)", (REPLAY_LOCK,))
        with contextlib.suppress(Exception):
            self.conn.close()


def _parse(text: str) -> dict[str, Any]:
    value = json.loads(text, parse_float=Decimal)
    return value if isinstance(value, dict) else {}
