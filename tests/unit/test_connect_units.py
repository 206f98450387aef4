"""The relay on Kafka Connect, without a service: the connector configuration, reading a Connect
record's headers into an event (and refusing one that proves nothing), and Connect's answers."""

from __future__ import annotations

import base64
import json

import pytest

from drledger.connect.config import ConnectorRequest, connector_config, engine_of, shown
from drledger.connect.rest import check_connect_url, relay_state, validation_errors
from drledger.errors import DrledgerError
from drledger.events import LedgerEvent, MalformedRecord
from drledger.ledger.connect_records import decode_message, from_headers, is_connect_record
from drledger.streaming import binlog_position, binlog_transaction_txid

ID = "8514d38f-1e2e-4997-afdd-0f8b31c9d623"
ROW = '{"id": 1, "tags": {"x": 1.10}, "balance": 9.50}'
BEFORE = '{"id": 1, "tags": {"x": 1.10}, "balance": 7.25}'
PG_SOURCE = {"connector": "postgresql", "ts_ms": 1796497608136, "lsn": 26610480, "snapshot": "false"}
KAFKA = "kafka://127.0.0.1:9092/ledger"


def headers(
    op: str = "update",
    row: str = ROW,
    before: str | None = BEFORE,
    change: str = "u",
    source: dict[str, object] | None = None,
    txid: str | None = "727",
    created_at: str = "2026-12-05T19:02:39.339479Z",
    replaced: dict[str, bytes] | None = None,
) -> list[tuple[str, bytes | None]]:
    """A Connect record's headers as SimpleHeaderConverter writes them for this change."""
    event = LedgerEvent.from_outbox(
        event_id=ID,
        table="public.account",
        key="1",
        op=op,
        row_json=row,
        txid=1,
        lsn=1,
        commit_ts_ms=1,
        before_json=before,
    )
    found: dict[str, bytes | None] = {
        "__debezium.context.connectorName": b"postgresql",
        "drledger-change": change.encode(),
        "drledger-source": json.dumps(source or PG_SOURCE).encode(),
        "id": ID.encode(),
        "drledger-table": b"public.account",
        "drledger-key": b"1",
        "drledger-op": op.encode(),
        "drledger-txid": None if txid is None else txid.encode(),
        "drledger-created-at": created_at.encode(),
        "drledger-row": row.encode(),
        "drledger-before": None if before is None else before.encode(),
        "drledger-fingerprint": base64.b64encode(event.fingerprint),
    }
    found.update({name.replace("_", "-"): value for name, value in (replaced or {}).items()})
    return list(found.items())


def test_a_streamed_change_reads_as_the_relay_would_have_written_it() -> None:
    event = from_headers(headers(), "p0")
    assert isinstance(event, LedgerEvent), event
    assert (event.event_id, event.op, event.row_json, event.before_json) == (ID, "update", ROW, BEFORE)
    assert (event.txid, event.lsn, event.commit_ts_ms) == (727, 26610480, 1796497608136)
    assert event.fingerprint == base64.b64decode(dict(headers())["drledger-fingerprint"] or b"")


def test_a_snapshot_read_is_committed_when_its_row_was_created() -> None:
    event = from_headers(headers(op="insert", before=None, change="r"), "p0")
    assert isinstance(event, LedgerEvent) and event.commit_ts_ms == 1796497359339


def test_a_mysql_change_takes_its_transaction_and_position_from_the_binlog() -> None:
    source = {"connector": "mysql", "ts_ms": 1796497608000, "file": "binlog.000003", "pos": 4000, "row": 2}
    transaction = json.dumps({"id": "file=binlog.000003,pos=3900", "total_order": 1}).encode()
    event = from_headers(
        [
            *headers(
                op="insert", before=None, change="c", source=source, txid=None, created_at="1796497608123456"
            ),
            ("drledger-transaction", transaction),
        ],
        "p0",
    )
    assert isinstance(event, LedgerEvent), event
    assert event.txid == (3 << 32) | 3900 and event.lsn == binlog_position("binlog.000003", 4000, 2)
    assert event.commit_ts_ms == 1796497608123  # the row's creation, later than the binlog's whole second


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"drledger_row": b'{"id": 1, "balance": 1000000}'}, "does not match its fingerprint"),
        ({"drledger_fingerprint": b"not base64!"}, "not a fingerprint"),
        ({"id": b"00000000-0000-4000-8000-000000000001"}, "not the fingerprint's event id"),
        ({"drledger_source": b"{not json"}, "not a JSON object"),
        ({"drledger_txid": b"seven"}, "not a whole number"),
        ({"drledger_row": b"\xff\xfe"}, "not text"),
    ],
)
def test_a_connect_record_that_proves_nothing_is_malformed(changed: dict[str, bytes], reason: str) -> None:
    record = from_headers(headers(replaced=changed), "partition 0 offset 9")
    assert isinstance(record, MalformedRecord) and reason in record.reason, record
    assert record.position == "partition 0 offset 9"


def test_a_record_proven_but_not_an_event_drledger_knows_is_malformed() -> None:
    for record, reason in (
        (from_headers(headers(op="truncate"), "p0"), "unknown op"),
        (from_headers(headers(op="insert"), "p0"), "an insert with a before image"),
        (from_headers(headers(created_at="yesterday", change="r"), "p0"), "not a time"),
    ):
        assert isinstance(record, MalformedRecord) and reason in record.reason, record


def test_a_record_missing_a_header_is_malformed_and_names_it() -> None:
    record = from_headers([h for h in headers() if h[0] != "drledger-source"], "p0")
    assert isinstance(record, MalformedRecord) and record.reason == "missing header drledger-source"


