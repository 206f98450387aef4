"""`drledger watch`: would the ledger save us if the primary region died now? Gauges on /metrics."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from drledger.cli.common import client_config, out, print_json, print_text
from drledger.cli.options import (
    EndpointOption,
    JsonOption,
    LedgerConfigFileOption,
    LedgerConfigOption,
    SkewOption,
)
from drledger.connect import DEFAULT_NAME
from drledger.errors import DrledgerError, ExitCode
from drledger.margins import DEFAULT_LOOKBACK, DEFAULT_SKEW
from drledger.streaming import DEFAULT_SLOT


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
    slot: Annotated[str, typer.Option(help="The relay's replication slot.")] = DEFAULT_SLOT,
    relay_metrics: Annotated[
        str | None,
        typer.Option(
            "--relay-metrics",
            help="The relay's /metrics URL (relay --metrics-listen): its engine state and last publish.",
        ),
    ] = None,
    connect_url: Annotated[
        str | None,
        typer.Option(
            "--connect-url",
            help="The relay is a Kafka Connect connector: Connect's REST URL; its state is the relay's.",
        ),
    ] = None,
    connector: Annotated[
        str, typer.Option(help="With --connect-url: the connector's name (connect-config --name).")
    ] = DEFAULT_NAME,
    interval: Annotated[str, typer.Option(help="Time between two measurements.")] = "5s",
    grace: Annotated[
        str,
        typer.Option(
            help="How long the relay has to bring a commit into the ledger before it counts as missing."
        ),
    ] = "30s",
    skew: SkewOption = DEFAULT_SKEW,
    lookback: Annotated[
        str, typer.Option(help="How far back a freshly started watcher checks the ledger's completeness.")
    ] = DEFAULT_LOOKBACK,
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
        print_text(rules)
        return
    import signal
    import threading

    from drledger.ledger import parse_ledger_url
    from drledger.metrics_endpoint import parse_listen
    from drledger.report import print_snapshot
    from drledger.watch.cycle import Watcher, WatchSettings
    from drledger.watch.service import first_misconfiguration, run_watch

    if not db:
        raise DrledgerError("Name the primary with --db DSN (or DRLEDGER_DB).")
    if not ledger:
        raise DrledgerError("Name the ledger with --ledger URL (or DRLEDGER_LEDGER).")
    parse_ledger_url(ledger)
    address = parse_listen(listen)
    settings = WatchSettings.from_options(
        primary_dsn=db,
        ledger_url=ledger,
        replica_dsn=replica,
        slot=slot,
        relay_metrics_url=relay_metrics,
        client_config=client_config(ledger_config, ledger_config_file, endpoint_url),
        interval=interval,
        grace=grace,
        skew=skew,
        lookback=lookback,
        connect_url=connect_url,
        connector=connector,
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
            print_json(
                {**snap.as_json(), "problems": snap.problems},
                exit_code=ExitCode.PROBLEM_FOUND if snap.problems else ExitCode.SUCCESS,
            )
        else:
            print_snapshot(out, snap)
        if snap.problems:
            raise typer.Exit(ExitCode.PROBLEM_FOUND)
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
        on_cycle=(lambda snap: print_json(snap.as_json())) if as_json else None,
    )
