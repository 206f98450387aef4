"""`drledger reconcile`: a window of the ledger against the DR database's outbox, by event id."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drledger.cli.common import err, out, print_json, reconcile_request
from drledger.cli.options import (
    DbOption,
    EndpointOption,
    JsonOption,
    LedgerConfigFileOption,
    LedgerConfigOption,
    LookbackOption,
    ReadLedgers,
    SinceOption,
    SkewOption,
    UntilOption,
)
from drledger.margins import DEFAULT_LOOKBACK, DEFAULT_SKEW

if TYPE_CHECKING:
    from drledger.reconcile import Report
    from drledger.recovery import ReconcileRequest


def reconcile(
    db: DbOption,
    ledger: ReadLedgers = None,
    since: SinceOption = None,
    until: UntilOption = None,
    skew: SkewOption = DEFAULT_SKEW,
    lookback: LookbackOption = DEFAULT_LOOKBACK,
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Save the report and the missing events for replay --from.")
    ] = None,
) -> None:
    """After failover: compare a window of the ledger with the DR database's outbox, by event id.

    Classifies events as missing_in_dr (recoverable loss), missing_in_ledger (never reached the ledger),
    mismatched (same id, different content), duplicates (harmless redeliveries) and malformed (unreadable
    ledger records), and reports the exposure: the last commit in each, and the gap between them.
    """
    from drledger.report import print_summary, report_json
    from drledger.saved import save_report

    request = reconcile_request(
        db=db,
        ledgers=ledger,
        since=since,
        until=until,
        skew=skew,
        lookback=lookback,
        ledger_config=ledger_config,
        ledger_config_file=ledger_config_file,
        endpoint_url=endpoint_url,
    )
    report = _run_reconcile(request)
    summary = report_json(report, ledgers=request.ledger_urls, db=db)
    if save is not None:
        save_report(save, summary, report)
    if html is not None:
        from drledger.report_html import write_html

        write_html(html, summary, report)
    if as_json:
        print_json(summary)
    else:
        print_summary(out, summary)
    raise typer.Exit(report.exit_code)


def _run_reconcile(request: ReconcileRequest) -> Report:
    from drledger.recovery import run_reconcile

    with err.status("reconciling the ledger with the DR database…") as status:
        return run_reconcile(
            request, on_progress=lambda n: status.update(f"reconciling… {n:,} ledger records read")
        )
