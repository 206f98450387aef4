"""Reconcile's comparison and replay's ordering: pure functions, tested directly."""

from __future__ import annotations

from drledger.events import LedgerEvent, MalformedRecord, row_digest
from drledger.fence import key_values
from drledger.names import TableName
from drledger.reconcile import Window, compare, reconcile
from drledger.replay import change_runs, chunk_transactions, plan_replay, superseded_events
from drledger.source.postgres.outbox import OutboxRow

T0 = 1_800_000_000_000


def event(
    n: int, *, ts: int, txid: int | None = None, lsn: int | None = None, row: str | None = None
) -> LedgerEvent:
    return LedgerEvent.from_outbox(
        event_id=f"e{n}",
        table="public.orders",
        key=str(n),
        op="insert",
        row_json=row or f'{{"id": {n}}}',
        txid=txid if txid is not None else n,
        lsn=lsn if lsn is not None else n,
        commit_ts_ms=ts,
    )


def outbox(n: int, *, created: int, row: str | None = None) -> OutboxRow:
    text = row or f'{{"id": {n}}}'
    return OutboxRow(f"e{n}", "public.orders", str(n), "insert", text, n, created, row_digest(text))


def test_classifies_every_kind_of_difference() -> None:
    window = Window(T0, T0 + 10_000, 1_000)
    ledger: list[LedgerEvent | MalformedRecord] = [
        event(1, ts=T0 + 100),
        event(2, ts=T0 + 200),
        event(2, ts=T0 + 200),  # a redelivery
        event(3, ts=T0 + 300, row='{"id": 3, "v": "ledger"}'),
        event(4, ts=T0 + 9_000),
        event(5, ts=T0 + 9_500),  # lost by the DR database
        MalformedRecord("row 9", "not JSON", "{x"),
    ]
    dr = [
        outbox(1, created=T0 + 90),
        outbox(2, created=T0 + 190),
        outbox(3, created=T0 + 290, row='{"id": 3, "v": "dr"}'),
        outbox(6, created=T0 + 5_000),
    ]  # never reached the ledger
    report = reconcile(ledger, dr, window)
    assert (report.ledger_events, report.dr_events, report.duplicates, report.malformed) == (5, 4, 1, 1)
    assert [e.event_id for e in report.missing_in_dr] == ["e4", "e5"]
    assert [r.event_id for r in report.missing_in_ledger] == ["e6"]
    assert [m.event_id for m in report.mismatched] == ["e3"]
    assert report.exit_code == 3
    assert report.ledger_last_commit_ms == T0 + 9_500
    assert report.dr_last_commit_ms == T0 + 5_000
    assert report.gap_seconds == 4.5


def test_window_edges_never_make_false_losses() -> None:
    window = Window(T0, T0 + 10_000, 2_000)
    # Committed just inside the window, but its transaction began just before it (created_at earlier).
    ledger = [event(1, ts=T0 + 500)]
    dr = [outbox(1, created=T0 - 800)]
    report = reconcile(ledger, dr, window)
    assert report.missing_in_dr == [] and report.missing_in_ledger == []
    # Outside the window on both sides: neither counted nor missing.
    report = reconcile([event(2, ts=T0 + 15_000)], [], window)
    assert report.ledger_events == 0 and report.missing_in_dr == []


def test_exit_codes() -> None:
    window = Window(T0, T0 + 10_000, 0)
    assert reconcile([event(1, ts=T0 + 1)], [outbox(1, created=T0 + 1)], window).exit_code == 0
    assert reconcile([event(1, ts=T0 + 1)], [], window).exit_code == 1
    assert reconcile([event(1, ts=T0 + 1), MalformedRecord("p", "r", "s")], [], window).exit_code == 3


def test_replay_orders_by_commit_and_groups_by_transaction() -> None:
    # Transaction 7 started first (lower LSNs) but committed after transaction 8.
    events = [
        event(1, ts=T0 + 50, txid=7, lsn=100),
        event(2, ts=T0 + 50, txid=7, lsn=130),
        event(3, ts=T0 + 20, txid=8, lsn=120),
        event(4, ts=T0 + 90, txid=9, lsn=200),
        event(4, ts=T0 + 90, txid=9, lsn=200),  # duplicate
    ]
    plan = plan_replay(reversed(events))
    assert [t.txid for t in plan] == [8, 7, 9]
    assert [e.event_id for e in plan[1].events] == ["e1", "e2"]
    assert len(plan[2].events) == 1


