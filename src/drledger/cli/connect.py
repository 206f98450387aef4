"""`drledger connect-config`: the connector configuration for a Kafka Connect cluster, and applying it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from drledger.cli.common import out, print_json, print_text
from drledger.cli.options import DbOption, JsonOption
from drledger.connect import DEFAULT_CONNECT_SLOT, DEFAULT_NAME
from drledger.errors import DrledgerError, ExitCode


def connect_config(
    db: DbOption,
    ledger: Annotated[
        str,
        typer.Option("--ledger", envvar="DRLEDGER_LEDGER", help="The ledger topic, kafka://host:port/topic."),
    ],
    name: Annotated[str, typer.Option(help="The connector's name in the Connect cluster.")] = DEFAULT_NAME,
    slot: Annotated[
        str,
        typer.Option(
            help="The connector's replication slot (MySQL: its server id's name); not the embedded relay's."
        ),
    ] = DEFAULT_CONNECT_SLOT,
    snapshot: Annotated[
        str,
        typer.Option(
            help="initial: publish the outbox rows already there on the first start; no_data: only new."
        ),
    ] = "initial",
    heartbeat: Annotated[
        str, typer.Option(help="Heartbeat interval, so an idle outbox never pins WAL.")
    ] = "1s",
    password_ref: Annotated[
        str | None,
        typer.Option(
            "--password-ref",
            help="A Connect config-provider reference for the password, e.g. ${file:/etc/connect/db.properties:password}.",
        ),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Validate, then create or update the connector through --connect-url."),
    ] = False,
    connect_url: Annotated[
        str | None, typer.Option("--connect-url", help="Kafka Connect's REST URL, e.g. http://connect:8083.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the Debezium connector configuration that makes a Kafka Connect cluster the relay.

    The embedded relay's connector (publication, slot, heartbeat) with Debezium's outbox EventRouter
    routing every event to the ledger topic, where every drledger reader reads it. The password is
    printed masked (or as --password-ref); --apply sends it to Connect, never to the terminal.
    """
    from drledger.connect.config import ConnectorRequest, connector_config, shown
    from drledger.connect.rest import check_connect_url, put_config, validate
    from drledger.timeutil import parse_duration

    if apply and connect_url is None:
        raise DrledgerError("--apply needs --connect-url, Kafka Connect's REST URL (http://host:8083).")
    url = check_connect_url(connect_url) if connect_url is not None else None
    request = ConnectorRequest(
        db=db,
        ledger=ledger,
        name=name,
        slot=slot,
        snapshot=snapshot,
        heartbeat_ms=int(parse_duration(heartbeat) * 1000),
        password_ref=password_ref,
    )
    config = connector_config(request)
    created = None
    if apply and url is not None:
        validate(url, config)
        created = put_config(url, name, config)
    if as_json:
        print_json(
            {"name": name, "config": shown(config), "applied": apply, "created": created},
            exit_code=ExitCode.SUCCESS,
        )
    elif apply:
        out.print(f"{'created' if created else 'updated'} the connector {name} on {url}", markup=False)
    else:
        print_text(json.dumps(shown(config), indent=2) + "\n")
