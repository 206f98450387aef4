"""`drledger drill`: the disaster, for real, on this machine, measured against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drledger.cli.common import err, out, print_json
from drledger.cli.options import JsonOption
from drledger.drill import SCENARIO_NAMES
from drledger.errors import DrledgerError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.status import Status

    from drledger.drill.run import DrillSettings


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
        int | None,
        typer.Option(
            help="Rows pushed through the relay before measuring, so its JVM is warm (0: none); "
            "default 20,000, or 2,000 into an SQS queue, which a reader must drain."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="The database engine: 'postgresql', or 'mysql' (MariaDB servers standing in for Aurora MySQL)."
        ),
    ] = "postgresql",
    ops: Annotated[
        str,
        typer.Option(
            help="What the workload does and drledger captures: insert,update,delete (orders placed, moved "
            "through statuses and deleted; transfers between accounts), or insert for the insert-only drill."
        ),
    ] = "insert,update,delete",
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

    Starts a primary and a replica trailing it by --lag, the relay into a ledger, and writes at --tps with
    every acknowledged commit recorded client-side: orders inserted, moved through statuses and deleted,
    and transfers between accounts (--ops insert: inserts only). Then the primary region dies mid-workload (in-flight WAL
    dropped, primary and relay killed), the replica is promoted, and reconcile, fence and replay run; the
    promoted database is checked against the ground truth. Everything it starts is stopped and removed,
    also on Ctrl-C, unless --keep.
    """
    from drledger.drill.run import DrillSettings
    from drledger.events import parse_ops
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
        ops=parse_ops(ops),
    )
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
        print_json(
            result.as_json(), exit_code=ExitCode.SUCCESS if result.verdict == "ok" else ExitCode.PROBLEM_FOUND
        )
    else:
        out.print(comparison_table(result, tps))
        out.print(f"verdict: [bold]{result.verdict}[/] (drill took {result.total_seconds:g} s)")
        if result.keep:
            out.print(f"kept: promoted DR at {result.keep['promoted_dr']}, ledger {result.keep['ledger']}")
            out.print(f"stop it with: {result.keep['stop']}", markup=False)
    if result.verdict != "ok":
        raise typer.Exit(ExitCode.PROBLEM_FOUND)


def _phases(status: Status) -> Callable[[str], None]:
    """Each phase: the spinner's text, and a timestamped line that stays on screen."""

    def show(phase: str) -> None:
        status.update(phase)
        err.log(phase)

    return show


def _drill_scenarios(text: str, settings: DrillSettings, as_json: bool) -> None:
    from drledger.drill import parse_scenarios
    from drledger.drill.scenarios import run_scenarios, scenario_table

    names = parse_scenarios(text)
    with err.status("scenarios starting…") as status:
        outcomes = run_scenarios(names, settings, progress=_phases(status))
    if as_json:
        print_json([o.as_json() for o in outcomes])
    else:
        out.print(scenario_table(outcomes))
    if not all(o.passed for o in outcomes):
        raise typer.Exit(ExitCode.PROBLEM_FOUND)
