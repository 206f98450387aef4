"""What every command shares: the two consoles, the one-sentence failure, and the inputs several
commands turn into library requests (ledger client settings, a reconcile request)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from drledger.recovery import ReconcileRequest

out = Console()
# Piped or redirected, a line is never broken at the console's width: a GRANT or a key read by a script
# stays whole (tables still fit 80 columns).
out.soft_wrap = not out.is_terminal
err = Console(stderr=True, log_path=False)  # a log line names the time, never a source file


class _MachineOutput:
    """Whether --json was asked for, and whether a document has gone to stdout yet: a command that
    ends before printing its own (a bad input, a database refusing) prints one with its error."""

    requested = False
    printed = False


machine = _MachineOutput()


def fail(message: str, code: int) -> None:
    """One sentence on stderr, no traceback, and the exit code (under --json, a document with both)."""
    err.print(f"drledger: {message}", markup=False, highlight=False, soft_wrap=True)
    if machine.requested and not machine.printed:
        print_json({"error": message}, exit_code=code)
    sys.exit(code)


def print_json(document: Any, *, exit_code: int | None = None) -> None:
    """JSON on stdout: coloured on a terminal; piped or redirected, plain text that never wraps.

    A command's final document carries `exit_code`, the process's own exit status."""
    machine.printed = True
    if exit_code is not None:
        document = {**document, "exit_code": int(exit_code)}
    if out.is_terminal:
        out.print_json(json.dumps(document))
    else:
        print_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def print_text(text: str) -> None:
    """Text meant for a machine or a shell (SQL, JSON): written as it is, never wrapped or styled."""
    sys.stdout.write(text)
    sys.stdout.flush()


def client_config(
    pairs: list[str] | None, files: list[Path] | None, endpoint_url: str | None = None
) -> dict[str, str]:
    """The ledger client's settings from --ledger-config, --ledger-config-file and --endpoint-url."""
    from drledger.config import parse_client_config

    config = parse_client_config(pairs or [], files or [])
    if endpoint_url:
        config["endpoint_url"] = endpoint_url
    return config


def reconcile_request(
    *,
    db: str,
    ledgers: list[str] | None,
    since: str | None,
    until: str | None,
    skew: str,
    lookback: str,
    ledger_config: list[str] | None,
    ledger_config_file: list[Path] | None,
    endpoint_url: str | None,
    command: str = "reconcile",
) -> ReconcileRequest:
    """The window and the inputs reconcile, replay and fence share, as the library's request."""
    from drledger.recovery import ReconcileRequest
    from drledger.timeutil import parse_duration, parse_instant

    return ReconcileRequest(
        ledger_urls=ledgers or [],
        dsn=db,
        since_ms=parse_instant(since) if since else None,
        until_ms=parse_instant(until) if until else None,
        skew_ms=int(parse_duration(skew) * 1000),
        lookback_ms=int(parse_duration(lookback) * 1000),
        client_config=client_config(ledger_config, ledger_config_file, endpoint_url),
        command=command,
    )