def test_chunks_never_split_a_transaction() -> None:
    events = [event(i, ts=T0 + i, txid=i // 3, lsn=i) for i in range(30)]
    chunks = chunk_transactions(plan_replay(events), max_events=7)
    assert all(sum(len(t.events) for t in chunk) <= 7 for chunk in chunks)
    assert [t.txid for chunk in chunks for t in chunk] == list(range(10))


def test_highest_keys_reads_exact_values() -> None:
    events = [event(1, ts=T0, row='{"id": 99999999999999999}'), event(2, ts=T0, row='{"id": 5, "n": null}')]
    rows = [(TableName.parse(e.table), e.row) for e in events]
    values = key_values(rows, {"public.orders": ["id"]})
    assert max(values[("public.orders", "id")]) == 99999999999999999


def test_two_versions_of_one_event_in_the_ledger_are_a_mismatch_not_a_loss() -> None:
    window = Window(T0, T0 + 10_000, 0)
    ledger = [
        event(1, ts=T0 + 100),
        event(1, ts=T0 + 100, row='{"id": 1, "v": "other"}'),
        event(2, ts=T0 + 200),
    ]
    report = reconcile(ledger, [outbox(1, created=T0 + 90)], window)
    assert [e.event_id for e in report.missing_in_dr] == ["e2"]
    assert [m.event_id for m in report.mismatched] == ["e1"]
    assert report.mismatched[0].ledger_row == '{"id": 1, "v": "other"}'


def test_compare_on_columns_counts_each_side_by_its_own_clock() -> None:
    window = Window(T0, T0 + 2_000, 500)
    a, b, c, d = (bytes([n]) * 48 for n in range(1, 5))
    created = {a: T0 - 300, d: T0 + 1_999}  # a's transaction began before the window, committed inside it
    comparison = compare(
        [a, b, b, c],  # b redelivered; c committed after the window
        [T0 + 100, T0 + 1_500, T0 + 1_500, T0 + 2_300],
        [a, d],  # d never reached the ledger
        window,
        lambda prints: {p: created[p] for p in prints},
    )
    assert (comparison.ledger_events, comparison.duplicates, comparison.dr_events) == (2, 1, 2)
    assert comparison.missing_in_dr == [b] and comparison.missing_in_ledger == [d]
    assert comparison.ledger_per_second == {T0 // 1000: 1, (T0 + 1_500) // 1000: 1}
    assert comparison.dr_last_commit_ms == T0 + 1_999 and comparison.ledger_last_commit_ms == T0 + 1_500


def test_kafka_fetch_reads_runs_of_nearby_offsets() -> None:
    from drledger.ledger.kafka import _runs

    positions = [(1 << 48) | 7, 5, (1 << 48) | 3, 20_000, 6, (1 << 48) | 9_000]
    assert list(_runs(positions, gap=100)) == [(0, [5, 6]), (0, [20_000]), (1, [3, 7]), (1, [9_000])]


def test_kafka_digest_blocks_list_each_partition_by_offset_and_round_trip() -> None:
    from drledger.ledger import kafka_digest

    events = [event(n, ts=T0 + n) for n in range(5)]
    placed = [(1, 11, events[3]), (0, 7, events[0]), (0, 9, events[2]), (0, 8, events[1]), (1, 12, events[4])]
    first, second = kafka_digest.blocks_for(placed)
    assert (first.partition, first.runs, list(first.commit_ms)) == (
        0,
        ((7, 3),),
        [e.commit_ts_ms for e in events[:3]],
    )
    assert first.fingerprints == b"".join(e.fingerprint for e in events[:3])
    assert (second.partition, second.runs) == (1, ((11, 2),))
    assert kafka_digest.decode(first.encode()) == first
    assert kafka_digest.decode(first.encode()[:-1]) is None
    assert kafka_digest.decode(b"garbage") is None and kafka_digest.decode(None) is None
    gappy = kafka_digest.blocks_for([(0, 3, events[0]), (0, 4, events[1]), (0, 9, events[2])])[0]
    assert gappy.runs == ((3, 2), (9, 1)) and list(gappy.offsets(100)) == [103, 104, 109]
    trimmed = gappy.since(4)
    assert trimmed.runs == ((4, 1), (9, 1)) and list(trimmed.commit_ms) == [
        events[1].commit_ts_ms,
        events[2].commit_ts_ms,
    ]
    assert trimmed.fingerprints == events[1].fingerprint + events[2].fingerprint
    assert gappy.since(10).runs == () and gappy.since(0) is gappy


def test_kafka_offsets_no_digest_covers_are_read_from_the_topic() -> None:
    from drledger.ledger.kafka_digest import uncovered

    assert uncovered(0, []) == [(0, None)]
    assert uncovered(0, [(0, 10), (10, 5)]) == [(15, None)]
    # a batch whose digest was lost, a record from another producer, and the unlisted tail
    assert uncovered(5, [(20, 10), (5, 10), (31, 4)]) == [(15, 20), (30, 31), (35, None)]
    assert uncovered(12, [(0, 10), (0, 10)]) == [(12, None)]


def change(n: int, key: str, op: str, *, txid: int, table: str = "public.orders") -> LedgerEvent:
    return LedgerEvent.from_outbox(
        event_id=f"c{n}",
        table=table,
        key=key,
        op=op,
        row_json=f'{{"id": {key}, "v": {n}}}',
        before_json='{"id": 0}' if op == "update" else None,
        txid=txid,
        lsn=n,
        commit_ts_ms=T0 + n,
    )


def test_only_the_last_change_of_a_row_is_compared_with_the_row() -> None:
    plan = plan_replay(
        [
            change(1, "1", "insert", txid=1),
            change(2, "1", "update", txid=2),
            change(3, "2", "insert", txid=2),
            change(4, "1", "update", txid=3),
            change(5, "1", "insert", txid=4, table="public.other"),
        ]
    )
    assert superseded_events(plan) == frozenset({"c1", "c2"})


def test_changes_go_in_the_source_order_in_runs_of_one_table_op_and_key_once() -> None:
    events = [
        change(1, "1", "insert", txid=1),
        change(2, "2", "insert", txid=1),
        change(3, "1", "update", txid=2),
        change(4, "1", "update", txid=3),  # the same key again: a run of its own
        change(5, "2", "update", txid=3),
        change(6, "1", "delete", txid=4),
        change(7, "1", "insert", txid=5),  # deleted and inserted again, in that order
        change(8, "3", "insert", txid=5, table="public.other"),
    ]
    runs = [(table, op, [e.event_id for e in run]) for table, op, run in change_runs(events)]
    assert runs == [
        ("public.orders", "insert", ["c1", "c2"]),
        ("public.orders", "update", ["c3"]),
        ("public.orders", "update", ["c4", "c5"]),
        ("public.orders", "delete", ["c6"]),
        ("public.orders", "insert", ["c7"]),
        ("public.other", "insert", ["c8"]),
    ]


def test_rows_the_ledger_lacks_long_before_its_newest_event_say_it_went_backwards() -> None:
    from drledger.report import report_json, verdict

    minute = 60_000
    window = Window(T0, T0 + 60 * minute, 1_000)
    ledger = [event(1, ts=T0 + minute), event(9, ts=T0 + 50 * minute)]  # a broker re-created empty between
    dr = [
        outbox(1, created=T0 + minute - 5),
        outbox(2, created=T0 + 2 * minute),  # lost with the old broker: 48 minutes before the newest
        outbox(3, created=T0 + 3 * minute),
        outbox(8, created=T0 + 49 * minute),  # a minute before it: lag can explain that
        outbox(9, created=T0 + 50 * minute - 5),
    ]
    report = reconcile(ledger, dr, window)
    assert [r.event_id for r in report.missing_in_ledger] == ["e2", "e3", "e8"]
    assert [r.event_id for r in report.missing_before_newest] == ["e2", "e3"]
    said = verdict(report)
    assert "2 of them were created more than 15 minutes before the ledger's newest event" in said
    assert "went backwards" in said and "--backfill-since 2027-01-15T07:47:00" in said, said
    counts = report_json(report, ledgers=["sqlite:///l.db"], db="postgresql://x@h/db")["counts"]
    assert counts["missing_in_ledger_before_its_newest"] == 2
    # A ledger merely behind (its newest event before the rows it lacks) says nothing of the kind.
    behind = reconcile([event(1, ts=T0 + minute)], dr[:3], window)
    assert len(behind.missing_in_ledger) == 2 and behind.missing_before_newest == []
    assert "went backwards" not in verdict(behind)
