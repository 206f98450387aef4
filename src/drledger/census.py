"""What a ledger window holds: counts, duplicates, malformed records, time span, per-table counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from drledger.events import LedgerRecord, MalformedRecord, MalformedTally
from drledger.timeutil import format_instant


@dataclass
class LedgerCensus:
    events: int = 0
    distinct: int = 0
    duplicates: int = 0  # the same event again, with the same content: a harmless redelivery
    conflicting: int = 0  # an event id seen again with different content: never harmless
    malformed: int = 0
    first_commit_ms: int | None = None
    last_commit_ms: int | None = None
    tables: Counter[str] = field(default_factory=Counter)
    malformed_samples: list[MalformedRecord] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Exactly the keys `drledger ledger inspect --json` promises; tables count distinct events."""
        return {
            "events": self.events,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "conflicting": self.conflicting,
            "malformed": self.malformed,
            "first_commit": format_instant(self.first_commit_ms),
            "last_commit": format_instant(self.last_commit_ms),
            "tables": dict(sorted(self.tables.items())),
        }


def take_census(
    records: Iterable[LedgerRecord], on_record: Callable[[int], None] | None = None
) -> LedgerCensus:
    census = LedgerCensus()
    seen: dict[str, tuple[str, str, str]] = {}
    tally = MalformedTally()
    for record in tally.events(records, on_record):
        census.events += 1
        content = (record.table, record.key, record.row_sha256)
        earlier = seen.get(record.event_id)
        if earlier is not None:
            if earlier == content:
                census.duplicates += 1
            else:
                census.conflicting += 1
            continue
        seen[record.event_id] = content
        census.tables[record.table] += 1
        ts = record.commit_ts_ms
        if census.first_commit_ms is None or ts < census.first_commit_ms:
            census.first_commit_ms = ts
        if census.last_commit_ms is None or ts > census.last_commit_ms:
            census.last_commit_ms = ts
    census.distinct = len(seen)
    census.malformed, census.malformed_samples = tally.count, tally.samples
    return census
