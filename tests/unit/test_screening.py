"""What replay and reconcile trust of ledger input, decided without a database: pure, tested directly."""

from __future__ import annotations

import dataclasses
import json
import uuid

import orjson
import pytest

from drledger.events import LedgerEvent, MalformedRecord, from_wire, row_digest
from drledger.fence import split_fenceable
from drledger.masking import mask_dsn, mask_url, scrub
from drledger.reconcile import Window, reconcile
from drledger.replay import hold_back_transactions
from drledger.screening import ONE_ID_SEVERAL_CONTENTS, ONE_KEY_SEVERAL_ROWS, screen, separate_ambiguous

T0 = 1_800_000_000_000


def ev(
    n: int,
    row: str | None = None,
    *,
    key: str | None = None,
    txid: int = 1,
    table: str = "public.t",
    **over: object,
) -> LedgerEvent:
    text = row if row is not None else f'{{"id": {n}, "v": "x{n}"}}'
    event = LedgerEvent.from_outbox(
        event_id=str(over.pop("event_id", uuid.UUID(int=n))),
        table=table,
        key=key if key is not None else str(n),
        op="insert",
        row_json=text,
        txid=txid,
        lsn=100 + n,
        commit_ts_ms=T0 + n,
    )
    return dataclasses.replace(event, **over) if over else event  # type: ignore[arg-type]


def wire(event: LedgerEvent, **fields: object) -> bytes:
    doc = orjson.loads(event.to_wire())
    doc.update(fields)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event_id": "e1"}, "event_id is not a UUID"),
        (
            {"event_id": "00000000-0000-4000-8000-00000000000A"},
            "event_id is not a UUID",
        ),  # not as PG prints it
        ({"txid": 2**63}, "txid"),
        ({"txid": -1}, "txid"),
        ({"txid": "7"}, "txid"),
        ({"commit_ts_ms": 10**17}, "commit_ts_ms"),
        ({"lsn": True}, "lsn"),
        ({"op": "merge"}, "unknown op"),
        ({"op": "update"}, "without its before image"),
        ({"before": "{}"}, "an insert with a before image"),
        ({"row_sha256": "0" * 64}, "does not match its row_sha256"),
        ({"row_sha256": "abc"}, "not a SHA-256"),
        ({"row": '{"id": 1, "v": "changed in place"}'}, "does not match its row_sha256"),
        ({"row": None}, "row is not text"),
        ({"table": ""}, "table is empty"),
    ],
)
def test_a_record_that_does_not_prove_itself_is_malformed(fields: dict[str, object], reason: str) -> None:
    record = from_wire(wire(ev(1), **fields), "row 1")
    assert isinstance(record, MalformedRecord) and reason in record.reason, record


