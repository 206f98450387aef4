"""The drledger command line: parse, call the library, render. No logic of its own lives here.

One module per command (`init`, `relay`, `prune`, `reconcile`, `replay`, `fence`, `watch`, `drill`,
`connect-config`, `ledger inspect`), the options they share in `options.py`, the consoles and the one-sentence failure
in `common.py`. Every exit code is a `drledger.errors.ExitCode`; each command's --help lists its codes,
generated from there: a bad input or an unreachable service is one sentence on stderr and exit 2, a
failure drledger did not foresee one sentence and exit 70, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys

# A supervisor may stop a relay at any moment, its first second included: the imports below take most
# of it. Until the relay takes SIGINT/SIGTERM over (relay/engine.py, SignalsStop), nothing has started,
# so a stop then is a clean stop, exit 0, not a death by signal.
if sys.argv[1:2] == ["relay"]:
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, lambda *_: os._exit(0))

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from drledger import __version__
from drledger.cli import connect, drill, fence, init, ledger, prune, reconcile, relay, replay, watch
from drledger.cli.common import fail, machine, out, print_json
from drledger.errors import DrledgerError, ExitCode, exit_help

if TYPE_CHECKING:
    from collections.abc import Callable

app = typer.Typer(
    name="drledger",
    help="A DR ledger for replicated databases: capture every committed insert, find what a failover lost, "
    "prove it, replay it.\n\n" + exit_help(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    from drledger.roles import set_running_command

    if ctx.invoked_subcommand:
        # `ledger` has one subcommand; a rights sentence names the command as the operator typed it.
        set_running_command(
            "ledger inspect" if ctx.invoked_subcommand == "ledger" else ctx.invoked_subcommand
        )
    if version:
        out.print(f"drledger {__version__}")
        raise typer.Exit(ExitCode.SUCCESS)


def _command(group: typer.Typer, function: Callable[..., None], name: str, path: str | None = None) -> None:
    """Register a command under `name`, its --help ending with its exit codes (`path`: as the codes name
    it, for a subcommand)."""
    group.command(name, epilog=exit_help(path or name))(function)


_command(app, init.init, "init")
_command(app, relay.relay, "relay")
_command(app, prune.prune, "prune")
_command(app, reconcile.reconcile, "reconcile")
_command(app, replay.replay, "replay")
_command(app, fence.fence, "fence")
_command(app, watch.watch, "watch")
_command(app, drill.drill, "drill")
_command(app, connect.connect_config, "connect-config")
_command(ledger.ledger_app, ledger.ledger_inspect, "inspect", "ledger inspect")
app.add_typer(ledger.ledger_app, name="ledger")


def main() -> None:
    # drledger's own progress lines at INFO; libraries (botocore, Debezium's bridge) only when they warn.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("drledger").setLevel(logging.INFO)
    machine.requested = "--json" in sys.argv[1:]
    try:
        app()
    except SystemExit as exc:
        # Click's own endings (a usage error, exit 2) print their sentence on stderr; under --json a
        # script reads the same ending from stdout.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code not in (0, None) and machine.requested and not machine.printed:
            print_json(
                {"error": "the command line was not accepted (the reason is on stderr)"}, exit_code=code
            )
        raise
    except DrledgerError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:  # the last line of defence: one sentence, never a traceback
        from drledger.source import explain_failure

        if os.environ.get("DRLEDGER_DEBUG"):
            raise
        explained = explain_failure(exc)
        if explained is not None:
            fail(str(explained), explained.exit_code)
        fail(
            f"An unexpected {type(exc).__name__} stopped drledger: {exc}. "
            "Set DRLEDGER_DEBUG=1 to see where, and report it.",
            ExitCode.INTERNAL_ERROR,
        )


if __name__ == "__main__":
    main()
