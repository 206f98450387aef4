"""The drledger command line: parse, call the library, render. No logic of its own lives here.

Exit codes: 0 success; 1 the command ran and found a problem (a failed check); 2 bad input or an
unreachable database, ledger or broker (one sentence on stderr, no traceback); 75 the relay stopped on
a transient failure (restart it); 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from drledger import __version__
from drledger.drill import SCENARIO_NAMES
from drledger.errors import DrledgerError
from drledger.margins import DEFAULT_MARGIN

#: Exit code of a failure drledger did not foresee (a bug): never a traceback, and never taken for 1 or 2.
INTERNAL_ERROR = 70

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.status import Status

    from drledger.drill.run import DrillSettings
    from drledger.fence import FenceResult
    from drledger.reconcile import Report
    from drledger.recovery import ReconcileRequest
    from drledger.relay.engine import RelayStats
    from drledger.replay import ReplayResult

EXIT_HELP = (
    "Exit codes: 0 success; 1 a check failed; 2 bad input or an unreachable database, ledger or broker "
    "(for the relay: an operator is needed); 75 the relay stopped on a transient failure, restart it; "
    "130 interrupted."
)

app = typer.Typer(
    name="drledger",
    help="A DR ledger for replicated databases: capture every committed insert, find what a failover lost, "
    "prove it, replay it.\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
ledger_app = typer.Typer(help="Look into a ledger.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(ledger_app, name="ledger")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="DRLEDGER_DB", help="PostgreSQL DSN (URL or key=value); env DRLEDGER_DB."),
]
LedgerConfigOption = Annotated[
    list[str] | None,
    typer.Option("--ledger-config", help="Ledger client setting key=value (Kafka TLS/SASL…); repeatable."),
]
LedgerConfigFileOption = Annotated[
    list[Path] | None,
    typer.Option("--ledger-config-file", help="A properties file of ledger client settings; repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="SQS/Kinesis: the AWS endpoint to talk to (a VPC endpoint, a local emulator); AWS_ENDPOINT_URL works too.",
    ),
]


def _client_config(
    pairs: list[str] | None, files: list[Path] | None, endpoint_url: str | None = None
) -> dict[str, str]:
    from drledger.config import parse_client_config

    config = parse_client_config(pairs or [], files or [])
    if endpoint_url:
        config["endpoint_url"] = endpoint_url
    return config


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"drledger {__version__}")
        raise typer.Exit(0)


@app.command()
def init(
    db: DbOption,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help='A table to capture: schema.table, or quoted as in SQL ("Sales"."Order"); repeatable.',
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only report what is missing; change nothing.")
    ] = False,
    as_role: Annotated[
        list[str] | None,
        typer.Option(
            "--as",
            help="With --check: also check a role's privileges for its duty, as duty=role "
            "(installer, relay, reader, recoverer; a bare role is the relay); repeatable.",
        ),
    ] = None,
    print_grants: Annotated[
        bool,
        typer.Option(
            "--print-grants",
            help="Print the GRANTs each drledger role needs for these tables, as SQL; change nothing.",
        ),
    ] = False,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="With --print-grants: a role's name, as duty=role (default drledger_installer, "
            "drledger_relay, drledger_reader, drledger_recoverer); repeatable.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Install the outbox, the publication and a capture trigger on each table (safe to run twice).

    The capture trigger runs with drledger's rights (SECURITY DEFINER), so the application's role needs
    nothing new. A partitioned table is captured with all its partitions. With --check, report what the
    relay still needs (wal_level, replication privilege, outbox, triggers) and, with --as, which
    privileges a role lacks and the GRANT that fixes each; exit 1 if anything is missing. With
    --print-grants, print every role's GRANTs (see the README's "Least privilege").
    """
    from drledger.roles import DEFAULT_ROLES, parse_roles
    from drledger.source import open_source

    tables = table or []
    source = open_source(db)
    if print_grants:
        script = source.grant_script({**DEFAULT_ROLES, **parse_roles(role or [])}, tables)
        out.print(script, markup=False, highlight=False, end="")
        return
    if not check:
        if not tables:
            raise DrledgerError("Name at least one table to capture with --table schema.table.")
        installed = source.install(tables)
        if as_json:
            out.print_json(json.dumps({"installed": installed}))
        else:
            for name in installed:
                out.print(Text("✓ ", style="green") + Text(f"capturing inserts into {name}"))
        return
    # Without --as, this role's privileges are checked as the relay's.
    findings = [*source.check(tables), *source.check_roles(parse_roles(as_role or []), tables)]
    if as_json:
        out.print_json(
            json.dumps({"ok": all(f.ok for f in findings), "findings": [f.__dict__ for f in findings]})
        )
    else:
        for finding in findings:
            mark = Text("✓ ", style="green") if finding.ok else Text("✗ ", style="red")
            out.print(mark + Text(finding.what + (f" — {finding.fix}" if finding.fix else "")))
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


