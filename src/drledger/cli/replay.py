"""`drledger replay`: re-insert what the DR database lost, idempotently (dry run unless --apply)."""

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
from drledger.errors import ReplayInterrupted
from drledger.margins import DEFAULT_LOOKBACK, DEFAULT_MARGIN, DEFAULT_SKEW

if TYPE_CHECKING:
    from drledger.replay import ReplayResult


def replay(
    db: DbOption,
    ledger: ReadLedgers = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help="A report saved by reconcile --save.")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Apply; without it, rehearse in a transaction that is rolled back."),
    ] = False,
    on_conflict: Annotated[
        str, typer.Option(help="'skip' (report and go on) or 'fail' (stop at the first).")
    ] = "skip",
    fence_margin: Annotated[
        int,
        typer.Option(help="Before applying, move sequences this far past the highest key being restored."),
    ] = DEFAULT_MARGIN,
    since: SinceOption = None,
    until: UntilOption = None,
    skew: SkewOption = DEFAULT_SKEW,
    lookback: LookbackOption = DEFAULT_LOOKBACK,
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the result as one self-contained page: counts, each conflict with both versions, "
            "each refused or held-back event with why (and the event it waits behind).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-insert what the DR database lost, transaction by transaction, idempotently (dry run unless --apply).

    Reads the missing events from --from FILE, or reconciles first with the same inputs as reconcile. Nothing
    it cannot prove is written: each event must name a table drledger captures here, carry one JSON object
    whose key is the event's key and whose SHA-256 is its row_sha256, with columns the table has and values
    of their types; conflicting versions of one event or one key are held back. Sequences are fenced first,
    then each source transaction is applied atomically, in commit order, with its original event id and
    capture suppressed. A key that already holds different content is a conflict: reported with both
    versions and skipped (or, with --on-conflict fail, replay stops). Running it again changes nothing.
    The dry run does all of this in a transaction it rolls back: it shows exactly what --apply would do.
    """
    from drledger.replay import OnConflict
    from drledger.replay import replay as replay_events
    from drledger.runbook import lost_events

    policy = OnConflict.parse(on_conflict)
    request = None
    if from_file is None:
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
            command="replay",
        )
    with err.status("reading the lost events…") as status:
        events, unreadable = lost_events(
            from_file=from_file,
            request=request,
            on_progress=lambda n: status.update(f"reconciling… {n:,} ledger records read"),
        )
        status.update("validating…" if not apply else "validating, fencing, replaying…")
        try:
            result = replay_events(
                db,
                events,
                apply=apply,
                on_conflict=policy,
                margin=fence_margin,
                malformed=unreadable,
                on_progress=lambda n: status.update(f"replaying… {n:,} events"),
            )
        except ReplayInterrupted as stopped:
            _show(stopped.result, as_json, stopped.exit_code, html)
            raise
    _show(result, as_json, result.exit_code, html)
    raise typer.Exit(result.exit_code)


def _show(result: ReplayResult, as_json: bool, exit_code: int, html: Path | None) -> None:
    """The result, its JSON's exit_code the process's own (a run stopped part way exits 2 whatever it did)."""
    from drledger.report import print_replay

    summary = {**result.as_json(), "exit_code": int(exit_code)}
    if html is not None:
        from drledger.report_html import write_replay_html

        write_replay_html(html, summary)
    if as_json:
        print_json(summary)
    else:
        print_replay(out, result)
