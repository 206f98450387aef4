"""The drill's last step when the old region returns: after the ledger's recovery, the killed primary's
data directory starts again isolated and read-only, its outbox is read as a ledger against the promoted
database, what it holds that the promoted database lacks is replayed, and the promoted database is
checked against the ground truth once more.

The same library calls the operator's commands make (`drledger reconcile --ledger postgresql://…`,
`drledger replay --apply`): the README's "When the old region returns".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from drledger.drill import changes as truth_of
from drledger.drill.postgres.rig import FailoverRig
from drledger.drill.run import Progress
from drledger.recovery import ReconcileRequest, run_reconcile
from drledger.replay import replay


@dataclass
class OldRegionFindings:
    """What the old primary brought back, against the ground truth (the application's acknowledged
    commits, recorded client-side). Its --json keys:

    - `committed`: keys whose COMMIT the application saw acknowledged.
    - `unrecoverable_after_ledger`: the events (rows placed, and their updates and deletes) of the
      acknowledged commits the promoted database lacked after the ledger's replay (they never reached the
      ledger).
    - `found_on_old_primary`: events reconcile found in the old primary's outbox and not in the promoted
      database; `missing_in_ledger`: the promoted database's events the old primary lacks (0: the
      ledger replay's rows went back with their event ids); `split_brain`: lost keys the promoted
      database gave to other rows; `reconcile_exit_code`.
    - `replayed`: events replay wrote (applied, or already present with the same content);
      `conflicts`: events replay would not write over another row.
    - `unrecoverable_after_old_region`: committed keys still missing afterwards. The target is 0.
    - `phantom_rows`: keys in the promoted database that no commit wrote (target 0); `unacknowledged`:
      keys the old primary committed whose COMMIT never reached the application (the transaction in
      flight when it died; committed, so not phantoms).
    - `rolled_back`: keys of transactions the application rolled back; `rolled_back_present`: those of
      them in the promoted database at the end (target 0).
    - `reconcile_seconds`, `replay_seconds`.
    - `wrong_rows`: with updates and deletes, rows (an order's status, an account's balance) not as every
      acknowledged commit left them (target 0).
    """

    committed: int
    unrecoverable_after_ledger: int
    found_on_old_primary: int
    missing_in_ledger: int
    split_brain: int
    reconcile_exit_code: int
    replayed: int
    conflicts: int
    unrecoverable_after_old_region: int
    phantom_rows: int
    unacknowledged: int
    rolled_back: int
    rolled_back_present: int
    reconcile_seconds: float
    replay_seconds: float
    wrong_rows: int = 0

    @property
    def on_target(self) -> bool:
        """Everything committed is back, and nothing else came with it."""
        return (
            self.unrecoverable_after_old_region == 0
            and self.phantom_rows == 0
            and self.rolled_back_present == 0
            and self.conflicts == 0
            and self.wrong_rows == 0
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def old_region_returns(rig: FailoverRig, progress: Progress) -> OldRegionFindings:
    """Given a rig after the disaster, the failover and the ledger's recovery: the old region returns."""
    committed = rig.truth.keys
    # The orders every acknowledged commit leaves (with deletes, fewer than were ever inserted).
    alive = _alive(rig) if rig.changes else committed
    after_ledger = _events_not_landed(rig, rig.keys_in(rig.dr_dsn))
    progress("the old region returns: the killed primary starts isolated and read-only on a port of its own")
    old_dsn = rig.old_region_returns()
    progress("reconcile: the old primary's outbox, read as a ledger, against the promoted database")
    started = time.monotonic()
    report = run_reconcile(ReconcileRequest(ledger_urls=[old_dsn], dsn=rig.dr_dsn))
    reconcile_s = time.monotonic() - started
    replayed = conflicts = 0
    replay_s = 0.0
    if report.missing_in_dr:
        progress(f"replay: {len(report.missing_in_dr)} events from the old primary")
        started = time.monotonic()
        result = replay(rig.dr_dsn, report.missing_in_dr, apply=True)
        replay_s = time.monotonic() - started
        replayed, conflicts = result.applied + result.present, len(result.conflicts)
    progress("verifying the promoted database against the ground truth again")
    on_dr = rig.keys_in(rig.dr_dsn)
    unacknowledged = rig.keys_in(old_dsn) - committed
    return OldRegionFindings(
        committed=len(committed),
        unrecoverable_after_ledger=after_ledger,
        found_on_old_primary=len(report.missing_in_dr),
        missing_in_ledger=len(report.missing_in_ledger),
        split_brain=len(report.split_brain),
        reconcile_exit_code=report.exit_code,
        replayed=replayed,
        conflicts=conflicts,
        unrecoverable_after_old_region=len(alive - on_dr),
        phantom_rows=len(on_dr - committed - unacknowledged),
        unacknowledged=len(unacknowledged),
        rolled_back=len(rig.truth.rolled_back),
        rolled_back_present=len(on_dr & rig.truth.rolled_back),
        reconcile_seconds=round(reconcile_s, 3),
        replay_seconds=round(replay_s, 3),
        wrong_rows=len(_wrong_rows(rig, on_dr)) if rig.changes else 0,
    )


def _events_not_landed(rig: FailoverRig, present: set[int]) -> int:
    """The events of the acknowledged commits a database with these orders does not hold."""
    commits = rig.truth.commits
    held = truth_of.landed(commits, present)
    return sum(len(c.keys) + len(c.changes) for i, c in enumerate(commits) if i not in held)


def _alive(rig: FailoverRig) -> set[int]:
    truth = rig.truth
    every = truth_of.expected_state(truth.commits, range(len(truth.commits)), truth.opening)
    return {key for (table, key), value in every.items() if table == truth_of.ORDERS and value is not None}


def _wrong_rows(rig: FailoverRig, on_dr: set[int]) -> list[tuple[str, int]]:
    """Rows not as every acknowledged commit left them — and the commit in flight at the disaster, if the
    old primary had committed it and it came back."""
    truth = rig.truth
    commits = [*truth.commits, *([truth.in_flight] if truth.in_flight is not None else [])]
    indices = set(range(len(truth.commits)))
    if truth.in_flight is not None and len(truth.commits) in truth_of.landed(commits, on_dr):
        indices.add(len(truth.commits))
    expected = truth_of.expected_state(commits, indices, truth.opening)
    return truth_of.differing(expected, rig.state_in(rig.dr_dsn))
