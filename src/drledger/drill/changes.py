"""The drill's ground truth for every change, and what the promoted database must hold. Pure.

The drill's writer is the only one, so each acknowledged commit's effect is known client-side: the order
keys it inserted, and its updates and deletes with the value each left. Which commits a database holds is
read off the orders they inserted (every commit inserts at least one, under keys that grow in commit
order): a commit landed if one of its orders is there, or was deleted by a later commit that landed.
Replaying the landed commits, in order, over the initial rows gives the state the database must be in,
key by key; anything else is a change landed on a row it did not change, or half a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

ORDERS = "orders"
ACCOUNTS = "accounts"
#: What an order's status moves through; the workload advances an order one step at a time.
STATUSES = ("placed", "paid", "shipped", "delivered")
#: The accounts the transfers move money between, and what each holds before the workload.
ACCOUNT_COUNT = 20
OPENING_BALANCE = Decimal("1000.00")
CHANGE_OPS = ("update", "delete")

#: (table, key) → the row's value (an order's status, an account's balance); None: no such row.
State = dict[tuple[str, int], str | None]


@dataclass(frozen=True)
class Change:
    """One update or delete the workload committed: the row, and the value it left (None: deleted)."""

    op: str
    table: str
    key: int
    value: str | None


@dataclass
class Commit:
    """One acknowledged commit: the order keys it inserted, when COMMIT returned, and its other changes."""

    keys: list[int]
    acked_at_ms: int
    changes: list[Change] = field(default_factory=list)


def opening_state() -> State:
    """The accounts as the workload finds them."""
    return {(ACCOUNTS, n): str(OPENING_BALANCE) for n in range(1, ACCOUNT_COUNT + 1)}


def replica_prefix(commits: Sequence[Commit], keys_on_replica: set[int]) -> int:
    """How many of the commits, in commit order, the promoted replica holds: it replicates in order, so
    they are a prefix, ending at the newest commit one of whose orders it holds (nothing later can have
    deleted that one, as nothing later reached it)."""
    for index in range(len(commits) - 1, -1, -1):
        if keys_on_replica.intersection(commits[index].keys):
            return index + 1
    return 0


def landed(commits: Sequence[Commit], keys_present: set[int]) -> set[int]:
    """The indices of the commits a database holds: one of its orders is there, or was deleted by a
    later commit that itself landed. Read newest first, so each delete's commit is decided before the
    commits whose orders it deleted."""
    deleted_by: dict[int, int] = {}
    for index, commit in enumerate(commits):
        for change in commit.changes:
            if change.table == ORDERS and change.op == "delete":
                deleted_by[change.key] = index
    held: set[int] = set()
    for index in range(len(commits) - 1, -1, -1):
        for key in commits[index].keys:
            if key in keys_present or deleted_by.get(key) in held:
                held.add(index)
                break
    return held


def expected_state(commits: Sequence[Commit], indices: Iterable[int], opening: State) -> State:
    """The state the commits at `indices`, applied in commit order over `opening`, leave; every order any
    commit inserted has an entry (None where it is absent)."""
    state: State = dict(opening)
    for commit in commits:
        for key in commit.keys:
            state.setdefault((ORDERS, key), None)
    for index in sorted(indices):
        commit = commits[index]
        for key in commit.keys:
            state[(ORDERS, key)] = STATUSES[0]
        for change in commit.changes:
            state[(change.table, change.key)] = change.value
    return state


def differing(
    expected: State, actual: State, ignore: Iterable[tuple[str, int]] = ()
) -> list[tuple[str, int]]:
    """The rows whose value in `actual` is not the expected one, the rows `ignore` names excepted."""
    left_out = set(ignore)
    return sorted(k for k, value in expected.items() if k not in left_out and actual.get(k) != value)


def count_changes(commits: Sequence[Commit], indices: Iterable[int]) -> dict[str, int]:
    """Updates and deletes in the commits at `indices`, by op."""
    counts = dict.fromkeys(CHANGE_OPS, 0)
    for index in indices:
        for change in commits[index].changes:
            counts[change.op] += 1
    return counts


def balance_total(state: State) -> Decimal:
    return sum(
        (Decimal(v) for (table, _), v in state.items() if table == ACCOUNTS and v is not None), Decimal(0)
    )
