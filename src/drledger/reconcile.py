"""Reconcile: the ledger's window against the DR database's outbox, compared by event id.

Pure: it is handed the two streams and a window and returns a Report; reading them is the caller's
job, so the comparison is tested directly and never knows which ledger backend the events came from.

The comparison works on columns of fingerprints (event id + row digest, see events.py), not on
events: the events both sides agree on, nearly all of them, are settled by set operations, and only
the few that differ are looked at one by one and turned back into events by the caller.

Windows. A ledger event carries its source commit time; an outbox row carries `created_at`, the clock
of its transaction's start, a little earlier. Both sides are read over the window widened by the skew
margin, and an item is judged missing only if it is inside the window proper and absent from the
other side's widened read, so a transaction straddling a window edge is never a false loss. A DR row's
time is its commit time as the ledger recorded it, or its created_at when the ledger never saw it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, filterfalse

from drledger.errors import ExitCode
from drledger.events import (
    EVENT_ID_BYTES,
    KNOWN_OPS_IN_ORDER,
    LedgerEvent,
    LedgerRecord,
    MalformedRecord,
    MalformedTally,
    OutboxRow,
    event_id_bytes,
    fingerprint,
)
from drledger.screening import Ambiguity, separate_ambiguous


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


@dataclass(frozen=True)
class KeyCollision:
    """Split brain: a lost event whose key the DR database has since given to another row (written
    after promotion, before fencing). Both versions, each with when it was written; neither is
    overwritten, so a person decides."""

    event_id: str
    table: str
    key: str
    ledger_row: str
    ledger_written_ms: int
    dr_row: str
    dr_written_ms: int | None  # None when the DR row was written without capture
    op: str = "insert"
    ledger_before: str | None = None  # an update's row before it: the version the DR should hold

    @property
    def written_since(self) -> bool:
        """Split brain only on evidence: the DR database's own capture wrote this key after the lost
        version was committed. Otherwise the DR row is stale: an older version the failover left there
        (the key deleted and inserted again in the lost window), or one written without capture."""
        return self.dr_written_ms is not None and self.dr_written_ms > self.ledger_written_ms


#: The relay publishes in commit order, and an outbox row carries its transaction's start: a row the
#: ledger lacks that was created this much before the ledger's newest event is no relay lag (a
#: transaction open that long is rare); the ledger lost it, or a relay skipped it.
LAG_CANNOT_EXPLAIN_MS = 15 * 60_000


def missing_before_newest(
    missing_in_ledger: Sequence[OutboxRow], ledger_last_commit_ms: int | None
) -> list[OutboxRow]:
    """The rows the ledger lacks though it holds events committed well after them (see
    LAG_CANNOT_EXPLAIN_MS): evidence that the ledger went backwards (a broker re-created empty, a
    file restored from an old copy) or that a relay skipped them. Oldest first. Pure."""
    if ledger_last_commit_ms is None:
        return []
    before = ledger_last_commit_ms - LAG_CANNOT_EXPLAIN_MS
    return sorted((r for r in missing_in_ledger if r.created_at_ms < before), key=lambda r: r.created_at_ms)


@dataclass
class Report:
    window: Window
    ledger_events: int = 0  # distinct events in the window
    dr_events: int = 0  # outbox rows in the window
    duplicates: int = 0
    malformed: int = 0
    missing_in_dr: list[LedgerEvent] = field(default_factory=list)
    # Lost events the ledger holds in several versions where there can be one: never replayed.
    ambiguous: list[Ambiguity] = field(default_factory=list)
    missing_in_ledger: list[OutboxRow] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    malformed_samples: list[MalformedRecord] = field(default_factory=list)
    # Lost events (still counted in missing_in_dr) whose key the DR database holds with other content.
    split_brain: list[KeyCollision] = field(default_factory=list)
    # Lost events whose key holds an older version in the DR database, never written there since.
    stale: list[KeyCollision] = field(default_factory=list)
    split_brain_unchecked: str | None = None  # why the DR database could not be asked, if it could not
    dr_last_commit_ms: int | None = None
    ledger_last_commit_ms: int | None = None
    # Events per second on each side, for the timeline picture.
    ledger_per_second: Counter[int] = field(default_factory=Counter)
    dr_per_second: Counter[int] = field(default_factory=Counter)

    @property
    def missing_before_newest(self) -> list[OutboxRow]:
        """DR rows the ledger lacks though it holds events committed long after them."""
        return missing_before_newest(self.missing_in_ledger, self.ledger_last_commit_ms)

    @property
    def missing_by_op(self) -> dict[str, int]:
        """How many lost events are inserts, updates, deletes."""
        counts = Counter(e.op for e in self.missing_in_dr)
        return {op: counts[op] for op in KNOWN_OPS_IN_ORDER if counts[op]}

    @property
    def needs_a_human(self) -> bool:
        return bool(
            self.mismatched
            or self.missing_in_ledger
            or self.malformed
            or self.ambiguous
            or self.split_brain
            or self.stale
        )

    @property
    def exit_code(self) -> ExitCode:
        """0 nothing missing; 1 recoverable loss; 3 something a person must look at."""
        if self.needs_a_human:
            return ExitCode.NEEDS_HUMAN
        return ExitCode.PROBLEM_FOUND if self.missing_in_dr else ExitCode.SUCCESS

    @property
    def gap_seconds(self) -> float | None:
        """How far the ledger reaches past the DR database: the recoverable part of the loss window."""
        if self.dr_last_commit_ms is None or self.ledger_last_commit_ms is None:
            return None
        return round((self.ledger_last_commit_ms - self.dr_last_commit_ms) / 1000, 3)


@dataclass
class Comparison:
    """What compare() found, in fingerprints; the caller turns them back into events and rows."""

    ledger_events: int = 0
    duplicates: int = 0
    dr_events: int = 0
    missing_in_dr: list[bytes] = field(default_factory=list)  # ledger fingerprints, by commit time
    missing_in_ledger: list[bytes] = field(default_factory=list)  # DR fingerprints
    # (the ledger's fingerprint, the DR row's; or only its id when the row matched another version)
    mismatched: list[tuple[bytes, bytes]] = field(default_factory=list)
    ledger_last_commit_ms: int | None = None
    dr_last_commit_ms: int | None = None
    ledger_per_second: Counter[int] = field(default_factory=Counter)
    dr_per_second: Counter[int] = field(default_factory=Counter)


def compare(
    ledger_prints: Sequence[bytes],
    ledger_ms: Sequence[int],
    dr_prints: Sequence[bytes],
    window: Window,
    dr_created: Callable[[set[bytes]], dict[bytes, int]],
    dr_holds: Callable[[set[bytes]], set[bytes]] | None = None,
    ledger_distinct: set[bytes] | None = None,
) -> Comparison:
    """The ledger's window (fingerprints and commit times, position-aligned) against the DR outbox's.

    Ledger columns may repeat a record (redeliveries); DR fingerprints are each one outbox row.
    `dr_created(prints)` gives the created_at of the DR rows the ledger lacks, the only DR times
    needed. `dr_holds(ids)` says which of these event ids the DR side has under any content; by
    default it is worked out from `dr_prints`, a caller with the database at hand can ask it instead.
    `ledger_distinct` is set(ledger_prints), for a caller that built it while waiting on the DR read.

    Only set operations touch every fingerprint. Everything else is done on the few that differ,
    or on sorted commit times by bisection: a DR row that matches the ledger has the ledger's time,
    so the DR side's times are the ledger's, less the unmatched ledger events, plus the DR-only rows.
    """
    low, high = window.since_ms, window.until_ms
    result = Comparison()
    ledger = ledger_distinct if ledger_distinct is not None else set(ledger_prints)
    only_ledger = ledger.difference(dr_prints)
    # Outbox ids are unique, so the DR side holds rows the ledger lacks only if not all were matched.
    matched = len(ledger) - len(only_ledger)
    only_dr = set(filterfalse(ledger.__contains__, dr_prints)) if matched < len(dr_prints) else set()

    if len(ledger) == len(ledger_prints):
        ledger_times = sorted(ledger_ms)
    else:  # redeliveries: count each event once, at its own time
        ledger_times = sorted(dict(zip(ledger_prints, ledger_ms, strict=True)).values())
        held = sorted(ledger_ms)
        result.duplicates = _count(held, low, high) - _count(ledger_times, low, high)
    result.ledger_events = _count(ledger_times, low, high)
    result.ledger_last_commit_ms = _last(ledger_times, low, high)
    result.ledger_per_second = _per_second(ledger_times, low, high)

    ledger_at = _times_of(only_ledger, ledger_prints, ledger_ms)
    dr_at = dr_created(only_dr) if only_dr else {}
    dr_by_id = {p[:EVENT_ID_BYTES]: p for p in dr_at}  # a row pruned since the read is gone
    ledger_ids = {p[:EVENT_ID_BYTES] for p in only_ledger}
    # A ledger holding two versions of one event, the DR row matching the other: a mismatch, not a loss.
    unexplained = ledger_ids - dr_by_id.keys()
    other_version = (dr_holds or _holds_in(dr_prints))(unexplained) if unexplained else set()
    for ledger_print, commit_ms in ledger_at.items():
        event_id = ledger_print[:EVENT_ID_BYTES]
        dr_print = dr_by_id.get(event_id)
        if dr_print is not None:
            if low <= commit_ms <= high or low <= dr_at[dr_print] <= high:
                result.mismatched.append((ledger_print, dr_print))
        elif event_id in other_version:
            if low <= commit_ms <= high:
                result.mismatched.append((ledger_print, event_id))
        elif low <= commit_ms <= high:
            result.missing_in_dr.append(ledger_print)
    result.missing_in_dr.sort(key=ledger_at.__getitem__)
    result.mismatched.sort(key=lambda pair: ledger_at[pair[0]])

    # The DR side's times: the ledger's, without its unmatched events, with the DR-only rows (a
    # mismatched row at its ledger event's time, any other at its created_at).
    ledger_time_of_id = {p[:EVENT_ID_BYTES]: t for p, t in ledger_at.items()}
    added = sorted(ledger_time_of_id.get(p[:EVENT_ID_BYTES], t) for p, t in dr_at.items())
    removed = sorted(ledger_at.values())
    result.dr_events = result.ledger_events - _count(removed, low, high) + _count(added, low, high)
    result.dr_per_second = (
        result.ledger_per_second - _per_second(removed, low, high) + _per_second(added, low, high)
    )
    result.dr_last_commit_ms = _last_remaining(ledger_times, removed, added, low, high)
    result.missing_in_ledger = sorted(
        (p for p, t in dr_at.items() if p[:EVENT_ID_BYTES] not in ledger_ids and low <= t <= high),
        key=dr_at.__getitem__,
    )
    return result


def _times_of(wanted: set[bytes], prints: Sequence[bytes], times: Sequence[int]) -> dict[bytes, int]:
    """fingerprint → time for the few wanted; the membership test runs in C over the whole column."""
    if not wanted:
        return {}
    return {prints[i]: times[i] for i in compress(range(len(prints)), map(wanted.__contains__, prints))}


def _holds_in(dr_prints: Sequence[bytes]) -> Callable[[set[bytes]], set[bytes]]:
    return lambda ids: ids & {p[:EVENT_ID_BYTES] for p in dr_prints}


def _count(times: Sequence[int], low: int, high: int) -> int:
    """How many of these sorted times fall in [low, high]."""
    return bisect_right(times, high) - bisect_left(times, low)


def _last(times: Sequence[int], low: int, high: int) -> int | None:
    end = bisect_right(times, high)
    return times[end - 1] if end and times[end - 1] >= low else None


def _last_remaining(
    times: Sequence[int], removed: Sequence[int], added: Sequence[int], low: int, high: int
) -> int | None:
    """The latest time in [low, high] of sorted `times` less the multiset `removed`, plus `added`."""
    left = Counter(removed)
    index = bisect_right(times, high) - 1
    while index >= 0 and times[index] >= low and left[times[index]] > 0:
        left[times[index]] -= 1
        index -= 1
    candidates = [t for t in (_last(added, low, high),) if t is not None]
    if index >= 0 and times[index] >= low:
        candidates.append(times[index])
    return max(candidates) if candidates else None


def _per_second(times: Sequence[int], low: int, high: int) -> Counter[int]:
    """Events per second among sorted `times` in [low, high], found by bisection, not by visiting each."""
    counts: Counter[int] = Counter()
    index, end = bisect_left(times, low), bisect_right(times, high)
    while index < end:
        second = times[index] // 1000
        upto = bisect_left(times, (second + 1) * 1000, index, end)
        counts[second] = upto - index
        index = upto
    return counts


def reconcile(
    ledger_records: Iterable[LedgerRecord],
    dr_rows: Iterable[OutboxRow],
    window: Window,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """compare() on whole events and rows: the same classification, with events in the Report."""
    tally = MalformedTally()
    events = list(tally.events(ledger_records, on_progress, every=50_000))
    rows = list(dr_rows)
    created = {fingerprint(r.event_id, r.row_sha256): r.created_at_ms for r in rows}
    comparison = compare(
        [e.fingerprint for e in events],
        [e.commit_ts_ms for e in events],
        list(created),
        window,
        lambda prints: {p: created[p] for p in prints},
    )
    event_at = {e.fingerprint: e for e in events}
    row_of = {event_id_bytes(r.event_id): r for r in rows}
    return build_report(
        window,
        comparison,
        [event_at[p] for p in comparison.missing_in_dr],
        [row_of[p[:EVENT_ID_BYTES]] for p in comparison.missing_in_ledger],
        [(event_at[lp], row_of[dp[:EVENT_ID_BYTES]]) for lp, dp in comparison.mismatched],
        tally,
    )


def build_report(
    window: Window,
    comparison: Comparison,
    missing_in_dr: list[LedgerEvent],
    missing_in_ledger: list[OutboxRow],
    mismatched: list[tuple[LedgerEvent, OutboxRow]],
    malformed: MalformedTally,
) -> Report:
    """The Report; lost events held in conflicting versions are taken out of missing_in_dr."""
    recoverable, ambiguous = separate_ambiguous(missing_in_dr)
    return Report(
        window,
        ledger_events=comparison.ledger_events,
        dr_events=comparison.dr_events,
        duplicates=comparison.duplicates,
        malformed=malformed.count,
        missing_in_dr=recoverable,
        ambiguous=ambiguous,
        missing_in_ledger=missing_in_ledger,
        mismatched=[
            Mismatch(e.event_id, e.table, e.key, e.row_sha256, r.row_sha256, e.row_json, r.row_json)
            for e, r in mismatched
        ],
        malformed_samples=malformed.samples,
        dr_last_commit_ms=comparison.dr_last_commit_ms,
        ledger_last_commit_ms=comparison.ledger_last_commit_ms,
        ledger_per_second=comparison.ledger_per_second,
        dr_per_second=comparison.dr_per_second,
    )
