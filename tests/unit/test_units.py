"""The small pure pieces, tested directly: wire format, Debezium translation, times, config, DSN masking."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import orjson
import pytest

from drledger.config import parse_client_config
from drledger.errors import DrledgerError
from drledger.events import WIRE_VERSION, LedgerEvent, MalformedRecord, from_wire, row_digest
from drledger.masking import mask_dsn
from drledger.relay.translate import outbox_change_to_event
from drledger.source.postgres.debezium import debezium_properties
from drledger.streaming import RelaySettings
from drledger.timeutil import parse_duration, parse_instant


def test_wire_round_trip_and_version() -> None:
    event = LedgerEvent.from_outbox(
        event_id="00000000-0000-4000-8000-000000000001",
        table="public.t",
        key="7",
        op="insert",
        row_json='{"a": "ü", "b": 1}',
        txid=3,
        lsn=99,
        commit_ts_ms=1234,
    )
    wire = event.to_wire()
    assert json.loads(wire)["v"] == WIRE_VERSION
    assert from_wire(wire, "p") == event


def test_row_image_keeps_large_numerics_exact() -> None:
    text = '{"id": 1, "amount": 123456789012345678.91}'
    event = LedgerEvent.from_outbox(
        event_id="00000000-0000-4000-8000-000000000002",
        table="t",
        key="1",
        op="insert",
        row_json=text,
        txid=1,
        lsn=1,
        commit_ts_ms=1,
    )
    assert from_wire(event.to_wire(), "p") == event
    assert str(event.row["amount"]) == "123456789012345678.91"
    assert event.row_sha256 == row_digest(text) != row_digest(text.replace(".91", ".92"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 3}', "unknown wire version"),
        (b'{"v": 1, "event_id": "x"}', "missing"),
        (
            b'{"v": 1, "event_id": "x", "table": "t", "key": "k", "op": "insert", "row": 5, "txid": 1, "lsn": 1, '
            b'"commit_ts_ms": 1, "row_sha256": "h"}',
            "bad field",
        ),
        (
            b'{"v": 1, "event_id": "x", "table": "t", "key": "k", "op": "insert", "row": {}, "txid": "n", "lsn": 1, '
            b'"commit_ts_ms": 1, "row_sha256": "h"}',
            "bad field",
        ),
    ],
)
def test_unreadable_records_become_malformed(data: bytes, reason: str) -> None:
    record = from_wire(data, "row 9")
    assert isinstance(record, MalformedRecord)
    assert reason in record.reason and record.position == "row 9"


def debezium_value(op: str, **source: object) -> str:
    return json.dumps(
        {
            "before": None,
            "after": {
                "id": "9d3c0b4e-0000-4000-8000-000000000001",
                "aggregatetype": "public.orders",
                "aggregateid": "42",
                "type": "insert",
                "payload": '{"id": 42, "amount": "9.50"}',
                "txid": 7781,
                "created_at": "2026-11-27T15:00:00.250000Z",
            },
            "source": {
                "ts_ms": 1795791600400,
                "lsn": 123456,
                "schema": "drledger",
                "table": "outbox",
                **source,
            },
            "op": op,
            "ts_ms": 1795791609999,
        }
    )


def test_streamed_change_uses_the_source_commit_time() -> None:
    event = outbox_change_to_event(debezium_value("c"))
    assert event is not None
    assert event.commit_ts_ms == 1795791600400  # source.ts_ms, not the connector's ts_ms
    assert (event.event_id, event.table, event.key, event.txid, event.lsn) == (
        "9d3c0b4e-0000-4000-8000-000000000001",
        "public.orders",
        "42",
        7781,
        123456,
    )
    assert event.row_json == '{"id": 42, "amount": "9.50"}'
    assert event.row_sha256 == row_digest('{"id": 42, "amount": "9.50"}')


def test_snapshot_read_uses_created_at_and_other_changes_are_ignored() -> None:
    event = outbox_change_to_event(debezium_value("r"))
    assert event is not None and event.commit_ts_ms == 1795791600250
    assert outbox_change_to_event(debezium_value("d")) is None
    assert outbox_change_to_event(debezium_value("c", table="heartbeat")) is None
    assert outbox_change_to_event('{"ts_ms": 1795791600400}') is None  # a Debezium heartbeat


def test_a_postgresql_outbox_row_without_txid_is_refused_by_name() -> None:
    """Only MySQL's outbox has no txid column; on PostgreSQL its absence is a damaged outbox."""
    change = json.loads(debezium_value("c"))
    del change["after"]["txid"]
    with pytest.raises(KeyError, match="txid"):
        outbox_change_to_event(json.dumps(change))


