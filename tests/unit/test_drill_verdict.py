"""The drill's verdict against its ground truth, when the DR application took a lost row's unique value."""

from __future__ import annotations

import pytest

from drledger.drill.postgres.rig import Commit, GroundTruth
from drledger.drill.run import DrWrites, _Findings


def findings(conflict_keys: set[int], *, recovered: int = 4, missing_after: int = 1) -> _Findings:
    """Ten committed orders, 6-10 lost at failover and all in the ledger; the DR took order 7's reference
    (its own row is key 11)."""
    truth = GroundTruth([Commit([k], k) for k in range(1, 11)])
    found = _Findings("public.orders", truth, set(range(6, 11)), set(range(1, 6)), 0, None, 0.0, None)
    found.dr_writes = DrWrites({11}, {7})
    found.recovered, found.conflicts, found.conflict_keys = recovered, len(conflict_keys), conflict_keys
    found.missing_after = missing_after
    return found


def test_the_verdict_holds_exactly_the_taken_row_as_the_one_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    # detected is read from reconcile's report; here every lost row was detected.
    monkeypatch.setattr(_Findings, "detected", property(lambda self: len(self.lost)))
    assert findings({7}).verdict == "ok"
    assert findings(set(), recovered=5, missing_after=0).verdict == "failed"  # replay overwrote or ignored it
    assert findings({8}).verdict == "failed"  # another row named instead
    assert findings({7, 8}, recovered=3, missing_after=2).verdict == "failed"  # more than the taken row
    assert findings({7}, recovered=3, missing_after=2).verdict == "failed"  # something else did not come back


def test_changes_held_back_or_on_the_wrong_row_fail_the_drill() -> None:
    from drledger.drill.changes import Change, expected_state, opening_state
    from drledger.drill.run import find_changes

    transfer = [Change("update", "accounts", 1, "900.00"), Change("update", "accounts", 2, "1100.00")]
    truth = GroundTruth([Commit([1], 1), Commit([2], 2, transfer), Commit([3], 3)], opening=opening_state())
    lost = range(1, 3)  # the replica held commit 0; commits 1 and 2 reached the ledger
    whole = expected_state(truth.commits, range(3), truth.opening)
    found = find_changes(truth, lost, {2, 3}, {1, 2, 3}, whole)
    assert found.ok and found.by_op["update"] == {
        "lost": 2,
        "recovered": 2,
        "held_back": 0,
        "unrecoverable": 0,
    }
    half = {**whole, ("accounts", 2): "1000.00"}  # replay applied half the transfer
    found = find_changes(truth, lost, {2, 3}, {1, 2, 3}, half)
    assert not found.ok and found.wrong == ["accounts 2: 1100.00 → 1000.00"]
    assert found.total_after != found.opening_total
    without = expected_state(truth.commits, {0, 2}, truth.opening)  # the transfer's commit held back
    found = find_changes(truth, lost, {2, 3}, {1, 3}, without)
    assert not found.ok and found.by_op["update"]["held_back"] == 2 and not found.wrong
