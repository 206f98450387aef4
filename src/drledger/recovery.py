"""The I/O around reconcile: choose the window, read the ledgers and the DR outbox, compare.

Used by `drledger reconcile`, by `replay` when it is not handed a saved report, by `fence`, and by
the drill. Backend-agnostic: ledgers are opened by URL and read through `Ledger.scan` only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import compress

from drledger.errors import DrledgerError
from drledger.events import EVENT_ID_BYTES, LedgerEvent, MalformedRecord, MalformedTally, event_id_text
from drledger.ledger import open_ledger, parse_ledger_url
from drledger.ledger.base import Ledger, LedgerScan
from drledger.margins import DEFAULT_LOOKBACK_MS, DEFAULT_SKEW_MS
from drledger.reconcile import Report, Window, build_report, compare
from drledger.roles import COMMAND_DUTY
from drledger.source import explain_failure, open_source
from drledger.source.base import SourceDatabase
from drledger.timeutil import now_ms


@dataclass(frozen=True)
class ReconcileRequest:
    ledger_urls: list[str]
    dsn: str
    since_ms: int | None = None
    until_ms: int | None = None
    skew_ms: int = DEFAULT_SKEW_MS
    lookback_ms: int = DEFAULT_LOOKBACK_MS
    client_config: Mapping[str, str] | None = None
    #: The command reconciling (replay reconciles first): its duty's rights are checked before anything is read.
    command: str = "reconcile"


def dr_latest_commit(request: ReconcileRequest) -> int | None:
    """The DR database's last commit, where the default window starts from it (None otherwise). Asked
    before any ledger is opened: a wrong --db is the first thing an operator should hear about."""
    return open_source(request.dsn).latest_commit_ms() if request.since_ms is None else None


def choose_window(
    request: ReconcileRequest, ledgers: Sequence[Ledger] = (), dr_latest_ms: int | None = None
) -> Window:
    """The window asked for; by default from the DR database's last commit (`dr_latest_ms`) minus the
    lookback, to now (or, when every ledger has ended for good, an old primary's outbox, say, to the
    last commit in one: what the DR database wrote after that cannot be in them)."""
    until = request.until_ms if request.until_ms is not None else _default_until(ledgers)
    if request.since_ms is not None:
        since = request.since_ms
    else:
        latest = dr_latest_ms
        since = (min(latest, until) if latest is not None else until) - request.lookback_ms
    if since >= until:
        raise DrledgerError("The window is empty: --since must be earlier than --until.")
    return Window(since, until, request.skew_ms)


def _default_until(ledgers: Sequence[Ledger]) -> int:
    ends = [ledger.closed_at_ms() for ledger in ledgers]
    if ends and all(end is not None for end in ends):
        return max(end for end in ends if end is not None) + 1
    return now_ms()


@contextmanager
def open_ledgers(urls: Sequence[str], client_config: Mapping[str, str] | None) -> Iterator[list[Ledger]]:
    """Every ledger named, open for reading, as one `with`: all are closed when it ends (also those
    opened before one that failed to open)."""
    for url in urls:
        parse_ledger_url(url)  # every URL is checked before anything is opened
    with ExitStack() as stack:
        yield [stack.enter_context(open_ledger(url, client_config)) for url in urls]


def run_reconcile(request: ReconcileRequest, on_progress: Callable[[int], None] | None = None) -> Report:
    if not request.ledger_urls:
        raise DrledgerError("Name at least one ledger with --ledger URL.")
    for url in request.ledger_urls:
        parse_ledger_url(url)
    open_source(request.dsn).require_rights(COMMAND_DUTY[request.command], request.command)
    latest = dr_latest_commit(request)
    with open_ledgers(request.ledger_urls, request.client_config) as ledgers:
        window = choose_window(request, ledgers, latest)
        # Millions of short-lived records and no cycles among them: the cyclic collector would only
        # rescan the growing sets again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            report = _reconcile(request, window, ledgers, on_progress)
        finally:
            if collecting:
                gc.enable()
    if report.ledger_events == 0 and report.dr_events == 0 and report.malformed == 0:
        raise DrledgerError(
            "The window holds no events in the ledger nor in the DR database; widen it with --since."
        )
    return report


def _reconcile(
    request: ReconcileRequest,
    window: Window,
    ledgers: list[Ledger],
    on_progress: Callable[[int], None] | None,
) -> Report:
    since, until = window.read_since_ms, window.read_until_ms
    dr_side = open_source(request.dsn)
    # The DR database works out its digests while the ledgers are scanned, and their set built, here.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dr-read") as pool:
        dr_read = pool.submit(dr_side.read_fingerprints, since, until)
        try:
            scans = [ledger.scan(since, until, on_progress) for ledger in ledgers]
            prints = [p for s in scans for p in s.fingerprints] if len(scans) > 1 else scans[0].fingerprints
            times = [t for s in scans for t in s.commit_ms] if len(scans) > 1 else scans[0].commit_ms
            distinct = set(prints)
        finally:
            dr = dr_read.result()
    comparison = compare(
        prints,
        times,
        dr,
        window,
        lambda dr_only: _created_at(dr_side, dr_only),
        lambda ids: dr_side.ids_present(ids, since, until),
        distinct,
    )
    malformed = MalformedTally()
    for scan in scans:
        malformed.merge(scan.malformed)
    events = _fetch_events(
        scans, {*comparison.missing_in_dr, *(pair[0] for pair in comparison.mismatched)}, malformed
    )
    # A record whose body proved unreadable when fetched is malformed, not missing nor mismatched.
    comparison.missing_in_dr = [p for p in comparison.missing_in_dr if p in events]
    comparison.mismatched = [pair for pair in comparison.mismatched if pair[0] in events]
    rows = dr_side.outbox_rows(
        [event_id_text(p[:EVENT_ID_BYTES]) for p in comparison.missing_in_ledger]
        + [event_id_text(pair[1][:EVENT_ID_BYTES]) for pair in comparison.mismatched],
    )
    report = build_report(
        window,
        comparison,
        [events[p] for p in comparison.missing_in_dr],
        [rows[event_id_text(p[:EVENT_ID_BYTES])] for p in comparison.missing_in_ledger],
        [(events[lp], rows[event_id_text(dp[:EVENT_ID_BYTES])]) for lp, dp in comparison.mismatched],
        malformed,
    )
    if report.missing_in_dr:
        _find_split_brain(dr_side, report)
    return report


def _find_split_brain(dr_side: SourceDatabase, report: Report) -> None:
    """Which lost events' keys the DR database has given to other rows since; a role that may not read
    the application's tables (the reader) leaves the question open, said in the report."""
    from drledger.collisions import key_collisions

    try:
        with dr_side.recovery_session() as session:
            collisions = key_collisions(session, report.missing_in_dr)
        report.split_brain = [c for c in collisions if c.written_since]
        report.stale = [c for c in collisions if not c.written_since]
    except Exception as exc:
        explained = explain_failure(exc) if not isinstance(exc, DrledgerError) else exc
        if explained is None:
            raise
        tables = ", ".join(sorted({e.table for e in report.missing_in_dr}))
        report.split_brain_unchecked = (
            f"{str(explained).rstrip('.')}; the lookup reads the lost rows' tables, and GRANT SELECT ON {tables} "
            "to this role enables it"
        )