RELAY_EXIT = (
    "Exit codes: 0 stopped by SIGINT/SIGTERM; 75 a transient failure (database or ledger unreachable, connection "
    "lost): restart it, it resumes where the ledger left off; 2 an operator is needed (bad input, the state "
    "directory belongs to another database, the replication slot was lost, a privilege or the outbox is missing)."
)


@app.command(epilog=RELAY_EXIT)
def relay(
    db: DbOption,
    ledger: Annotated[
        str, typer.Option("--ledger", envvar="DRLEDGER_LEDGER", help="Ledger URL to publish to.")
    ],
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    slot: Annotated[
        str, typer.Option(help="Replication slot name (created on first start).")
    ] = "drledger_slot",
    state_dir: Annotated[
        Path,
        typer.Option(
            help="Where Debezium's offsets are kept (0700), tied to this database and slot; keep it across restarts."
        ),
    ] = Path(".drledger"),
    snapshot: Annotated[
        str,
        typer.Option(
            help="On first start: 'initial' publishes the outbox rows already there; 'no_data' does not."
        ),
    ] = "initial",
    create: Annotated[
        bool,
        typer.Option(
            "--create", help="Create the Kafka topic, SQS queue or Kinesis stream if it does not exist."
        ),
    ] = False,
    heartbeat: Annotated[
        str, typer.Option(help="Heartbeat interval, so an idle outbox never pins WAL.")
    ] = "1s",
    backfill_since: Annotated[
        str | None,
        typer.Option(
            "--backfill-since",
            help="After failover: first publish the outbox rows committed since this time that the ledger lacks "
            "(ISO time or how long ago), then stream. The slot is created before the backfill, so nothing falls "
            "between the two.",
        ),
    ] = None,
    ledger_timeout: Annotated[
        str,
        typer.Option(
            help="How long to retry a batch the ledger does not take before exiting 75 (for a supervisor to restart)."
        ),
    ] = "2m",
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Debezium's INFO lines and every stack trace, for debugging."),
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Serve the relay's Prometheus /metrics on HOST:PORT (events published, batch and publish "
            "latency, last commit relayed, engine up).",
        ),
    ] = None,
) -> None:
    """Stream every committed outbox row to the ledger, at least once, until SIGINT/SIGTERM.

    Runs Debezium's embedded PostgreSQL connector (pgoutput) on drledger.outbox. A batch is marked
    processed only after the ledger acknowledged it, so a crash loses nothing; a restart with the same
    --state-dir and --slot resumes where the ledger left off (duplicates possible, removed by event id).
    If the engine stops for any other reason than a signal, the relay exits within seconds with one
    sentence and an exit code that says whether to restart it (75) or call an operator (2).
    """
    from drledger.relay.runner import RelayRequest, serve
    from drledger.streaming import RelaySettings
    from drledger.timeutil import parse_duration, parse_instant

    if snapshot not in ("initial", "no_data"):
        raise DrledgerError("--snapshot must be 'initial' or 'no_data'.")
    if verbose:
        logging.getLogger("drledger").setLevel(logging.DEBUG)
    request = RelayRequest(
        dsn=db,
        ledger_url=ledger,
        settings=RelaySettings(
            slot=slot,
            state_dir=state_dir,
            snapshot=snapshot,
            heartbeat_ms=int(parse_duration(heartbeat) * 1000),
            ledger_timeout_s=parse_duration(ledger_timeout),
        ),
        client_config=_client_config(ledger_config, ledger_config_file, endpoint_url),
        create=create,
        backfill_since_ms=parse_instant(backfill_since) if backfill_since is not None else None,
        verbose=verbose,
        metrics_listen=parse_listen(metrics_listen) if metrics_listen is not None else None,
    )
    progress = _RelayProgress()
    try:
        stats = serve(request, on_batch=progress.maybe_print)
    except DrledgerError as exc:
        _end_relay(exc.exit_code, exc)
        raise
    if stats is not None:
        logging.getLogger("drledger.relay").info("stopped after %d events", stats.events)
    _end_relay(0, None)


