"""Draining an SQS queue into its local index against moto, beside publishing to it, at two depths, in one run.

For each depth a FIFO queue is filled with that many events (publish rate), then drained into its
index (drain rate: receive, store, delete, ten messages a round). Against moto a drain moves a few
hundred messages a second, several times slower than publishing: each message costs three calls'
share (send, receive, delete) of a single-process server's CPU, and the deeper queue's send scans
every message for its deduplication id. So what a relay sends at full speed (a drill's warm-up) takes
the drain several times as long to take back. Against AWS a call costs its round trip whatever the
depth, and quotas decide.

    .venv/bin/python benchmarks/sqs_drain.py [--depths 2000,8000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid

from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.ledger.sqs import SqsLedger
from ledgers import make_events, start_moto


def one(depth: int) -> dict[str, float]:
    events = make_events(depth)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqs://bench-{uuid.uuid4().hex[:8]}.fifo?index={tmp}/index.db"
        with open_ledger(url, writer=True, create=True) as writer:
            started = time.perf_counter()
            writer.publish(events)
            published = time.perf_counter() - started
        with open_ledger(url) as reader:
            assert isinstance(reader, SqsLedger)
            started = time.perf_counter()
            moved = reader.drain()
            drained = time.perf_counter() - started
            held = {e.event_id for e in reader.index().read() if isinstance(e, LedgerEvent)}
            reader.destroy()
    if moved != depth or len(held) != depth:
        raise SystemExit(f"drained {moved}, the index holds {len(held)}, of {depth}")
    return {"publish_per_s": depth / published, "drain_per_s": depth / drained}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", default="2000,8000")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    runs: dict[int, list[dict[str, float]]] = {d: [] for d in depths}
    server, _endpoint = start_moto()
    try:
        for _round in range(args.rounds):
            for depth in depths:  # alternating, so both depths see the same machine
                runs[depth].append(one(depth))
    finally:
        server.terminate()
        server.wait(20)
    best = {
        d: {k: round(max(r[k] for r in rs), 1) for k in ("publish_per_s", "drain_per_s")}
        for d, rs in runs.items()
    }
    ratios: dict[str, float] = {
        f"drain/publish at {d}": round(b["drain_per_s"] / b["publish_per_s"], 2) for d, b in best.items()
    }
    shallow, deep = depths[0], depths[-1]
    for key in ("publish_per_s", "drain_per_s"):
        ratios[f"{key.split('_')[0]} at {deep} / at {shallow}"] = round(
            best[deep][key] / best[shallow][key], 2
        )
    print(json.dumps({"best_of_rounds": {str(d): b for d, b in best.items()}, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
