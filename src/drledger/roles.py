"""drledger's four roles: one duty each, named by the operator. The engine decides what each needs.

- installer: runs `init` (owns schema drledger and the capture functions);
- relay: runs `relay` (a replication connection; reads the outbox, writes the heartbeat);
- reader: runs `reconcile` and `watch` (reads the outbox);
- recoverer: runs `replay` and `fence` (writes the captured tables and the outbox, moves sequences);
  writing replay's audit log is also what lets its sessions suppress capture.

Each engine's `privileges.needs` is the one list of what each duty needs: `init --print-grants` prints
it, `init --check --as` verifies it, and every command checks its duty's part of it before its first
read or write (`SourceDatabase.require_rights`), naming the command and the GRANT that fixes a gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drledger.errors import DrledgerError, MissingPrivilege

DUTIES = ("installer", "relay", "reader", "recoverer")
DEFAULT_ROLES = {duty: f"drledger_{duty}" for duty in DUTIES}
#: The commands each duty runs. A database read as a ledger (the old primary) is read with the
#: reader's rights, whichever command reads it.
DUTY_COMMANDS = {
    "installer": ("init",),
    "relay": ("relay",),
    "reader": ("reconcile", "watch", "ledger inspect"),
    "recoverer": ("fence", "replay"),
}

#: The duty whose rights a command runs with.
COMMAND_DUTY = {command: duty for duty, commands in DUTY_COMMANDS.items() for command in commands}

_running = ["reconcile"]


def running_command() -> str:
    """The command this process runs (the command line sets it): what a check made deep down, reading a
    database as a ledger, names."""
    return _running[0]


def set_running_command(command: str) -> None:
    _running[0] = command


@dataclass(frozen=True)
class MissingRight:
    """A right of a duty's list that the connected role does not hold, and the statement that grants it."""

    role: str
    duty: str
    what: str  # "<privilege> on <object>", as the list names it
    grant: str


def missing_right_sentence(command: str, right: MissingRight) -> str:
    """The one sentence a command stops with when its role lacks a right of its duty's list."""
    return (
        f"drledger {command} as {right.role} lacks {right.what}: run {right.grant} "
        f"(drledger init --print-grants lists the {right.duty}'s rights)."
    )


def require(command: str, missing: Iterable[MissingRight]) -> None:
    """Stop (exit 2) on the first right missing, before the command reads or writes anything."""
    for right in missing:
        raise MissingPrivilege(missing_right_sentence(command, right))


def parse_roles(pairs: Iterable[str]) -> dict[str, str]:
    """`duty=role` pairs (a bare role means the relay) → duty → role; one sentence on a typo."""
    roles: dict[str, str] = {}
    for pair in pairs:
        duty, sep, role = pair.partition("=")
        if not sep:
            duty, role = "relay", pair
        duty, role = duty.strip(), role.strip()
        if duty not in DUTIES or not role:
            raise DrledgerError(f"'{pair}' is not duty=role; the duties are {', '.join(DUTIES)}.")
        roles[duty] = role
    return roles
