"""`drledger ledger inspect`: what a ledger holds in a window."""

from __future__ import annotations

from typing import Annotated

import typer

from drledger.cli.common import client_config, err, out, print_json
from drledger.cli.options import EndpointOption, JsonOption, LedgerConfigFileOption, LedgerConfigOption
from drledger.errors import ExitCode

ledger_app = typer.Typer(help="Look into a ledger.", no_args_is_help=True, rich_markup_mode="markdown")


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
    from drledger.recovery import open_ledgers
    from drledger.report import print_census
    from drledger.timeutil import parse_instant

    config = client_config(ledger_config, ledger_config_file, endpoint_url)
    since_ms = parse_instant(since) if since else None
    until_ms = parse_instant(until) if until else None
    with open_ledgers(urls, config) as ledgers, err.status("reading the ledger…") as status:
        census = take_census(
            read_all(ledgers, since_ms, until_ms),
            on_record=lambda n: status.update(f"reading the ledger… {n:,} records"),
        )
    if as_json:
        print_json(census.as_json(), exit_code=ExitCode.SUCCESS)
        return
    print_census(out, census, [ledger.display_url for ledger in ledgers])