def _end_relay(code: int, error: DrledgerError | None) -> None:
    """End a relay process whose JVM ran: say why, flush, and exit without waiting for Java's threads.

    Python's exit would wait for every non-daemon Java thread the engine left (DestroyJavaVM), possibly
    forever; the offsets are already as the ledger acknowledged them, so there is nothing left to wait
    for. Without a JVM, the ordinary exit (main) does the same job.
    """
    jpype = sys.modules.get("jpype")
    if jpype is None or not jpype.isJVMStarted():
        return
    import os

    if error is not None:
        err.print(f"drledger: {error}", markup=False, highlight=False, soft_wrap=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _RelayProgress:
    """A status line at most every few seconds: a long-running relay should say it is alive."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.last = 0.0

    def maybe_print(self, stats: RelayStats) -> None:
        import time

        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        lag = stats.last_lag_ms
        lag_text = f", last commit→ledger {lag} ms" if lag is not None else ""
        logging.getLogger("drledger.relay").info(
            "relayed %d events (%.0f/s)%s", stats.events, stats.rate(), lag_text
        )


@app.command()
def prune(
    db: DbOption,
    older_than: Annotated[str, typer.Option("--older-than", help="Age to keep, e.g. 7d or 36h.")],
    apply: Annotated[bool, typer.Option("--apply", help="Delete; without it, only count.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete outbox rows older than --older-than (dry run unless --apply).

    Keep at least as long as a failover may take to notice: reconcile compares the DR database's
    copy of the outbox with the ledger, so what is pruned there can no longer be proven present.
    """
    from drledger.source import open_source
    from drledger.timeutil import format_instant, parse_duration, parse_instant

    parse_duration(older_than)
    cutoff = parse_instant(older_than)
    count = open_source(db).prune(cutoff, apply=apply)
    if as_json:
        out.print_json(json.dumps({"cutoff": format_instant(cutoff), "rows": count, "applied": apply}))
    elif apply:
        out.print(f"deleted {count} outbox rows created before {format_instant(cutoff)}")
    else:
        out.print(
            f"would delete {count} outbox rows created before {format_instant(cutoff)} (dry run; add --apply)"
        )


ReconcileLedgers = Annotated[
    list[str] | None,
    typer.Option(
        "--ledger", envvar="DRLEDGER_LEDGER", help="Ledger URL to read; repeat for a topic and its mirror."
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        help="Window start (ISO time or how long ago); default: the DR database's last commit minus --lookback."
    ),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Window end (ISO time, 'now' or how long ago); default: now.")
]
SkewOption = Annotated[str, typer.Option(help="Clock-skew margin: both sides are read this much wider.")]
LookbackOption = Annotated[
    str, typer.Option(help="How far before the DR database's last commit the default window starts.")
]


def _reconcile_request(
    ledger: list[str] | None,
    db: str,
    since: str | None,
    until: str | None,
    skew: str,
    lookback: str,
    ledger_config: list[str] | None,
    ledger_config_file: list[Path] | None,
    endpoint_url: str | None,
) -> ReconcileRequest:
    from drledger.recovery import ReconcileRequest
    from drledger.timeutil import parse_duration, parse_instant

    return ReconcileRequest(
        ledger_urls=ledger or [],
        dsn=db,
        since_ms=parse_instant(since) if since else None,
        until_ms=parse_instant(until) if until else None,
        skew_ms=int(parse_duration(skew) * 1000),
        lookback_ms=int(parse_duration(lookback) * 1000),
        client_config=_client_config(ledger_config, ledger_config_file, endpoint_url),
    )


def _run_reconcile(request: ReconcileRequest) -> Report:
    from drledger.recovery import run_reconcile

    with err.status("reconciling the ledger with the DR database…") as status:
        return run_reconcile(
            request, on_progress=lambda n: status.update(f"reconciling… {n:,} ledger records read")
        )


RECONCILE_EXIT = (
    "Exit codes: 0 nothing missing; 1 recoverable loss found; 3 something needs a human (mismatches, "
    "events missing from the ledger, malformed records); 2 bad input or a connection error."
)


@app.command(epilog=RECONCILE_EXIT)
def reconcile(
    db: DbOption,
    ledger: ReconcileLedgers = None,
    since: SinceOption = None,
    until: UntilOption = None,
    skew: SkewOption = "5s",
    lookback: LookbackOption = "10m",
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

    request = _reconcile_request(
        ledger, db, since, until, skew, lookback, ledger_config, ledger_config_file, endpoint_url
    )
    report = _run_reconcile(request)
    summary = report_json(report, ledgers=request.ledger_urls, db=db)
    if save is not None:
        save_report(save, summary, report)
    if html is not None:
        from drledger.report_html import write_html

        write_html(html, summary, report)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        print_summary(out, summary)
    raise typer.Exit(report.exit_code)


REPLAY_EXIT = (
    "Exit codes: 0 done (or, in a dry run, nothing to refuse); 3 something was not written and needs a human "
    "(conflicts, refused or conflicting events, unreadable records, keys that could not be fenced); 2 bad input "
    "or a connection error (a run stopped part way prints what it committed; run it again to resume)."
)


@app.command(epilog=REPLAY_EXIT)
def replay(
    db: DbOption,
    ledger: ReconcileLedgers = None,
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
    skew: SkewOption = "5s",
    lookback: LookbackOption = "10m",
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
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
    from drledger.replay import OnConflict, ReplayInterrupted
    from drledger.replay import replay as replay_events
    from drledger.runbook import lost_events

    policy = OnConflict.parse(on_conflict)
    request = None
    if from_file is None:
        request = _reconcile_request(
            ledger, db, since, until, skew, lookback, ledger_config, ledger_config_file, endpoint_url
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
            _print_replay(stopped.result, as_json)
            raise
    _print_replay(result, as_json)
    raise typer.Exit(result.exit_code)


def _print_replay(result: ReplayResult, as_json: bool) -> None:
    from rich.text import Text

    if as_json:
        out.print_json(json.dumps(result.as_json()))
        return
    if result.dry_run:
        out.print(
            f"would replay {len(result.plan)} transactions: {result.applied} rows would be applied, "
            f"{result.present} are already present, {result.already_replayed} were replayed before, "
            f"{len(result.conflicts)} conflicts, {len(result.refused)} refused (dry run; add --apply)"
        )
    else:
        out.print(
            f"replayed {result.transactions} transactions: {result.applied} rows applied, {result.present} already "
            f"present, {result.already_replayed} replayed before, {len(result.conflicts)} conflicts, "
            f"{len(result.refused)} refused"
        )
    for name, outcomes in sorted(result.by_table.items()):
        out.print(Text(f"  {name}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.items()))))
    for conflict in result.conflicts[:50]:
        out.print(
            Text("conflict ", style="red")
            + Text(f"{conflict.table} key {conflict.key} ({conflict.event_id}): {conflict.why}")
        )
        out.print(Text(f"  ledger:  {conflict.ledger_row}"))
        if conflict.current_row is not None:
            out.print(Text(f"  current: {conflict.current_row}"))
    for refusal in result.refused[:50]:
        event = refusal.event
        out.print(
            Text("refused ", style="red")
            + Text(f"{event.table} key {event.key} ({event.event_id}): {refusal.reason}")
        )
    for group in result.ambiguous[:50]:
        ids = ", ".join(e.event_id for e in group.events)
        out.print(
            Text("held back ", style="red") + Text(f"{group.table} key {group.key}: {group.reason} ({ids})")
        )
    for record in result.malformed[:20]:
        out.print(Text("unreadable ", style="yellow") + Text(f"{record.position}: {record.reason}"))
    hidden = (
        max(0, len(result.conflicts) - 50)
        + max(0, len(result.refused) - 50)
        + max(0, len(result.ambiguous) - 50)
    )
    if hidden:
        out.print(f"… and {hidden} more (see --json)")
    _print_fences(result.fence, moved_only=True, dry_run=result.dry_run)


def _print_fences(fence: FenceResult, *, moved_only: bool, dry_run: bool = False) -> None:
    from rich.text import Text

    verb = "would fence" if dry_run else "fenced"
    for item in fence.fences:
        if item.moved:
            out.print(
                Text(f"{verb} {item.sequence} ({item.table}.{item.column}): {item.before} → {item.after}")
            )
        elif not moved_only:
            out.print(Text(f"{item.sequence} ({item.table}.{item.column}): already at {item.before}"))
    for gap in fence.unfenced:
        out.print(
            Text("not fenced ", style="red")
            + Text(
                f"{gap.sequence} ({gap.table}.{gap.column}): {gap.keys} keys, the highest {gap.highest}: {gap.reason}"
            )
        )


FENCE_EXIT = (
    "Exit codes: 0 every sequence is past every proven key; 3 some keys could not be fenced (beyond the "
    "sequence's range, or a descending sequence); 2 bad input or a connection error."
)


@app.command(epilog=FENCE_EXIT)
def fence(
    db: DbOption,
    ledger: ReconcileLedgers = None,
    margin: Annotated[
        int, typer.Option(help="How far past the highest known key to move each sequence (0 to 1e9).")
    ] = DEFAULT_MARGIN,
    since: SinceOption = None,
    until: UntilOption = None,
    lookback: LookbackOption = "10m",
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
    from drledger.runbook import fence_from_ledger

    validate_margin(margin)
    request = _reconcile_request(
        ledger, db, since, until, "0s", lookback, ledger_config, ledger_config_file, endpoint_url
    )
    if not request.ledger_urls:
        raise DrledgerError("Name at least one ledger with --ledger URL.")
    with err.status("reading the ledger and fencing…"):
        result, unproven = fence_from_ledger(request, margin, apply=not dry_run)
    if as_json:
        out.print_json(
            json.dumps(
                {**result.as_json(every_sequence=True), "unproven_events": unproven, "dry_run": dry_run}
            )
        )
    else:
        _print_fences(result, moved_only=False, dry_run=dry_run)
        if unproven:
            out.print(f"{unproven} ledger events could not be proven and were not used (replay reports each)")
    if result.unfenced:
        raise typer.Exit(3)


WATCH_EXIT = (
    "Exit codes: 0 stopped by SIGINT/SIGTERM (with --once: all is well); 1 with --once: a problem was found "
    "(a side unreadable, the relay down, events missing from the ledger, events a failover now would lose "
    "for good); 2 bad input (one sentence). An outage of the primary, the replica or the ledger is a "
    "gauge and a log line, never an exit."
)


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9187', '[::1]:9187' or ':9187' (loopback) → (host, port)."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DrledgerError(f"--listen '{text}' is not an address; write it like 127.0.0.1:9187.")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


@app.command(epilog=WATCH_EXIT)
def watch(
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="DRLEDGER_DB", help="The primary's DSN; env DRLEDGER_DB."),
    ] = None,
    ledger: Annotated[
        str | None, typer.Option("--ledger", envvar="DRLEDGER_LEDGER", help="The ledger's URL.")
    ] = None,
    replica: Annotated[
        str | None,
        typer.Option(
            "--replica",
            envvar="DRLEDGER_REPLICA",
            help="The DR replica's DSN (a hot standby is readable); without it, no readiness gauges.",
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="Serve /metrics here (HOST:PORT; port 0 picks a free one).")
    ] = "127.0.0.1:9187",
    slot: Annotated[str, typer.Option(help="The relay's replication slot.")] = "drledger_slot",
    relay_metrics: Annotated[
        str | None,
        typer.Option(
            "--relay-metrics",
            help="The relay's /metrics URL (relay --metrics-listen): its engine state and last publish.",
        ),
    ] = None,
    interval: Annotated[str, typer.Option(help="Time between two measurements.")] = "5s",
    grace: Annotated[
        str,
        typer.Option(
            help="How long the relay has to bring a commit into the ledger before it counts as missing."
        ),
    ] = "30s",
    skew: SkewOption = "5s",
    lookback: Annotated[
        str, typer.Option(help="How far back a freshly started watcher checks the ledger's completeness.")
    ] = "10m",
    once: Annotated[
        bool,
        typer.Option("--once", help="Measure once, print, and exit 1 if a problem was found (for cron)."),
    ] = False,
    print_rules: Annotated[
        bool, typer.Option("--print-rules", help="Print drledger's Prometheus alert rules and exit.")
    ] = False,
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every few seconds: would the ledger save us if the primary region died now? Gauges on /metrics.

    Compares the primary's outbox, the DR replica's and the ledger, by index only: events missing from
    the ledger (older than --grace), what a failover now would lose (at risk: not yet on the replica),
    how much of that the ledger holds (recoverable), the rest (unrecoverable if now), lags, the relay's
    liveness and its slot's WAL. One log line whenever a state changes. `--print-rules` prints the
    Prometheus alert rules for these gauges.
    """
    from importlib.resources import files

    if print_rules:
        rules = files("drledger.watch").joinpath("rules/drledger-rules.yml").read_text()
        out.print(rules, markup=False, highlight=False, end="")
        return
    import signal
    import threading

    from drledger.ledger import parse_ledger_url
    from drledger.timeutil import parse_duration
    from drledger.watch.cycle import Watcher, WatchSettings
    from drledger.watch.service import first_misconfiguration, run_watch

    if not db:
        raise DrledgerError("Name the primary with --db DSN (or DRLEDGER_DB).")
    if not ledger:
        raise DrledgerError("Name the ledger with --ledger URL (or DRLEDGER_LEDGER).")
    parse_ledger_url(ledger)
    address = parse_listen(listen)
    if relay_metrics is not None and not relay_metrics.startswith(("http://", "https://")):
        raise DrledgerError(f"--relay-metrics '{relay_metrics}' is not an http:// URL.")
    durations = {
        name: parse_duration(text)
        for name, text in (("interval", interval), ("grace", grace), ("skew", skew), ("lookback", lookback))
    }
    if durations["interval"] < 0.1:
        raise DrledgerError("--interval must be at least 100ms.")
    settings = WatchSettings(
        primary_dsn=db,
        ledger_url=ledger,
        replica_dsn=replica,
        slot=slot,
        relay_metrics_url=relay_metrics,
        client_config=_client_config(ledger_config, ledger_config_file, endpoint_url),
        interval_s=durations["interval"],
        grace_s=durations["grace"],
        skew_s=durations["skew"],
        lookback_s=durations["lookback"],
    )
    if once:
        watcher = Watcher(settings)
        try:
            snap = watcher.cycle()
        finally:
            watcher.close()
        problem = first_misconfiguration(snap)
        if problem is not None:
            raise problem
        if as_json:
            out.print_json(json.dumps({**snap.as_json(), "problems": snap.problems}))
        else:
            _print_snapshot(snap)
        if snap.problems:
            raise typer.Exit(1)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log = logging.getLogger("drledger.watch")

    def listening(port: int) -> None:
        log.info(
            "serving /metrics on http://%s:%d/metrics (every %gs)", address[0], port, settings.interval_s
        )

    run_watch(
        settings,
        stop,
        listen=address,
        on_listening=listening,
        on_cycle=(lambda snap: out.print_json(json.dumps(snap.as_json()))) if as_json else None,
    )


def _print_snapshot(snap: object) -> None:
    from drledger.watch.cycle import Snapshot

    assert isinstance(snap, Snapshot)
    table = Table(title="drledger watch", show_header=False)

    def row(name: str, value: object) -> None:
        table.add_row(name, Text("n/a" if value is None else str(value)))

    for name, side in (("primary", snap.primary), ("replica", snap.replica), ("ledger", snap.ledger)):
        if side is not None:
            row(name, "up" if side.up else f"DOWN: {side.error}")
    row("relay", None if snap.relay.up is None else ("alive" if snap.relay.up else "DOWN"))
    row("missing in ledger", snap.missing_in_ledger)
    ready = snap.readiness
    row("at risk (not yet on the replica)", ready.at_risk if ready else None)
    row("recoverable (in the ledger)", ready.recoverable if ready else None)
    row("unrecoverable if the primary died now", ready.unrecoverable_if_now if ready else None)
    row("replica lag (s)", snap.replica_lag_s)
    row("ledger lag (s)", snap.ledger_lag_s)
    if snap.slot is not None:
        row(
            "slot",
            f"{'active' if snap.slot.active else 'inactive'}, WAL {snap.slot.wal_status}, "
            f"retained {snap.slot.retained_bytes} bytes",
        )
    out.print(table)
    for problem in snap.problems:
        out.print(Text("problem ", style="red") + Text(problem))


DRILL_EXIT = "Exit codes: 0 the verdict is ok; 1 the drill ran and its verdict failed; 2 it could not run."


@app.command(epilog=DRILL_EXIT)
def drill(
    tps: Annotated[float, typer.Option(help="Insert transactions per second.")] = 100,
    duration: Annotated[str, typer.Option(help="How long the workload runs before the disaster.")] = "30s",
    lag: Annotated[
        str, typer.Option(help="Replication lag: a range draws a value (2-5s), or fixed (3s).")
    ] = "2-5s",
    ledger: Annotated[
        str | None,
        typer.Option(
            "--ledger", help="Ledger URL; default: an embedded SQLite ledger in the drill's temp dir."
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="Run rows of the spec's DR scenarios table instead (one, several comma-separated, or "
            "'all'): " + ", ".join(SCENARIO_NAMES)
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the drawn lag, to repeat a run.")] = None,
    warmup: Annotated[
        int,
        typer.Option(help="Rows pushed through the relay before measuring, so its JVM is warm (0: none)."),
    ] = 20_000,
    engine: Annotated[
        str,
        typer.Option(
            help="The database engine: 'postgresql', or 'mysql' (MariaDB servers standing in for Aurora MySQL)."
        ),
    ] = "postgresql",
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the clusters afterwards and print how to connect.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the drill as one self-contained page: commits, frontiers, the lost window, "
            "what was recovered, and drledger watch's readiness gauges over time.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The disaster, for real, on this machine: what replication alone loses and what drledger gets back.

    Starts a primary and a replica trailing it by --lag, the relay into a ledger, and inserts at --tps with
    every acknowledged commit recorded client-side. Then the primary region dies mid-workload (in-flight WAL
    dropped, primary and relay killed), the replica is promoted, and reconcile, fence and replay run; the
    promoted database is checked against the ground truth. Everything it starts is stopped and removed,
    also on Ctrl-C, unless --keep.
    """
    from drledger.drill.run import DrillSettings
    from drledger.timeutil import parse_duration

    settings = DrillSettings(
        warmup_rows=warmup,
        tps=tps,
        duration_s=parse_duration(duration),
        lag=lag,
        ledger_url=ledger,
        seed=seed,
        keep=keep,
        engine=engine,
    )
    from drledger.drill.run import rig_for

    rig_for(engine)  # a wrong --engine is one sentence before anything starts
    if tps <= 0 or settings.duration_s <= 0:
        raise DrledgerError("--tps and --duration must be positive.")
    if scenario is not None:
        if html is not None:
            raise DrledgerError("--html draws one drill; run it without --scenario.")
        _drill_scenarios(scenario, settings, as_json)
        return
    from drledger.drill.present import comparison_table
    from drledger.drill.run import run_drill

    with err.status("drill starting…") as status:
        result = run_drill(settings, progress=_phases(status))
    if html is not None:
        from drledger.drill.html import write_drill_html

        write_drill_html(html, result, tps)
    if as_json:
        out.print_json(json.dumps(result.as_json()))
    else:
        out.print(comparison_table(result, tps))
        out.print(f"verdict: [bold]{result.verdict}[/] (drill took {result.total_seconds:g} s)")
        if result.keep:
            out.print(f"kept: promoted DR at {result.keep['promoted_dr']}, ledger {result.keep['ledger']}")
            out.print(f"stop it with: {result.keep['stop']}", markup=False)
    if result.verdict != "ok":
        raise typer.Exit(1)


def _phases(status: Status) -> Callable[[str], None]:
    """Each phase: the spinner's text, and a timestamped line that stays on screen."""

    def show(phase: str) -> None:
        status.update(phase)
        err.log(phase)

    return show


def _drill_scenarios(name: str, settings: DrillSettings, as_json: bool) -> None:
    from drledger.drill.scenarios import run_scenarios, scenario_table

    asked = [n.strip() for n in name.split(",") if n.strip()]
    names = list(SCENARIO_NAMES) if asked == ["all"] else list(dict.fromkeys(asked))
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown or not names:
        raise DrledgerError(
            f"Unknown scenario '{(unknown or [name])[0]}'; choose one or more of: {', '.join(SCENARIO_NAMES)}, "
            "or all."
        )
    with err.status("scenarios starting…") as status:
        outcomes = run_scenarios(names, settings, progress=_phases(status))
    if as_json:
        out.print_json(json.dumps([o.as_json() for o in outcomes]))
    else:
        out.print(scenario_table(outcomes))
    if not all(o.passed for o in outcomes):
        raise typer.Exit(1)


@ledger_app.command("inspect")
def ledger_inspect(
    urls: Annotated[list[str], typer.Argument(help="One or more ledger URLs, read as one ledger.")],
    since: Annotated[str | None, typer.Option(help="Window start: ISO time or how long ago (15m).")] = None,
    until: Annotated[str | None, typer.Option(help="Window end: ISO time, 'now' or how long ago.")] = None,
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a ledger holds in a window: events, distinct ids, duplicates, malformed records, time span, tables.

    Several URLs (a topic and its MirrorMaker 2 copy, say) are read as one ledger; duplicates across
    them are counted, not errors.
    """
    from drledger.census import take_census
    from drledger.ledger import read_all
    from drledger.timeutil import parse_instant

    config = _client_config(ledger_config, ledger_config_file, endpoint_url)
    since_ms = parse_instant(since) if since else None
    until_ms = parse_instant(until) if until else None
    from drledger.recovery import open_ledgers

    ledgers = open_ledgers(urls, config)
    try:
        with err.status("reading the ledger…") as status:
            census = take_census(
                read_all(ledgers, since_ms, until_ms),
                on_record=lambda n: status.update(f"reading the ledger… {n:,} records"),
            )
    finally:
        for ledger in ledgers:
            ledger.close()
    if as_json:
        out.print_json(json.dumps(census.as_json()))
        return
    from rich.text import Text

    summary = census.as_json()
    # Table names and samples come from the ledger: shown as text, never read as markup.
    table = Table(title=Text("ledger " + ", ".join(x.display_url for x in ledgers)), show_header=False)
    for key in (
        "events",
        "distinct",
        "duplicates",
        "conflicting",
        "malformed",
        "first_commit",
        "last_commit",
    ):
        table.add_row(
            key, Text(str(summary[key]), style="bold red" if key == "conflicting" and summary[key] else "")
        )
    for name, count in summary["tables"].items():
        table.add_row(Text(f"  {name}"), str(count))
    out.print(table)
    for sample in census.malformed_samples:
        out.print(
            Text("malformed ", style="yellow")
            + Text(f"{sample.position}: {sample.reason}: {sample.sample!r}")
        )


def main() -> None:
    # drledger's own progress lines at INFO; libraries (botocore, Debezium's bridge) only when they warn.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("drledger").setLevel(logging.INFO)
    try:
        app()
    except DrledgerError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the last line of defence: one sentence, never a traceback
        from drledger.source import explain_failure

        if os.environ.get("DRLEDGER_DEBUG"):
            raise
        explained = explain_failure(exc)
        if explained is not None:
            _fail(str(explained), explained.exit_code)
        _fail(
            f"An unexpected {type(exc).__name__} stopped drledger: {exc}. "
            "Set DRLEDGER_DEBUG=1 to see where, and report it.",
            INTERNAL_ERROR,
        )


def _fail(message: str, code: int) -> None:
    err.print(f"drledger: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
