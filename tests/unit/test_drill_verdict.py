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
