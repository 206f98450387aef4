"""`drledger fence`: move sequences past every key the ledger knows, before the application writes."""

from __future__ import annotations

from typing import Annotated

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
    UntilOption,
)
from drledger.errors import DrledgerError, ExitCode
from drledger.margins import DEFAULT_LOOKBACK, DEFAULT_MARGIN


def fence(
    db: DbOption,
    ledger: ReadLedgers = None,
    margin: Annotated[
        int, typer.Option(help="How far past the highest known key to move each sequence (0 to 1e9).")
    ] = DEFAULT_MARGIN,
    since: SinceOption = None,
    until: UntilOption = None,
    lookback: LookbackOption = DEFAULT_LOOKBACK,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would move; move nothing.")] = False,
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Right after promotion, before the application writes: move sequences past every key the ledger knows.

    New writes on the promoted primary then cannot take the keys of rows the failover lost (which replay
    will restore). Only events replay would accept count (captured tables, proven rows), and a key beyond
    what a sequence can hand out is reported, never used. Idempotent: a sequence already far enough is left
    alone.
    """
    from drledger.margins import validate_margin
    from drledger.report import print_fences
    from drledger.runbook import fence_from_ledger

    validate_margin(margin)
    request = reconcile_request(
        db=db,
        ledgers=ledger,
        since=since,
        until=until,
        skew="0s",
        lookback=lookback,
        ledger_config=ledger_config,
        ledger_config_file=ledger_config_file,
        endpoint_url=endpoint_url,
        command="fence",
    )
    if not request.ledger_urls:
        raise DrledgerError("Name at least one ledger with --ledger URL.")
    with err.status("reading the ledger and fencing…"):
        result, unproven = fence_from_ledger(request, margin, apply=not dry_run)
    if as_json:
        print_json(
            {**result.as_json(every_sequence=True), "unproven_events": unproven, "dry_run": dry_run},
            exit_code=ExitCode.NEEDS_HUMAN if result.unfenced else ExitCode.SUCCESS,
        )
    else:
        print_fences(out, result, moved_only=False, dry_run=dry_run)
        if unproven:
            out.print(f"{unproven} ledger events could not be proven and were not used (replay reports each)")
    if result.unfenced:
        raise typer.Exit(ExitCode.NEEDS_HUMAN)