def _created_at(dr_side: SourceDatabase, prints: set[bytes]) -> dict[bytes, int]:
    by_id = dr_side.created_at({p[:EVENT_ID_BYTES] for p in prints})
    return {p: by_id[p[:EVENT_ID_BYTES]] for p in prints if p[:EVENT_ID_BYTES] in by_id}


def _fetch_events(
    scans: list[LedgerScan], wanted: set[bytes], malformed: MalformedTally
) -> dict[bytes, LedgerEvent]:
    """fingerprint → the whole event, decoded from the first ledger whose scan holds it.

    The scan's fingerprint came from a digest (a block, a header); the body fetched must agree with
    it. One that is unreadable, or reads as another event, is tallied as malformed and left out.
    """
    events: dict[bytes, LedgerEvent] = {}
    for scan in scans:
        looking = wanted - events.keys()
        prints = scan.fingerprints
        # The membership test runs in C over the whole column; the few found are then fetched whole.
        positions = {prints[i]: i for i in compress(range(len(prints)), map(looking.__contains__, prints))}
        if not positions:
            continue
        for expected, record in zip(positions, scan.fetch(list(positions.values())), strict=True):
            if isinstance(record, MalformedRecord):
                malformed.add(record)
            elif record.fingerprint != expected:
                malformed.add(
                    MalformedRecord(
                        f"event {record.event_id}",
                        "the body does not match the fingerprint its digest lists",
                        record.row_json[:120],
                    )
                )
            else:
                events[expected] = record
    return events
