"""`drledger init`: install the outbox and the capture triggers, check them, or print the GRANTs."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.text import Text

from drledger.cli.common import out, print_json, print_text
from drledger.cli.options import DbOption, JsonOption
from drledger.errors import DrledgerError, ExitCode


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
    phase: Annotated[
        str | None,
        typer.Option(
            "--phase",
            help="With --print-grants: only 'before' (what an administrator runs before init) or 'after' "
            "(what the installer runs once init has made drledger's objects).",
        ),
    ] = None,
    ops: Annotated[
        str | None,
        typer.Option(
            "--ops",
            help="Which changes to capture, comma-separated, insert always among them: insert, update, "
            "delete (all three by default). "
            "Recorded per table; run init again to change it. Replay applies lost updates and deletes, each "
            "only onto the row it changed.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Install the outbox and a capture trigger on each table (safe to run twice).

    On PostgreSQL it also creates the publication the relay reads. The capture trigger runs with drledger's rights (PostgreSQL: SECURITY DEFINER; MySQL: its definer's),
    so the application's role needs nothing new. A partitioned table is captured with all its partitions.
    A TRUNCATE of a captured table is never silent: PostgreSQL refuses it (init adds a trigger that says
    why); MySQL fires no trigger for it, so --check names each account that may run it (holds DROP).
    With --check, report what the relay still needs (PostgreSQL: wal_level and the replication privilege;
    MySQL: the binlog settings; the outbox, triggers) and, with --as, which privileges a role lacks and
    the GRANT that fixes each; exit 1 if anything is missing. With --print-grants, print every role's
    GRANTs (see the README's "Least privilege").
    """
    from drledger.events import parse_ops
    from drledger.roles import DEFAULT_ROLES, parse_roles
    from drledger.source import open_source

    tables = table or []
    source = open_source(db)
    if print_grants:
        if phase not in (None, "before", "after"):
            raise DrledgerError("--phase must be 'before' or 'after'.")
        print_text(source.grant_script({**DEFAULT_ROLES, **parse_roles(role or [])}, tables, phase))
        return
    if not check:
        if not tables:
            raise DrledgerError("Name at least one table to capture with --table schema.table.")
        chosen = parse_ops(ops)
        installed = source.install(tables, chosen)
        if as_json:
            print_json({"installed": installed}, exit_code=ExitCode.SUCCESS)
        else:
            for name in installed:
                out.print(Text("✓ ", style="green") + Text(f"capturing {', '.join(chosen)} on {name}"))
        return
    # Without --as, this role's privileges are checked as the relay's.
    role_findings = source.check_roles(parse_roles(as_role or []), tables)
    if (
        not as_role
    ):  # the connecting user, whoever it is (a superuser, often), is checked for the relay's duty
        role_findings = [
            replace(
                f, what=f.what.replace(" (relay) ", " (checked for the relay's duty; --as names another) ", 1)
            )
            for f in role_findings
        ]
    findings = [*source.check(tables), *role_findings]
    if as_json:
        ok = all(f.ok for f in findings)
        print_json(
            {"ok": ok, "findings": [f.__dict__ for f in findings]},
            exit_code=ExitCode.SUCCESS if ok else ExitCode.PROBLEM_FOUND,
        )
    else:
        for finding in findings:
            mark = Text("✓ ", style="green") if finding.ok else Text("✗ ", style="red")
            out.print(mark + Text(finding.what + (f" — {finding.fix}" if finding.fix else "")))
    if not all(f.ok for f in findings):
        raise typer.Exit(ExitCode.PROBLEM_FOUND)