def test_a_truncated_record_is_malformed_not_fatal() -> None:
    body = ev(1).to_wire()
    assert isinstance(from_wire(body[: len(body) // 2], "row 1"), MalformedRecord)
    assert from_wire(body, "row 1") == ev(1)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("null", "not a JSON object"),
        ("1", "not a JSON object"),
        ("[1,2]", "not a JSON object"),
        ("{not json", "not one JSON document"),
        ('{"id": 1}{"id": 2}', "not one JSON document"),  # two objects in one image
    ],
)
def test_row_images_that_are_not_one_object_are_refused(row: str, reason: str) -> None:
    screening = screen([ev(1, row)])
    assert not screening.admitted
    assert [reason in r.reason for r in screening.refused] == [True]


def test_screen_refuses_drledger_tables_odd_names_and_bad_hashes() -> None:
    events = [
        ev(1, table="drledger.outbox"),
        ev(2, table="drledger.heartbeat"),
        ev(3, table="Sales.Order"),  # not how drledger writes "Sales"."Order"
        ev(4, table="public.orders[/]"),
        ev(5, row_sha256="0" * 64),
        ev(6, event_id="not-a-uuid"),
        ev(7, op="upsert"),
        ev(8, txid=2**64),
        ev(9, table='"Sales"."Order"', row='{"id": 9, "big": 100000000000000000000000000000000000}'),
        ev(10, row='{"n": 1e400, "id": 10}'),  # valid JSON beyond a double: PostgreSQL's numeric holds it
    ]
    screening = screen(events)
    assert sorted(a.event.key for a in screening.admitted) == ["10", "9"]
    reasons = {r.event.key: r.reason for r in screening.refused}
    assert "drledger's own tables" in reasons["1"] and "drledger's own tables" in reasons["2"]
    assert "not written as drledger writes it" in reasons["3"]
    assert "not a table name" in reasons["4"]
    assert "row_sha256" in reasons["5"]
    assert "not a UUID" in reasons["6"]
    assert "operation" in reasons["7"]
    assert "txid" in reasons["8"]


def test_duplicates_collapse_and_conflicting_versions_are_held_back() -> None:
    same = ev(1)
    backfilled = dataclasses.replace(same, lsn=0)
    other_content = ev(2, '{"id": 2, "v": "forged"}')
    original = ev(2)
    key_twin = ev(3, '{"id": 4, "v": "other"}', key="4")
    key_first = ev(4)
    clean, ambiguous = separate_ambiguous(
        [backfilled, same, other_content, original, key_first, key_twin, ev(5)]
    )
    assert [e.key for e in clean] == ["1", "5"]
    assert clean[0].lsn == same.lsn  # the streamed copy is kept over the backfilled one
    reasons = {(a.reason, a.key, len(a.events)) for a in ambiguous}
    assert reasons == {(ONE_ID_SEVERAL_CONTENTS, "2", 2), (ONE_KEY_SEVERAL_ROWS, "4", 2)}


def test_one_refused_change_holds_back_its_whole_source_transaction() -> None:
    screening = screen([ev(1, txid=7), ev(2, "[1]", txid=7), ev(3, txid=8)])
    kept, held = hold_back_transactions(screening.admitted, screening.refused, screening.ambiguous)
    assert [a.event.key for a in kept] == ["3"]
    assert [r.event.key for r in held] == ["1"] and "source transaction 7" in held[0].reason


def test_reconcile_reports_conflicting_versions_and_never_counts_them_missing() -> None:
    window = Window(T0, T0 + 10_000, 0)
    report = reconcile([ev(1), ev(1, '{"id": 1, "v": "forged"}'), ev(2)], [], window)
    assert [e.key for e in report.missing_in_dr] == ["2"]
    assert [(a.reason, len(a.events)) for a in report.ambiguous] == [(ONE_ID_SEVERAL_CONTENTS, 2)]
    assert report.exit_code == 3


def test_fencing_never_uses_a_key_beyond_the_sequence() -> None:
    assert split_fenceable([5, 2**63 - 10, 40], limit=2**63 - 1 - 1000) == (40, [2**63 - 10])
    assert split_fenceable([], limit=10) == (None, [])


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://:hunter2@db/x", "hunter2"),
        ("postgresql://app:hunter2@db1:5432,db2:5432/x", "hunter2"),
        ("postgresql://app@db/x?%70assword=hunter2", "hunter2"),
        ("postgresql://app@db/x?sslpassword=hunter2&sslmode=require", "hunter2"),
        ("postgresql://app:hun%74er2@db/x", "hunter2"),
        ("host=db password='hunter 2' user=app", "hunter 2"),
        ("host=db sslpassword=hunter2", "hunter2"),
        ("host=db password=hunter2 bogus", "hunter2"),  # not even valid: masked all the same
        ("postgresql://app:hunter2@[::1/x", "hunter2"),
        ("postgresql://app:hun/ter2@db/x", "hun/ter2"),  # a '/' libpq reads as part of the password
        ("host=db password=hunter\\ 2 user=app", "hunter\\ 2"),  # an escaped space: one value
        ("host=db password=hunter\\ 2 user=app", "hunter 2"),  # … as libpq reads it
        ("http://u:hunter2@127.0.0.1:9/metrics", "hunter2"),  # watch's --relay-metrics
    ],
)
def test_every_spelling_of_a_password_is_masked(dsn: str, secret: str) -> None:
    assert secret not in mask_dsn(dsn) and "***" in mask_dsn(dsn)
    assert secret not in scrub(f"libpq said: could not parse {dsn}", dsn)


def test_ledger_urls_are_masked() -> None:
    assert mask_url("kafka://user:pw@b:9092/t") == "kafka://user:***@b:9092/t"
    assert "s3cr3t" not in mask_url("sqs://q?region=eu-west-1&aws_secret_access_key=s3cr3t")
    assert json.dumps(mask_url("sqlite:///tmp/l.db")) == '"sqlite:///tmp/l.db"'


def test_row_digest_is_over_the_exact_text() -> None:
    assert row_digest('{"a": 1}') != row_digest('{"a":1}')
