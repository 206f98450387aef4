"""The relay publishes whole source transactions: Debezium's records in, what may be published and
marked out (relay/transactions.py), and how a Debezium record is read (relay/translate.py). No services."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from drledger.errors import DrledgerError, RetryLater
from drledger.relay.transactions import TransactionTooLarge, WholeTransactions
from drledger.relay.translate import StreamRecord, read_stream_record, transaction_identity

PG_TX = "771:24023128"


def outbox_change(n: int, transaction: str | None = PG_TX, op: str = "c", txid: int = 771) -> bytes:
    """A PostgreSQL outbox change as Debezium's JSON converter gives it (schemas disabled)."""
    row = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "aggregatetype": "public.orders",
        "aggregateid": str(n),
        "type": "insert",
        "payload": f'{{"id": {n}}}',
        "txid": txid,
        "created_at": "2026-12-05T19:00:00.000001Z",
    }
    value = {
        "before": None,
        "after": row,
        "source": {
            "connector": "postgresql",
            "schema": "drledger",
            "table": "outbox",
            "lsn": 24023000 + n,
            "ts_ms": 1_800_000_000_000,
        },
        "op": op,
        "ts_ms": 1_800_000_000_100,
        "transaction": None
        if transaction is None
        else {"id": transaction, "total_order": n, "data_collection_order": n},
    }
    return orjson.dumps(value)


def heartbeat_change(transaction: str) -> bytes:
    return orjson.dumps(
        {
            "before": None,
            "after": {"id": 1, "beat_at": "2026-12-05T19:00:00Z"},
            "source": {
                "connector": "postgresql",
                "schema": "drledger",
                "table": "heartbeat",
                "lsn": 1,
                "ts_ms": 1,
            },
            "op": "u",
            "transaction": {"id": transaction, "total_order": 1, "data_collection_order": 1},
        }
    )


def begin(transaction: str = PG_TX) -> bytes:
    return orjson.dumps(
        {"status": "BEGIN", "id": transaction, "ts_ms": 1, "event_count": None, "data_collections": None}
    )


def end(outbox: int, transaction: str = PG_TX, heartbeat: int = 0) -> bytes:
    collections = [{"data_collection": "drledger.outbox", "event_count": outbox}] if outbox else []
    if heartbeat:
        collections.append({"data_collection": "drledger.heartbeat", "event_count": heartbeat})
    return orjson.dumps(
        {
            "status": "END",
            "id": transaction,
            "ts_ms": 1,
            "event_count": outbox + heartbeat,
            "data_collections": collections,
        }
    )


def feed(buffer: WholeTransactions[int], values: list[bytes | None], first: int = 0) -> None:
    for i, value in enumerate(values, start=first):
        buffer.add(i, read_stream_record(value))


def test_a_debezium_record_is_read_for_what_it_is() -> None:
    change = read_stream_record(outbox_change(1))
    assert (change.kind, change.transaction, change.outbox, change.snapshot) == ("change", "771", True, False)
    assert change.event is not None and change.event.txid == 771
    assert read_stream_record(begin()) == StreamRecord("begin", "771")
    assert read_stream_record(end(5, heartbeat=1)) == StreamRecord("end", "771", outbox_changes=5)
    beat = read_stream_record(heartbeat_change("772:1"))
    assert (beat.kind, beat.transaction, beat.outbox, beat.event) == ("change", "772", False, None)


def test_a_transaction_is_known_by_the_same_identity_on_each_of_its_records() -> None:
    # PostgreSQL: "xid:LSN", the LSN the record's own; MySQL and MariaDB: a GTID or a binlog position.
    assert transaction_identity("730:26610128") == transaction_identity("730:26610456") == "730"
    gtid = "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
    assert transaction_identity(gtid) == gtid
    assert transaction_identity("0-1-4012") == "0-1-4012"
    assert transaction_identity("file=mysql-bin.000003,pos=1178") == "file=mysql-bin.000003,pos=1178"
    for block in (None, PG_TX):  # a snapshot read waits for no END, whatever it carries
        snapshot = read_stream_record(outbox_change(2, transaction=block, op="r"))
        assert snapshot.snapshot and snapshot.transaction is None and snapshot.event is not None
    prune = read_stream_record(outbox_change(3, op="d"))
    assert prune.outbox and prune.event is None  # counted by END, published never
    assert read_stream_record(None).kind == "other"  # a tombstone
    assert read_stream_record(b'{"ts_ms": 1}').kind == "other"  # a heartbeat message


