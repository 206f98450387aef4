"""The drill's ground truth for every change: which commits a database holds, and the state they leave."""

from __future__ import annotations

from drledger.drill.changes import (
    Change,
    Commit,
    balance_total,
    count_changes,
    differing,
    expected_state,
    landed,
    opening_state,
    replica_prefix,
)


def workload() -> list[Commit]:
    """0: order 1; 1: order 2 and a transfer; 2: order 3, order 1 paid; 3: order 4, order 2 deleted;
    4: order 5, order 1 deleted."""
    return [
        Commit([1], 1),
        Commit(
            [2], 2, [Change("update", "accounts", 1, "990.00"), Change("update", "accounts", 2, "1010.00")]
        ),
        Commit([3], 3, [Change("update", "orders", 1, "paid")]),
        Commit([4], 4, [Change("delete", "orders", 2, None)]),
        Commit([5], 5, [Change("delete", "orders", 1, None)]),
    ]


def test_the_replica_holds_a_prefix_ending_at_its_newest_commits_order() -> None:
    commits = workload()
    assert replica_prefix(commits, {1, 2, 3}) == 3
    assert replica_prefix(commits, {3, 4}) == 4  # order 2 deleted by commit 3, which it holds
    assert replica_prefix(commits, set()) == 0


def test_a_commit_landed_if_its_order_is_there_or_a_landed_commit_deleted_it() -> None:
    commits = workload()
    assert landed(commits, {3, 4, 5}) == {0, 1, 2, 3, 4}  # orders 1 and 2 deleted by commits that landed
    assert landed(commits, {1, 2, 3}) == {0, 1, 2}  # commits 3 and 4 lost: orders 1 and 2 still there
    # Commit 3 held back: order 2 is still there, but so are the orders of commits 0-2 and 4.
    assert landed(commits, {2, 3, 5}) == {0, 1, 2, 4}


def test_the_expected_state_applies_the_landed_commits_in_order() -> None:
    commits = workload()
    opening = opening_state()
    every = expected_state(commits, range(5), opening)
    assert every[("orders", 1)] is None and every[("orders", 2)] is None
    assert every[("orders", 3)] == "placed"
    assert every[("accounts", 1)] == "990.00" and every[("accounts", 2)] == "1010.00"
    assert balance_total(every) == balance_total(opening)
    prefix = expected_state(commits, range(3), opening)
    assert prefix[("orders", 1)] == "paid" and prefix[("orders", 4)] is None


def test_a_row_not_as_its_commits_left_it_is_found() -> None:
    commits = workload()
    expected = expected_state(commits, range(3), opening_state())
    actual = dict(expected)
    assert differing(expected, actual) == []
    actual[("accounts", 2)] = "1000.00"  # half of the transfer
    actual[("orders", 4)] = "placed"  # a commit the database should not hold
    assert differing(expected, actual) == [("accounts", 2), ("orders", 4)]
    assert differing(expected, actual, ignore=[("orders", 4)]) == [("accounts", 2)]


def test_changes_are_counted_by_op() -> None:
    commits = workload()
    assert count_changes(commits, range(5)) == {"update": 3, "delete": 2}
    assert count_changes(commits, {0}) == {"update": 0, "delete": 0}
