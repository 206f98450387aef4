"""Ledger records as Kafka Connect writes them: Debezium's outbox EventRouter, then a converter.

`drledger connect-config` configures the connector so that every record carries its event in
headers (Connect's `SimpleHeaderConverter`: text as UTF-8, numbers as decimal text, bytes in base64):
the event id (`id`, the EventRouter's own header), the source table, row key, operation, the row and
before images exactly as the outbox holds them, the transaction, the commit time and log position
(copied from Debezium's change envelope by `HeaderFrom` before the EventRouter drops it), and the
fingerprint the capture trigger computed. The value is the payload expanded as JSON (or whatever the
value converter makes of it) for other consumers of the topic; drledger never reads it, because an
expanded payload has lost what proves it: JSON parsers round `9.50` to `9.5`, so the row image's
hash could no longer be checked. So any value converter (JSON with or without schemas, string) reads
the same, and a record reads exactly as the embedded relay's record of the same outbox row.

A record proves itself the way a drledger wire record does (`events._field_problem`): the images'
hash must equal the trigger's fingerprint, the id must be a UUID and match the fingerprint's first 16
bytes, numbers must be whole and in range. Anything else is a `MalformedRecord`, never an exception.
Pure: no I/O, tested directly.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from drledger.errors import DrledgerError
from drledger.events import (
    FINGERPRINT_BYTES,
    LedgerEvent,
    LedgerRecord,
    MalformedRecord,
    change_digest,
    event_id_bytes,
    from_wire,
    own_transaction_txid,
)
from drledger.streaming import binlog_position, binlog_transaction_txid

#: The header the EventRouter itself writes the event id into (`table.field.event.id`).
EVENT_ID = "id"
#: Outbox columns the EventRouter places in headers (`table.fields.additional.placement`), by header.
TABLE = "drledger-table"
KEY = "drledger-key"
OP = "drledger-op"
TXID = "drledger-txid"
CREATED_AT = "drledger-created-at"
ROW = "drledger-row"
BEFORE = "drledger-before"
FINGERPRINT = "drledger-fingerprint"
OUTBOX_HEADERS = {
    "aggregatetype": TABLE,
    "aggregateid": KEY,
    "type": OP,
    "txid": TXID,
    "created_at": CREATED_AT,
    "payload": ROW,
    "before_image": BEFORE,
    "fingerprint": FINGERPRINT,
}
#: Fields of Debezium's change envelope copied into headers (`HeaderFrom`) before the EventRouter
#: unwraps the row: the change's kind (`r` for a snapshot read), and its `source` block (commit clock,
#: log position) — whole, since HeaderFrom copies top-level fields only; on MySQL also the `transaction`
#: block (the transaction's id: where it begins in the binlog).
CHANGE = "drledger-change"
SOURCE = "drledger-source"
TRANSACTION = "drledger-transaction"
ENVELOPE_HEADERS = {
    "postgres": {"op": CHANGE, "source": SOURCE},
    "mysql": {"op": CHANGE, "source": SOURCE, "transaction": TRANSACTION},
}
# What marks a Connect record: drledger's own records carry `event_id` and `drledger-digest` instead.
_MARKER = FINGERPRINT.encode()
_DIGITS = re.compile(r"-?[0-9]{1,20}")

Headers = Sequence[tuple[str, bytes | None]] | None


def kafka_topic(url: str) -> tuple[str, str]:
    """(bootstrap servers, topic) of a Kafka ledger URL: where a Connect cluster writes the ledger."""
    from drledger.ledger import parse_ledger_url
    from drledger.ledger.kafka import KafkaAddress

    address = parse_ledger_url(url)
    if not isinstance(address, KafkaAddress):
        raise DrledgerError(
            "Kafka Connect writes a Kafka topic: give --ledger as kafka://host:port/topic, the topic the "
            "readers read."
        )
    return address.bootstrap, address.topic


def is_connect_record(headers: Headers) -> bool:
    """Whether a message's headers are a Connect record's (else it is drledger's wire format)."""
    return bool(headers) and any(name == FINGERPRINT for name, _value in headers or ())


def decode_message(value: bytes | None, headers: Headers, position: str) -> LedgerRecord:
    """One Kafka message of a ledger topic → its event, whoever wrote it: drledger's relay (the wire
    format in the value) or Kafka Connect (the event in headers)."""
    if not is_connect_record(headers):
        return from_wire(value or b"", position)
    return from_headers(headers or (), position)


def from_headers(headers: Sequence[tuple[str, bytes | None]], position: str) -> LedgerRecord:
    """A Connect record's headers → the event they carry, or a MalformedRecord saying why not."""
    found: dict[str, str | None] = {}
    for name, raw in headers:
        try:
            found[name] = None if raw is None else raw.decode("utf-8")
        except UnicodeDecodeError:
            return _malformed(position, f"the header {name} is not text", headers)
    try:
        return _event(found, position)
    except _Unproven as exc:
        return _malformed(position, str(exc), headers)


class _Unproven(Exception):
    """Why a Connect record proves nothing (one phrase, for MalformedRecord.reason)."""


def _event(found: dict[str, str | None], position: str) -> LedgerEvent:
    missing = [
        name
        for name in (EVENT_ID, TABLE, KEY, OP, ROW, FINGERPRINT, CHANGE, SOURCE)
        if found.get(name) is None
    ]
    if missing:
        raise _Unproven(f"missing header {', '.join(missing)}")
    event_id, op, row = str(found[EVENT_ID]), str(found[OP]), str(found[ROW])
    before = found.get(BEFORE)
    proof = fingerprint_bytes(str(found[FINGERPRINT]))
    if proof is None:
        raise _Unproven("bad header (drledger-fingerprint is not a fingerprint in base64)")
    if event_id_bytes(event_id) != proof[:16]:
        raise _Unproven("bad header (id is not the fingerprint's event id)")
    digest = change_digest(op, row, before)
    if bytes.fromhex(digest) != proof[16:]:
        raise _Unproven("the row does not match its fingerprint")
    source = json_block(found, SOURCE)
    snapshot = found[CHANGE] == "r"
    created = found.get(CREATED_AT)
    created_ms = created_at_ms(created) if created is not None else None
    txid, lsn = transaction_and_position(found, source, snapshot)
    event = LedgerEvent(
        event_id=event_id,
        table=str(found[TABLE]),
        key=str(found[KEY]),
        op=op,
        row_json=row,
        txid=txid,
        lsn=lsn,
        commit_ts_ms=commit_time_ms(source, created_ms, snapshot),
        row_sha256=digest,
        before_json=before,
    )
    # The same checks a wire record passes (types, ranges, UUID, op and its before image), in one place.
    checked = from_wire(event.to_wire(), position)
    if isinstance(checked, MalformedRecord):
        raise _Unproven(checked.reason)
    return event


def fingerprint_bytes(text: str) -> bytes | None:
    """A bytea/BINARY column as SimpleHeaderConverter writes it (base64) → its bytes, if a fingerprint."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == FINGERPRINT_BYTES else None


def json_block(found: dict[str, str | None], name: str) -> dict[str, Any]:
    """A struct of the change envelope as SimpleHeaderConverter writes it: a JSON object."""
    text = found.get(name)
    if text is None:
        return {}
    try:
        block = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _Unproven(f"bad header ({name} is not a JSON object)") from None
    if not isinstance(block, dict):
        raise _Unproven(f"bad header ({name} is not a JSON object)")
    return block


def whole_number(value: object, name: str) -> int | None:
    """A whole number as a header gives it (a JSON number, or decimal text); None if absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise _Unproven(f"bad header ({name} is not a whole number)")


def commit_time_ms(source: dict[str, Any], created_ms: int | None, snapshot: bool) -> int:
    """The commit time, by the embedded relay's rule (relay/translate.py): a snapshot read's is its
    row's creation; a streamed change's is the source's commit clock — on MySQL, whose binlog gives
    whole seconds, the later of that and the row's creation (in microseconds)."""
    if snapshot:
        if created_ms is None:
            raise _Unproven("missing header drledger-created-at (a snapshot read's commit time)")
        return created_ms
    commit = whole_number(source.get("ts_ms"), "drledger-source's ts_ms")
    if commit is None:
        raise _Unproven("bad header (drledger-source has no ts_ms)")
    if _is_mysql(source) and created_ms is not None:
        return max(commit, created_ms)
    return commit


def created_at_ms(text: str) -> int:
    """The outbox's created_at as Debezium gives it: PostgreSQL's timestamptz as ISO text
    (ZonedTimestamp), MySQL's DATETIME(6) as epoch microseconds (MicroTimestamp)."""
    if _DIGITS.fullmatch(text):
        return int(text) // 1000
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise _Unproven("bad header (drledger-created-at is not a time)") from None


def transaction_and_position(
    found: dict[str, str | None], source: dict[str, Any], snapshot: bool
) -> tuple[int, int]:
    """(txid, log position) as the embedded relay finds them: PostgreSQL's from the outbox's txid and
    the change's LSN; MySQL's from the binlog (the transaction's first event; the change's own place)."""
    txid = whole_number(found.get(TXID), TXID)
    if not _is_mysql(source):
        if txid is None:
            raise _Unproven("missing header drledger-txid")
        return txid, whole_number(source.get("lsn"), "drledger-source's lsn") or 0
    position = binlog_position(
        source.get("file"),
        whole_number(source.get("pos"), "drledger-source's pos") or 0,
        whole_number(source.get("row"), "drledger-source's row") or 0,
    )
    if txid is None:
        transaction = json_block(found, TRANSACTION)
        txid = binlog_transaction_txid(str(transaction.get("id") or ""))
        if txid is None and snapshot:
            # A MySQL snapshot read knows no transaction: each row is its own, as the relay makes it.
            txid = own_transaction_txid(str(found[EVENT_ID]))
    return (txid if txid is not None else position), position


def _is_mysql(source: dict[str, Any]) -> bool:
    return source.get("connector") == "mysql"


def _malformed(position: str, reason: str, headers: Sequence[tuple[str, bytes | None]]) -> MalformedRecord:
    shown = ",".join(f"{name}={(raw or b'')[:24].decode('utf-8', 'replace')}" for name, raw in headers)
    return MalformedRecord(position, reason, shown[:120])
