"""The options several commands share, defined once: the database, the ledger and its client
settings, --json, and the reconcile window."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="DRLEDGER_DB",
        help="The database: a postgresql:// or mysql:// URL, or a PostgreSQL key=value DSN; env DRLEDGER_DB.",
    ),
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

# The reconcile window (reconcile, replay, fence).
ReadLedgers = Annotated[
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