def test_drledgers_own_records_are_still_read_from_their_value() -> None:
    event = LedgerEvent.from_outbox(
        event_id=ID, table="public.account", key="1", op="insert", row_json=ROW, txid=5, lsn=6, commit_ts_ms=7
    )
    own = [("event_id", ID.encode()), ("drledger-digest", event.fingerprint + (7).to_bytes(8, "big"))]
    assert not is_connect_record(own) and is_connect_record(headers())
    assert decode_message(event.to_wire(), own, "p0") == event
    assert isinstance(decode_message(b"{}", None, "p0"), MalformedRecord)


def test_the_connector_is_the_relays_with_the_event_router_on_the_outbox_only() -> None:
    config = connector_config(
        ConnectorRequest(db="postgresql://app:pw@127.0.0.1:5432/shop", ledger=KAFKA, slot="connect_slot")
    )
    assert config["slot.name"] == "connect_slot" and config["publication.name"] == "drledger_pub"
    assert config["database.password"] == "pw" and shown(config)["database.password"] == "***"
    assert config["predicates.drledger_outbox.pattern"] == r"drledger\.drledger\.outbox"
    assert config["transforms"] == "drledger_change,drledger_outbox"
    assert config["transforms.drledger_change.fields"] == "op,source"
    placement = config["transforms.drledger_outbox.table.fields.additional.placement"]
    assert (
        "fingerprint:header:drledger-fingerprint" in placement and "payload:header:drledger-row" in placement
    )
    assert not {"offset.storage", "offset.storage.file.filename", "converter.schemas.enable"} & config.keys()


def test_a_mysql_connector_keeps_its_schema_history_in_a_topic() -> None:
    config = connector_config(ConnectorRequest(db="mysql://app@127.0.0.1:3306/shop", ledger=KAFKA))
    assert config["schema.history.internal"] == "io.debezium.storage.kafka.history.KafkaSchemaHistory"
    assert config["schema.history.internal.kafka.topic"] == "ledger-drledger-schema-history"
    assert "schema.history.internal.file.filename" not in config
    assert config["transforms.drledger_change.fields"] == "op,source,transaction"


def test_a_password_reference_is_printed_as_it_is() -> None:
    request = ConnectorRequest(
        db="postgresql://app:pw@h/shop", ledger=KAFKA, password_ref="${file:/s.properties:pw}"
    )
    assert shown(connector_config(request))["database.password"] == "${file:/s.properties:pw}"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"name": "has/slash"}, "--name"),
        ({"password_ref": "plain"}, "--password-ref"),
        ({"ledger": "sqlite:///tmp/l.db"}, "kafka://host:port/topic"),
    ],
)
def test_bad_input_is_one_sentence(fields: dict[str, str], fragment: str) -> None:
    with pytest.raises(DrledgerError, match=fragment.replace("/", ".")):
        connector_config(
            ConnectorRequest(
                db="postgresql://app@h/shop",
                ledger=fields.get("ledger", KAFKA),
                name=fields.get("name", "drledger-outbox"),
                password_ref=fields.get("password_ref"),
            )
        )


def test_only_the_engines_drledger_configures_are_named() -> None:
    assert engine_of("io.debezium.connector.postgresql.PostgresConnector") == "postgres"
    assert engine_of("io.debezium.connector.mysql.MySqlConnector") == "mysql"
    with pytest.raises(DrledgerError, match="no Kafka Connect configuration"):
        engine_of("io.debezium.connector.oracle.OracleConnector")


def test_a_connect_url_is_http() -> None:
    assert check_connect_url("http://connect:8083/") == "http://connect:8083"
    for bad in ("connect:8083", "ftp://connect", "http://:80", "http://h:99999"):
        with pytest.raises(DrledgerError, match="not a Kafka Connect REST URL"):
            check_connect_url(bad)


def test_the_relay_is_up_only_while_the_connector_and_every_task_run() -> None:
    running = {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]}
    assert relay_state(running).up
    failed = {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED", "trace": "…"}]}
    assert relay_state(failed) == relay_state(failed) and not relay_state(failed).up
    assert relay_state(failed).reason == "task 0 is FAILED"
    assert relay_state({"connector": {"state": "RUNNING"}, "tasks": []}).reason == "the connector has no task"
    assert relay_state({"connector": {"state": "PAUSED"}, "tasks": []}).reason == "the connector is PAUSED"
    assert not relay_state(None).up


def test_connects_validation_answer_names_each_wrong_setting() -> None:
    answer = {
        "error_count": 1,
        "configs": [
            {"value": {"name": "database.hostname", "errors": ["Unable to connect: refused."]}},
            {"value": {"name": "slot.name", "errors": []}},
        ],
    }
    assert validation_errors(answer) == ["database.hostname: Unable to connect: refused"]
    assert validation_errors({"error_count": 0, "configs": []}) == []


def test_binlog_numbers_are_the_relays() -> None:
    assert binlog_transaction_txid("file=binlog.000002,pos=77") == (2 << 32) | 77
    assert binlog_transaction_txid("a gtid") is None
    assert binlog_position("binlog.000002", 100, 5000) == (((2 << 32) | 100) << 10) | 1023
    assert binlog_position(None, 1, 1) == 0


def test_the_connector_never_takes_the_embedded_relays_slot_or_server_id_by_default() -> None:
    from drledger.source.mysql.relay import server_id
    from drledger.streaming import DEFAULT_SLOT

    postgres = connector_config(ConnectorRequest(db="postgresql://app@h/shop", ledger=KAFKA))
    assert postgres["slot.name"] == "drledger_connect" != DEFAULT_SLOT
    mysql = connector_config(ConnectorRequest(db="mysql://app@h/shop", ledger=KAFKA))
    assert mysql["database.server.id"] == str(server_id("drledger_connect")) != str(server_id(DEFAULT_SLOT))
