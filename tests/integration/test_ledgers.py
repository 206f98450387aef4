"""Both ledger backends behind one interface: publish, read a window, count what is malformed."""

from __future__ import annotations

import sqlite3
from array import array
from pathlib import Path

import pytest

from drledger.census import take_census
from drledger.errors import DrledgerError, LedgerUnavailable
from drledger.events import LedgerEvent, MalformedRecord
from drledger.ledger import open_ledger, read_all
from tests.helpers import make_events


@pytest.fixture(params=["sqlite", "kafka", "sqs", "kinesis"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue(f"{request.param}_url")


def test_publish_then_read_window(ledger_url: str) -> None:
    # SQS takes ten messages a call, and moto answers slowly: fewer events there, same shape.
    count = 300 if ledger_url.startswith("sqs://") else 3000
    third = count // 3
    events = make_events(count, start_ms=1_700_000_000_000)
    with open_ledger(ledger_url, writer=True, create=True) as ledger:
        for i in range(0, len(events), 500):
            ledger.publish(events[i : i + 500])
    with open_ledger(ledger_url) as ledger:
        everything = [r for r in ledger.read() if isinstance(r, LedgerEvent)]
        assert sorted(e.event_id for e in everything) == sorted(e.event_id for e in events)
        assert {e.event_id: e for e in everything} == {e.event_id: e for e in events}
        window = list(ledger.read(events[third].commit_ts_ms, events[2 * third - 1].commit_ts_ms))
        assert sorted(r.event_id for r in window if isinstance(r, LedgerEvent)) == sorted(
            e.event_id for e in events[third : 2 * third]
        )
        assert list(ledger.read(events[-1].commit_ts_ms + 1, None)) == []
        # The scan reconcile uses: the same window as fingerprints, and whole events back on demand.
        inside = events[third : 2 * third]
        scan = ledger.scan(inside[0].commit_ts_ms, inside[-1].commit_ts_ms)
        assert sorted(zip(scan.fingerprints, scan.commit_ms, strict=True)) == sorted(
            (e.fingerprint, e.commit_ts_ms) for e in inside
        )
        picked = [scan.fingerprints.index(e.fingerprint) for e in (inside[-1], inside[0], inside[5])]
        assert scan.fetch(picked) == [inside[-1], inside[0], inside[5]]
        assert ledger.scan(events[-1].commit_ts_ms + 1, None).fingerprints == []


def test_duplicates_and_several_ledgers_are_counted_not_lost(tmp_path: Path, kafka_url: str) -> None:
    events = make_events(100, start_ms=1_700_000_000_000)
    local = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(local, writer=True) as ledger:
        ledger.publish(events[:60])
        ledger.publish(events[50:60])  # a redelivered batch
    with open_ledger(kafka_url, writer=True, create=True) as ledger:
        ledger.publish(events[40:])  # the mirror holds an overlapping part
    ledgers = [open_ledger(local), open_ledger(kafka_url)]
    census = take_census(read_all(ledgers, None, None))
    assert census.distinct == 100
    assert census.events == 60 + 10 + 60
    assert census.duplicates == 30
    assert census.tables == {"public.orders": 100}


def test_malformed_records_are_counted_not_fatal(tmp_path: Path, kafka_url: str) -> None:
    local = f"sqlite:///{tmp_path}/ledger.db"
    events = make_events(10, start_ms=1_700_000_000_000)
    with open_ledger(local, writer=True) as ledger:
        ledger.publish(events)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute(
            "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (NULL, NULL, ?)",
            (b"\xff{not json",),
        )
        db.execute(
            "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (1, 'x', ?)", (b'{"v": 1}',)
        )
    records = list(open_ledger(local).read(1_700_000_000_000, None))
    malformed = [r for r in records if isinstance(r, MalformedRecord)]
    assert len(records) == 11 and len(malformed) == 1  # the NULL-time one; the other is outside the window
    census = take_census(open_ledger(local).read())
    assert (census.events, census.malformed) == (10, 2)
    assert "missing" in census.malformed_samples[1].reason
    scan = open_ledger(local).scan(1_700_000_000_000, None)
    assert (len(scan.fingerprints), scan.malformed.count) == (10, 1)

    from confluent_kafka import Producer

    with open_ledger(kafka_url, writer=True, create=True) as ledger:
        ledger.publish(events)
    bootstrap, topic = kafka_url.removeprefix("kafka://").split("/")
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"garbage", key=b"k")
    producer.produce(topic, value=b'{"v": 99, "event_id": "x"}', key=b"k")
    producer.flush(10)
    producer.produce(topic, value=events[0].to_wire(), key=b"k")  # a readable event without the digest header
    producer.flush(10)
    census = take_census(open_ledger(kafka_url).read())
    assert (census.events, census.distinct, census.malformed) == (11, 10, 2)
    scan = open_ledger(kafka_url).scan()
    assert (len(scan.fingerprints), len(set(scan.fingerprints)), scan.malformed.count) == (11, 10, 2)


def test_kafka_scan_reads_digests_and_every_offset_they_do_not_cover(kafka_url: str) -> None:
    from confluent_kafka import Producer

    from drledger.ledger import kafka_digest

    events = make_events(90, start_ms=1_700_000_000_000)
    bootstrap, topic = kafka_url.removeprefix("kafka://").split("/")
    producer = Producer({"bootstrap.servers": bootstrap})
    with (
        open_ledger(kafka_url, writer=True, create=True) as ledger,
        open_ledger(kafka_url, writer=True) as lost,
    ):
        assert ledger.has_digest  # type: ignore[attr-defined]
        lost.has_digest = False  # type: ignore[attr-defined]  # a relay that died before writing the digest
        ledger.publish(events[:40])
        lost.publish(events[40:50])
        producer.produce(topic, value=events[50].to_wire(), key=b"k")  # another producer: no header either
        producer.flush(10)
        ledger.publish(events[51:80])
        lost.publish(events[80:])  # the failover's last batch
    # Blocks that cover nothing here: one from another cluster (a mirror's source), one unreadable.
    foreign = kafka_digest.DigestBlock(0, ((0, 5),), b"\x01" * 48 * 5, array("q", [1] * 5))
    producer.produce(
        topic + kafka_digest.SUFFIX, value=foreign.encode(), headers=[("drledger-cluster", b"x")]
    )
    producer.produce(topic + kafka_digest.SUFFIX, value=b"DLD1 but not a block")
    producer.flush(10)
    with open_ledger(kafka_url) as reader:
        scan = reader.scan()
        assert sorted(scan.fingerprints) == sorted(e.fingerprint for e in events)
        assert scan.malformed.count == 0
        assert sorted(scan.fetch(range(len(scan.positions))), key=lambda e: e.lsn) == events  # type: ignore[union-attr]
        window = reader.scan(events[35].commit_ts_ms, events[85].commit_ts_ms)
        assert sorted(window.fingerprints) == sorted(e.fingerprint for e in events[35:86])
        # The digest topic gone after the ledger was opened: slower, not wrong.
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics([topic + kafka_digest.SUFFIX])[topic + kafka_digest.SUFFIX].result(10)
        assert sorted(reader.scan().fingerprints) == sorted(e.fingerprint for e in events)


def test_bad_urls_and_unreachable_broker_say_so(tmp_path: Path) -> None:
    with pytest.raises(DrledgerError, match="unknown scheme"):
        open_ledger("redis://localhost/x")
    with pytest.raises(DrledgerError, match="kafka://host:port/topic"):
        open_ledger("kafka://127.0.0.1:9092")
    with pytest.raises(DrledgerError, match="does not exist"):
        open_ledger(f"sqlite:///{tmp_path}/absent.db")
    with pytest.raises(LedgerUnavailable, match="Cannot reach the Kafka broker"):
        open_ledger("kafka://127.0.0.1:1/topic")


def test_reader_does_not_create_a_topic(kafka_url: str) -> None:
    with pytest.raises(DrledgerError, match="does not exist"):
        open_ledger(kafka_url)


def test_destroy_removes_everything_the_backend_made(ledger_url: str, broker: str) -> None:
    from drledger.ledger import backend_of, destroy_ledger, sibling_ledger_url

    events = make_events(20, start_ms=1_700_000_000_000)
    with open_ledger(ledger_url, writer=True, create=True) as ledger:
        ledger.publish(events)
    destroy_ledger(ledger_url)
    with pytest.raises(DrledgerError, match="does not exist"):
        open_ledger(ledger_url)
    if ledger_url.startswith("kafka://"):
        from confluent_kafka.admin import AdminClient

        topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
        topic = ledger_url.rsplit("/", 1)[-1]
        assert topic not in topics and f"{topic}-drledger-digest" not in topics
    sibling = sibling_ledger_url(ledger_url, "tag")
    assert sibling != ledger_url and backend_of(sibling) is backend_of(ledger_url)
