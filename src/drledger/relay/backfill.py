"""Backfill: after failover, publish the retained outbox rows the ledger never got.

A relay on a newly promoted primary needs a new replication slot, and a slot streams only what commits
after it exists: rows written between promotion and then would never reach the ledger. So the slot is
created first, then every outbox row committed since T that the ledger lacks is published, then the
relay streams from the slot. A row committed during the backfill is both read here and streamed;
readers drop the duplicate by event id.
"""

from __future__ import annotations

from collections.abc import Iterator

from drledger.events import LedgerEvent, OutboxRow
from drledger.ledger.base import Ledger
from drledger.source.base import SourceDatabase

BATCH = 5_000
# Backfilled rows carry created_at (their transaction's start) as commit time; look a little earlier in
# the ledger so an event it holds with a later, true commit time is still recognised.
_LEDGER_LOOKBACK_MS = 60_000


def _batches(rows: Iterator[OutboxRow], known: set[str]) -> Iterator[list[LedgerEvent]]:
    batch: list[LedgerEvent] = []
    for row in rows:
        if row.event_id in known:
            continue
        batch.append(row.as_event())
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def backfill(source: SourceDatabase, ledger: Ledger, since_ms: int) -> int:
    """Publish the outbox rows created since `since_ms` that the ledger lacks; how many were published."""
    known = {
        r.event_id for r in ledger.read(since_ms - _LEDGER_LOOKBACK_MS, None) if isinstance(r, LedgerEvent)
    }
    published = 0
    for batch in _batches(source.read_window(since_ms, None), known):
        ledger.publish(batch)
        published += len(batch)
    return published