def test_durations_and_instants() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("250ms") == 0.25
    assert parse_instant("15m", now=1_000_000_000) == 1_000_000_000 - 900_000
    assert parse_instant("2026-11-27T15:00:00Z") == parse_instant("2026-11-27T15:00:00")
    assert parse_instant("now", now=5) == 5
    with pytest.raises(DrledgerError, match="not a time"):
        parse_instant("yesterday-ish")
    with pytest.raises(DrledgerError, match="not a duration"):
        parse_duration("seven days")


def test_client_config_from_file_and_flags(tmp_path: Path) -> None:
    props = tmp_path / "kafka.properties"
    props.write_text("# TLS\nsecurity.protocol=SASL_SSL\nsasl.mechanism = PLAIN\n")
    assert parse_client_config(["sasl.mechanism=SCRAM-SHA-512"], [props]) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
    }
    with pytest.raises(DrledgerError, match="not key=value"):
        parse_client_config(["novalue"], [])
    with pytest.raises(DrledgerError, match="Cannot read"):
        parse_client_config([], [tmp_path / "missing"])


def test_dsn_passwords_are_masked() -> None:
    assert mask_dsn("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert "hunter2" not in mask_dsn("host=db user=app password=hunter2 dbname=x")
    assert "hunter2" not in mask_dsn("postgresql://app@db/x?password=hunter2")


def test_debezium_properties_carry_the_dsn_and_durable_offsets(tmp_path: Path) -> None:
    props = debezium_properties(
        "postgresql://app:pw@db.example:6543/shop?sslmode=require",
        RelaySettings(slot="s1", state_dir=tmp_path),
    )
    assert (props["database.hostname"], props["database.port"], props["database.dbname"]) == (
        "db.example",
        "6543",
        "shop",
    )
    assert props["database.password"] == "pw" and props["database.sslmode"] == "require"
    assert props["plugin.name"] == "pgoutput" and props["slot.name"] == "s1"
    assert props["offset.storage.file.filename"] == str(tmp_path / "s1.offsets")
    assert int(props["poll.interval.ms"]) < 500


def test_event_id_bytes_agree_with_uuid_for_every_spelling() -> None:
    import uuid

    from drledger.events import event_id_bytes

    value = uuid.uuid4()
    for spelling in (str(value), str(value).upper(), "{" + str(value) + "}", value.hex, f"urn:uuid:{value}"):
        assert event_id_bytes(spelling) == value.bytes
    assert len(event_id_bytes("not-a-uuid")) == 16 and event_id_bytes("a") != event_id_bytes("b")
    assert event_id_bytes("0000000g-0000-0000-0000-000000000000") != event_id_bytes(
        "00000000-0000-0000-0000-000000000000"
    )


def test_aws_credentials_in_a_url_are_refused_and_never_shown() -> None:
    from drledger.errors import DrledgerError
    from drledger.ledger import open_ledger, parse_ledger_url

    with pytest.raises(DrledgerError, match="carries credentials") as refused:
        parse_ledger_url("sqs://KEY:S3CRET@queue")
    assert "S3CRET" not in str(refused.value)
    with pytest.raises(DrledgerError, match="carries credentials") as refused:
        open_ledger("kinesis://stream?region=us-east-1", {"endpoint_url": "http://u:S3CRET@127.0.0.1:1"})
    assert "S3CRET" not in str(refused.value)


def test_a_kafka_broker_port_librdkafka_cannot_use_is_refused_when_the_url_is_read() -> None:
    from drledger.errors import DrledgerError
    from drledger.ledger import parse_ledger_url

    for url in (
        "kafka://127.0.0.1:99999/t",
        "kafka://127.0.0.1:0/t",
        "kafka://h:x/t",
        "kafka://:9092/t",
        "kafka://h1:9092,h2:70000/t",
    ):
        with pytest.raises(DrledgerError, match="port from 1 to 65535"):
            parse_ledger_url(url)
    for url in ("kafka://127.0.0.1:9092/t", "kafka://broker/t", "kafka://[::1]:9092/t", "kafka://a:1,b:2/t"):
        parse_ledger_url(url)


def test_a_database_ledger_url_reaches_the_driver_as_typed_less_drledgers_own_parameter() -> None:
    from drledger.ledger import parse_ledger_url

    for typed, driver in [
        ("postgresql:///shop?host=/socket/dir", "postgresql:///shop?host=/socket/dir"),
        (
            "postgresql://h/db?options=-c%20lock_timeout%3D5s&writable=accept",
            "postgresql://h/db?options=-c%20lock_timeout%3D5s",
        ),
        ("postgresql://h/db?writable=accept", "postgresql://h/db"),
        ("mysql://u@h/db?writable=accept&ssl=1", "mysql://u@h/db?ssl=1"),
    ]:
        assert parse_ledger_url(typed).dsn == driver


def test_an_update_and_a_delete_travel_with_a_hash_over_the_operation_and_both_images() -> None:
    from drledger.events import LedgerEvent, change_digest, from_wire, row_digest

    update = LedgerEvent.from_outbox(
        event_id="00000000-0000-4000-8000-000000000001",
        table="public.account",
        key="7",
        op="update",
        row_json='{"id": 7, "balance": 10}',
        before_json='{"id": 7, "balance": 30}',
        txid=9,
        lsn=10,
        commit_ts_ms=1_800_000_000_000,
    )
    assert update.row_sha256 == change_digest("update", update.row_json, update.before_json)
    assert update.row_sha256 != row_digest(update.row_json)  # the op and the before image count
    assert from_wire(update.to_wire(), "p") == update
    # The same after image with another before image is another change.
    other = orjson.loads(update.to_wire())
    other["before"] = '{"id": 7, "balance": 31}'
    assert "row_sha256" in from_wire(orjson.dumps(other), "p").reason  # type: ignore[union-attr]
    delete = LedgerEvent.from_outbox(
        event_id="00000000-0000-4000-8000-000000000002",
        table="public.account",
        key="7",
        op="delete",
        row_json='{"id": 7, "balance": 10}',
        txid=9,
        lsn=11,
        commit_ts_ms=1_800_000_000_000,
    )
    assert delete.row_sha256 != update.row_sha256 and from_wire(delete.to_wire(), "p") == delete
    # An insert hashes its row image alone: version 1 records, written before updates were captured,
    # still read, with the same fingerprint.
    insert = dataclasses.replace(delete, op="insert", row_sha256=row_digest(delete.row_json))
    version_1 = {k: v for k, v in orjson.loads(insert.to_wire()).items() if k != "before"} | {"v": 1}
    assert from_wire(orjson.dumps(version_1), "p") == insert
    assert (
        "unknown op"
        in from_wire(  # type: ignore[union-attr]
            orjson.dumps({**version_1, "op": "delete", "row_sha256": delete.row_sha256}), "p"
        ).reason
    )


def test_a_refused_truncate_names_the_captured_table_and_claims_delete_is_captured_only_when_it_is() -> None:
    from drledger.names import TableName
    from drledger.source.postgres.outbox import truncate_refusal

    orders, sales = TableName("public", "orders"), TableName("Sales", "Order")
    part = TableName("Sales", "Order_eu")
    assert truncate_refusal(orders, orders, ("insert", "update", "delete"))[0] == (
        "drledger captures public.orders: TRUNCATE would leave no trace in the DR ledger; use DELETE, which is "
        "captured, or stop capturing the table first"
    )
    message, hint = truncate_refusal(part, sales, ("insert",))
    assert message.startswith(
        'drledger captures "Sales"."Order_eu" (a partition of "Sales"."Order"): TRUNCATE'
    )
    assert message.endswith("; use DELETE, or stop capturing the table first")  # deletes are not captured
    assert hint.startswith('To stop capturing "Sales"."Order", its owner drops the drledger_capture triggers')
