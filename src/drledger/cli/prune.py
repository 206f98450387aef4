"""`drledger prune`: delete outbox rows older than a given age."""

from __future__ import annotations

from typing import Annotated

import typer

from drledger.cli.common import out, print_json
from drledger.cli.options import DbOption, JsonOption
from drledger.errors import ExitCode


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
        print_json(
            {"cutoff": format_instant(cutoff), "rows": count, "applied": apply}, exit_code=ExitCode.SUCCESS
        )
    elif apply:
        out.print(f"deleted {count} outbox rows created before {format_instant(cutoff)}")
    else:
        out.print(
            f"would delete {count} outbox rows created before {format_instant(cutoff)} (dry run; add --apply)"
        )
