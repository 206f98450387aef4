"""The I/O around reconcile: choose the window, read the ledgers and the DR outbox, compare.

Used by `drledger reconcile`, by `replay` when it is not handed a saved report, by `fence`, and by
the drill. Backend-agnostic: ledgers are opened by URL and read through `Ledger.read` only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from drledger.db import connect
from drledger.errors import DrledgerError
from drledger.ledger import open_ledger, parse_ledger_url, read_all
from drledger.ledger.base import Ledger
from drledger.outbox.postgres import payloads, read_window
from drledger.reconcile import Report, Window, reconcile
from drledger.timeutil import now_ms


@dataclass(frozen=True)
class ReconcileRequest:
    ledger_urls: list[str]
    dsn: str
    since_ms: int | None = None
    until_ms: int | None = None
    skew_ms: int = 5_000
    lookback_ms: int = 600_000
    client_config: Mapping[str, str] | None = None


def latest_dr_commit_ms(dsn: str) -> int | None:
    with connect(dsn) as conn:
        has_outbox = conn.execute("SELECT to_regclass('drledger.outbox') IS NOT NULL").fetchone()
        if not has_outbox or not has_outbox[0]:
            raise DrledgerError("The DR database has no drledger.outbox; is this the right database?")
        row = conn.execute(
            "SELECT (extract(epoch FROM max(created_at)) * 1000)::bigint FROM drledger.outbox"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def choose_window(request: ReconcileRequest) -> Window:
    """The window asked for; by default from the DR database's last commit minus the lookback, to now."""
    until = request.until_ms if request.until_ms is not None else now_ms()
    if request.since_ms is not None:
        since = request.since_ms
    else:
        latest = latest_dr_commit_ms(request.dsn)
        since = (latest if latest is not None else until) - request.lookback_ms
    if since >= until:
        raise DrledgerError("The window is empty: --since must be earlier than --until.")
    return Window(since, until, request.skew_ms)


def open_ledgers(urls: list[str], client_config: Mapping[str, str] | None) -> list[Ledger]:
    for url in urls:
        parse_ledger_url(url)  # every URL is checked before anything is opened
    opened: list[Ledger] = []
    try:
        for url in urls:
            opened.append(open_ledger(url, client_config))
    except BaseException:
        for ledger in opened:
            ledger.close()
        raise
    return opened


def run_reconcile(request: ReconcileRequest, on_progress: Callable[[int], None] | None = None) -> Report:
    if not request.ledger_urls:
        raise DrledgerError("Name at least one ledger with --ledger URL.")
    for url in request.ledger_urls:
        parse_ledger_url(url)
    window = choose_window(request)
    ledgers = open_ledgers(request.ledger_urls, request.client_config)
    # Millions of short-lived records and no cycles among them: the cyclic collector would only rescan
    # the growing id maps again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        report = reconcile(
            read_all(ledgers, window.read_since_ms, window.read_until_ms),
            read_window(request.dsn, window.read_since_ms, window.read_until_ms, with_payload=False),
            window,
            on_progress,
        )
    finally:
        if collecting:
            gc.enable()
        for ledger in ledgers:
            ledger.close()
    if report.mismatched:
        stored = payloads(request.dsn, [m.event_id for m in report.mismatched])
        report.mismatched = [replace(m, dr_row=stored.get(m.event_id)) for m in report.mismatched]
    if report.ledger_events == 0 and report.dr_events == 0 and report.malformed == 0:
        raise DrledgerError(
            "The window holds no events in the ledger nor in the DR database; widen it with --since."
        )
    return report
