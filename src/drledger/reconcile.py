"""Reconcile: the ledger's window against the DR database's outbox, compared by event id.

Pure: it is handed the two streams and a window and returns a Report; reading them is the caller's
job, so the comparison is tested directly and never knows which ledger backend the events came from.

Windows. A ledger event carries its source commit time; an outbox row carries `created_at`, the clock
of its transaction's start, a little earlier. Both sides are read over the window widened by the skew
margin, and an item is judged missing only if it is inside the window proper and absent from the
other side's widened read, so a transaction straddling a window edge is never a false loss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from drledger.census import MalformedTally
from drledger.events import LedgerEvent, LedgerRecord, MalformedRecord
from drledger.outbox.postgres import OutboxRow

MALFORMED_SAMPLES = 10


@dataclass(frozen=True)
class Window:
    since_ms: int
    until_ms: int
    skew_ms: int

    @property
    def read_since_ms(self) -> int:
        return self.since_ms - self.skew_ms

    @property
    def read_until_ms(self) -> int:
        return self.until_ms + self.skew_ms

    def holds(self, ts_ms: int) -> bool:
        return self.since_ms <= ts_ms <= self.until_ms


@dataclass(frozen=True)
class Mismatch:
    event_id: str
    table: str
    key: str
    ledger_sha256: str
    dr_sha256: str
    ledger_row: str
    dr_row: str | None  # filled in by the caller when the window was read without payloads


@dataclass
class Report:
    window: Window
    ledger_events: int = 0  # distinct events in the window
    dr_events: int = 0  # outbox rows in the window
    duplicates: int = 0
    malformed: int = 0
    missing_in_dr: list[LedgerEvent] = field(default_factory=list)
    missing_in_ledger: list[OutboxRow] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    malformed_samples: list[MalformedRecord] = field(default_factory=list)
    dr_last_commit_ms: int | None = None
    ledger_last_commit_ms: int | None = None
    # Events per second on each side, for the timeline picture.
    ledger_per_second: Counter[int] = field(default_factory=Counter)
    dr_per_second: Counter[int] = field(default_factory=Counter)

    @property
    def needs_a_human(self) -> bool:
        return bool(self.mismatched or self.missing_in_ledger or self.malformed)

    @property
    def exit_code(self) -> int:
        """0 nothing missing; 1 recoverable loss; 3 something a person must look at."""
        if self.needs_a_human:
            return 3
        return 1 if self.missing_in_dr else 0

    @property
    def gap_seconds(self) -> float | None:
        """How far the ledger reaches past the DR database: the recoverable part of the loss window."""
        if self.dr_last_commit_ms is None or self.ledger_last_commit_ms is None:
            return None
        return round((self.ledger_last_commit_ms - self.dr_last_commit_ms) / 1000, 3)


def reconcile(
    ledger_records: Iterable[LedgerRecord],
    dr_rows: Iterable[OutboxRow],
    window: Window,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    report = Report(window)
    ledger: dict[str, LedgerEvent] = {}
    tally = MalformedTally(keep=MALFORMED_SAMPLES)
    for record in tally.events(ledger_records, on_progress, every=50_000):
        if record.event_id in ledger:
            if window.holds(record.commit_ts_ms):
                report.duplicates += 1
            continue
        ledger[record.event_id] = record
    report.malformed, report.malformed_samples = tally.count, tally.samples

    dr_digests: dict[str, str] = {}
    for row in dr_rows:
        digest = row.row_sha256
        dr_digests[row.event_id] = digest
        event = ledger.get(row.event_id)
        # The commit time is known when the ledger has the event; else created_at stands in for it.
        commit_ms = event.commit_ts_ms if event is not None else row.created_at_ms
        if not window.holds(row.created_at_ms) and not (event is not None and window.holds(commit_ms)):
            continue
        report.dr_events += 1
        report.dr_per_second[commit_ms // 1000] += 1
        if report.dr_last_commit_ms is None or commit_ms > report.dr_last_commit_ms:
            report.dr_last_commit_ms = commit_ms
        if event is None:
            if window.holds(row.created_at_ms):
                report.missing_in_ledger.append(row)
        elif event.row_sha256 != digest:
            report.mismatched.append(
                Mismatch(
                    row.event_id,
                    event.table,
                    event.key,
                    event.row_sha256,
                    digest,
                    event.row_json,
                    row.row_json,
                )
            )

    for event in ledger.values():
        if not window.holds(event.commit_ts_ms):
            continue
        report.ledger_events += 1
        report.ledger_per_second[event.commit_ts_ms // 1000] += 1
        if report.ledger_last_commit_ms is None or event.commit_ts_ms > report.ledger_last_commit_ms:
            report.ledger_last_commit_ms = event.commit_ts_ms
        if event.event_id not in dr_digests:
            report.missing_in_dr.append(event)
    report.missing_in_dr.sort(key=lambda e: (e.commit_ts_ms, e.lsn))
    return report