def test_a_transaction_split_across_batches_is_released_whole_with_its_end() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [begin(), outbox_change(1), outbox_change(2)])
    first = buffer.take()
    assert (
        first.events == [] and first.records == [] and buffer.held == 3
    )  # nothing published, nothing marked
    feed(buffer, [outbox_change(3), end(3)], first=3)
    second = buffer.take()
    assert [e.key for e in second.events] == ["1", "2", "3"]
    assert second.records == [0, 1, 2, 3, 4] and second.transactions == 1 and buffer.held == 0
    assert buffer.take().records == []


def test_records_after_an_open_transaction_wait_for_it_and_those_before_it_do_not() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    other = "772:24023500"
    feed(
        buffer,
        [
            b'{"ts_ms": 1}',  # a heartbeat message between transactions
            begin(),
            outbox_change(1),
            end(1),
            begin(other),
            outbox_change(2, transaction=other),
        ],
    )
    ready = buffer.take()
    assert ready.records == [0, 1, 2, 3] and [e.key for e in ready.events] == ["1"]
    feed(buffer, [None, outbox_change(3, transaction=other), end(2, other)], first=6)
    assert buffer.take().records == [4, 5, 6, 7, 8]


def test_a_transaction_that_wrote_nothing_to_the_outbox_is_marked_and_publishes_nothing() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [begin("9:1"), heartbeat_change("9:1"), end(0, "9:1", heartbeat=1)])
    ready = buffer.take()
    assert ready.records == [0, 1, 2] and ready.events == [] and ready.transactions == 1


def test_snapshot_reads_have_no_transaction_and_are_released_at_once() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [outbox_change(n, transaction=None, op="r") for n in range(4)])
    ready = buffer.take()
    assert ready.records == [0, 1, 2, 3] and len(ready.events) == 4 and ready.streamed == []


def test_a_transaction_begun_before_the_saved_position_is_released_with_what_remains() -> None:
    # Offsets saved mid-transaction by a relay from before whole transactions: its first changes are
    # in the ledger already, the rest arrive without a BEGIN.
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [outbox_change(4), outbox_change(5), end(5)])
    assert [e.key for e in buffer.take().events] == ["4", "5"]


def test_an_end_that_counts_more_than_arrived_stops_the_relay_rather_than_publish_a_part() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [begin(), outbox_change(1)])
    with pytest.raises(DrledgerError, match=r"ended with 2 outbox changes, but the relay received 1"):
        feed(buffer, [end(2)], first=2)
    assert buffer.take().events == []


def test_a_change_of_another_transaction_before_the_open_one_ended_is_refused() -> None:
    buffer: WholeTransactions[int] = WholeTransactions()
    feed(buffer, [begin(), outbox_change(1)])
    with pytest.raises(RetryLater, match=r"began the source transaction 772 before it ended 771"):
        feed(buffer, [outbox_change(2, transaction="772:1")], first=2)
    assert buffer.take().records == []


def test_a_transaction_larger_than_the_limit_stops_the_relay_and_nothing_of_it_is_released() -> None:
    buffer: WholeTransactions[int] = WholeTransactions(limit=10)
    feed(buffer, [begin(), *(outbox_change(n) for n in range(9))])
    with pytest.raises(
        TransactionTooLarge, match=r"more than 10 changes.*--max-transaction-changes"
    ) as caught:
        feed(buffer, [outbox_change(9), outbox_change(10)], first=10)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert buffer.take().records == []


def test_whatever_the_batch_boundaries_only_whole_transactions_are_released_in_stream_order() -> None:
    rng = random.Random(4)
    stream: list[bytes | None] = []
    made: Counter[int] = Counter()
    boundaries = {0}  # stream positions outside every transaction: where a saved position may stand
    n = 0
    for t in range(200):
        txid, tx = 1000 + t, f"{1000 + t}:{t * 100}"
        size = rng.randint(0, 6)
        stream.append(begin(tx))
        for _ in range(size):
            stream.append(outbox_change(n, transaction=tx, txid=txid))
            n += 1
        if size == 0 or rng.random() < 0.3:
            stream.append(heartbeat_change(tx))
        made[txid] = size
        stream.append(end(size, tx))
        boundaries.add(len(stream))
        if rng.random() < 0.2:
            stream.append(b'{"ts_ms": 1}')
            boundaries.add(len(stream))
    buffer: WholeTransactions[int] = WholeTransactions()
    released: list[int] = []
    keys: list[str] = []
    i = 0
    while i < len(stream):
        size = rng.randint(1, 9)
        feed(buffer, stream[i : i + size], first=i)
        i += size
        ready = buffer.take()
        released += ready.records
        keys += [e.key for e in ready.events]
        assert len(released) in boundaries
        published = Counter(e.txid for e in ready.events)
        assert all(published[txid] == made[txid] for txid in published)
    assert released == list(range(len(stream)))
    assert keys == [str(k) for k in range(n)]
