"""drledger's four roles: one duty each, named by the operator. The engine decides what each needs.

- installer: runs `init` (owns schema drledger and the capture functions);
- relay: runs `relay` (a replication connection; reads the outbox, writes the heartbeat);
- reader: runs `reconcile` and `watch` (reads the outbox);
- recoverer: runs `replay` and `fence` (writes the captured tables and the outbox, moves sequences);
  writing replay's audit log is also what lets its sessions suppress capture.
"""

from __future__ import annotations

from collections.abc import Iterable

from drledger.errors import DrledgerError

DUTIES = ("installer", "relay", "reader", "recoverer")
DEFAULT_ROLES = {duty: f"drledger_{duty}" for duty in DUTIES}


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
