"""Publish throughput per ledger backend, through each one's batch API, in one run.

SQLite is a local file; Kafka is the tansu broker (memory only); SQS and Kinesis are moto in server
mode on loopback. Against an emulator the AWS figures say how fast drledger's own batching and
retry path goes, not what AWS would do: there, per-call latency (tens of ms), shard limits (1 MB/s
or 1,000 records/s per Kinesis shard) and SQS request quotas decide.

    .venv/bin/python benchmarks/ledgers.py [--events 20000] [--sqs-events 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from drledger.drill.broker import LocalBroker
from drledger.drill.postgres.cluster import free_port
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger


def make_events(count: int) -> list[LedgerEvent]:
    return [
        LedgerEvent.from_outbox(
            event_id=str(uuid.uuid4()),
            table="public.orders",
            key=str(i),
            op="insert",
            row_json=f'{{"id": {i}, "amount": {i * 1.25:.2f}, "customer": "customer-{i}", "note": "{"x" * 200}"}}',
            txid=1000 + i // 10,
            lsn=10_000 + i,
            commit_ts_ms=1_800_000_000_000 + i,
        )
        for i in range(count)
    ]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    launcher = Path(__file__).parents[1] / "tests" / "moto_fast.py"  # moto_server, SQS made depth-flat
    server = subprocess.Popen(
        [sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
    )
    return server, endpoint


def create_by_hand(bootstrap: str, topic: str) -> None:
    """A topic made outside drledger: a writer that need not create it gives it no digest topic."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sqs-events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=2_000, help="events per publish call (a relay batch)")
    args = parser.parse_args()
    server, _endpoint = start_moto()
    results = {}
    try:
        with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
            create_by_hand(broker.bootstrap, "bench-headers-only")
            urls = {
                "sqlite": (f"sqlite://{tmp}/ledger.db", args.events),
                "kafka": (f"kafka://{broker.bootstrap}/bench", args.events),
                # the same without its digest topic: what writing the digest costs
                "kafka-headers-only": (f"kafka://{broker.bootstrap}/bench-headers-only", args.events),
                "kinesis": ("kinesis://bench?shards=4", args.events),
                "sqs-fifo": (f"sqs://bench.fifo?index={tmp}/sqs.db", args.sqs_events),
                "sqs-standard": (f"sqs://bench-standard?index={tmp}/sqs-standard.db", args.sqs_events),
            }
            for name, (url, count) in urls.items():
                events = make_events(count)
                with open_ledger(url, writer=True, create=not name.endswith("headers-only")) as ledger:
                    ledger.publish(events[:10])  # connections and producer ids, outside the clock
                    started = time.perf_counter()
                    for i in range(10, count, args.batch):
                        ledger.publish(events[i : i + args.batch])
                    elapsed = time.perf_counter() - started
                results[name] = {
                    "events": count - 10,
                    "seconds": round(elapsed, 2),
                    "events_per_s": round((count - 10) / elapsed),
                }
                print(name, results[name], flush=True)
    finally:
        server.terminate()
        server.wait(20)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
