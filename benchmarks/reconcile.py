"""Reconcile throughput: a 1,000,000-event window on the embedded and the Kafka ledger → events/s.

The ledger holds 1,000,000 events; the DR outbox holds the same minus the last 2% (the loss) and
with a few rows changed (mismatches), each row with its fingerprint as the capture trigger writes it.
Reconcile reads both sides and compares them, exactly as `drledger reconcile` does. Its parts are
timed alone too, so the figure says what limits it: the ledger's fingerprint scan, the same window
decoded event by event (what reconcile did before scans existed), the DR database's fingerprints, and
for Kafka the bare consumer draining the topic with no per-message work at all, the floor for any
reader that touches every message. Kafka runs twice: with its digest topic (as drledger creates it),
and on a topic created by hand, without one, where the scan reads every message's header.

    .venv/bin/python benchmarks/reconcile.py [--events 1000000] [--repeat 3]

The reconcile figure is the median of `--repeat` runs; every run's time is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid

import psycopg

from drledger.drill.broker import LocalBroker
from drledger.drill.postgres.cluster import ClusterSet
from drledger.events import LedgerEvent, row_fingerprint
from drledger.ledger import open_ledger
from drledger.recovery import ReconcileRequest, run_reconcile
from drledger.source.postgres.outbox import install, read_fingerprints
from drledger.timeutil import format_instant
from ledgers import create_by_hand

START_MS = 1_800_000_000_000


def make_events(count: int) -> list[LedgerEvent]:
    return [
        LedgerEvent.from_outbox(
            event_id=str(uuid.UUID(int=i + 1)),
            table="public.orders",
            key=str(i + 1),
            op="insert",
            row_json=f'{{"id": {i + 1}, "amount": {(i % 1000) * 7.25:.2f}, "customer": "customer-{i}"}}',
            txid=100_000 + i // 3,
            lsn=1_000_000 + i,
            commit_ts_ms=START_MS + i // 10,
        )
        for i in range(count)
    ]


def at(epoch_ms: int) -> str:
    return format_instant(epoch_ms) or ""


def load_dr(dsn: str, events: list[LedgerEvent]) -> None:
    kept = events[: int(len(events) * 0.98)]
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY drledger.outbox (id, aggregatetype, aggregateid, type, payload, txid, created_at, fingerprint) "
            "FROM STDIN"
        ) as copy:
            for n, event in enumerate(kept):
                payload = event.row_json if n % 100_000 else event.row_json.replace("customer-", "changed-")
                copy.write_row(
                    (
                        event.event_id,
                        event.table,
                        event.key,
                        event.op,
                        payload,
                        event.txid,
                        at(event.commit_ts_ms),
                        # as the capture trigger writes it
                        row_fingerprint(event.event_id, payload),
                    )
                )
        conn.execute("ANALYZE drledger.outbox")


def bare_consume(bootstrap: str, topic: str) -> int:
    """Drain the topic with the same client settings as the Kafka ledger, touching no message."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 10,
            "queued.min.messages": 200_000,
            "max.partition.fetch.bytes": 16 << 20,
        }
    )
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    pending, count = set(partitions), 0
    while pending:
        for message in consumer.consume(5000, timeout=0.02):
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
            else:
                count += 1
    consumer.close()
    return count


def timed(label: str, function, results: dict) -> object:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = function()
    results[label] = round(time.perf_counter() - started, 2)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    until = events[-1].commit_ts_ms
    results: dict[str, dict] = {}
    with ClusterSet() as clusters, LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        primary = clusters.primary()
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric, customer text)")
        install(primary.dsn, ["public.orders"])
        load_dr(primary.dsn, events)
        create_by_hand(broker.bootstrap, "reconcile-bench-headers-only")
        urls = {
            "sqlite": f"sqlite://{tmp}/ledger.db",
            "kafka": f"kafka://{broker.bootstrap}/reconcile-bench",
            # the same topic without its digest topic: every message's header is read
            "kafka-headers-only": f"kafka://{broker.bootstrap}/reconcile-bench-headers-only",
        }
        for kind, url in urls.items():
            with open_ledger(url, writer=True, create=not kind.endswith("headers-only")) as ledger:
                for i in range(0, len(events), 10_000):
                    ledger.publish(events[i : i + 10_000])
            figures: dict[str, object] = {}
            if kind.startswith("kafka"):
                topic = url.rsplit("/", 1)[1]
                timed("bare_consume_s", lambda: bare_consume(broker.bootstrap, topic), figures)  # noqa: B023
            with open_ledger(url) as ledger:
                timed("ledger_scan_s", lambda: ledger.scan(START_MS, until), figures)
                timed("ledger_decode_s", lambda: sum(1 for _ in ledger.read(START_MS, until)), figures)
            timed("dr_fingerprints_s", lambda: read_fingerprints(primary.dsn, START_MS, until), figures)
            request = ReconcileRequest([url], primary.dsn, since_ms=START_MS, until_ms=until, skew_ms=0)
            runs: list[float] = []
            for _ in range(args.repeat):  # one run varies by a fifth on a shared two-core machine
                report = timed("reconcile_s", lambda: run_reconcile(request), figures)  # noqa: B023
                runs.append(float(figures["reconcile_s"]))  # type: ignore[arg-type]
            figures["reconcile_runs_s"] = runs
            figures["reconcile_s"] = sorted(runs)[len(runs) // 2]  # the median
            for part in ("reconcile", "ledger_scan", "ledger_decode", "dr_fingerprints", "bare_consume"):
                if f"{part}_s" in figures:
                    figures[f"{part}_events_per_s"] = round(args.events / figures[f"{part}_s"])
            figures["missing_in_dr"] = len(report.missing_in_dr)  # type: ignore[attr-defined]
            figures["mismatched"] = len(report.mismatched)  # type: ignore[attr-defined]
            results[kind] = figures
            print(kind, figures, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
