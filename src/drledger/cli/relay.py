"""`drledger relay`: stream every committed outbox row to the ledger until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drledger.cli.common import client_config, err
from drledger.cli.options import DbOption, EndpointOption, LedgerConfigFileOption, LedgerConfigOption
from drledger.errors import DrledgerError, ExitCode
from drledger.streaming import DEFAULT_MAX_TRANSACTION_CHANGES, DEFAULT_SLOT

if TYPE_CHECKING:
    from drledger.relay.engine import RelayStats


def relay(
    db: DbOption,
    ledger: Annotated[
        str, typer.Option("--ledger", envvar="DRLEDGER_LEDGER", help="Ledger URL to publish to.")
    ],
    ledger_config: LedgerConfigOption = None,
    ledger_config_file: LedgerConfigFileOption = None,
    endpoint_url: EndpointOption = None,
    slot: Annotated[str, typer.Option(help="Replication slot name (created on first start).")] = DEFAULT_SLOT,
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
    max_transaction_changes: Annotated[
        int,
        typer.Option(
            help="The changes of one source transaction the relay holds in memory (each with its row images) to publish it "
            "whole; a larger transaction stops the relay (exit 2) before any of it is published.",
        ),
    ] = DEFAULT_MAX_TRANSACTION_CHANGES,
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

    Runs Debezium's embedded connector on drledger.outbox (PostgreSQL: logical decoding with pgoutput;
    MySQL: the binlog). A source transaction's events are published together, once all of them are in
    hand, and marked processed only after the ledger acknowledged them, so a crash loses nothing and
    never leaves part of a transaction in the ledger; a restart with the same --state-dir and --slot resumes where the ledger left off
    (duplicates possible, removed by event id). If the engine stops for any other reason than a signal,
    the relay exits within seconds with one sentence and an exit code that says whether to restart it
    (75) or call an operator (2).
    """
    from drledger.metrics_endpoint import parse_listen
    from drledger.relay.runner import RelayRequest, serve
    from drledger.streaming import RelaySettings
    from drledger.timeutil import parse_instant

    settings = RelaySettings.from_options(
        slot=slot,
        state_dir=state_dir,
        snapshot=snapshot,
        heartbeat=heartbeat,
        ledger_timeout=ledger_timeout,
        max_transaction_changes=max_transaction_changes,
    )
    if verbose:
        logging.getLogger("drledger").setLevel(logging.DEBUG)
    request = RelayRequest(
        dsn=db,
        ledger_url=ledger,
        settings=settings,
        client_config=client_config(ledger_config, ledger_config_file, endpoint_url),
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
    _end_relay(ExitCode.SUCCESS, None)


def _end_relay(code: ExitCode, error: DrledgerError | None) -> None:
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
