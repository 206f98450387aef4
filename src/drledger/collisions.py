"""Split brain: the lost events whose key the promoted database has since given to a different row.

Between promotion and `fence`, the application writing to the new primary is handed keys from a
sequence that never saw the old primary's last commits, so a key the old primary had committed can be
taken again with other content. Replay never overwrites such a row (it reports a conflict); reconcile
names each one beforehand, with both versions and when each was written, so a person can decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from drledger.errors import RowsRejected
from drledger.events import LedgerEvent
from drledger.reconcile import KeyCollision
from drledger.replay import ReplayResult, plan_replay, prove
from drledger.screening import Admitted, screen
from drledger.source.base import RecoverySession, TableShape

BATCH = 5_000


def key_collisions(session: RecoverySession, events: Sequence[LedgerEvent]) -> list[KeyCollision]:
    """The events (proven as replay would prove them) whose key holds other content now. Read only.

    The DR database holds each key as it was before its first lost change, so that change alone is
    compared: an insert's key must be free or hold its row; an update's row must be its before image
    (or already its after image); a delete's, its image (or gone). Anything else is listed."""
    admitted = screen(events).admitted
    order = {e.event_id: i for i, t in enumerate(plan_replay(a.event for a in admitted)) for e in t.events}
    first: dict[tuple[str, str], Admitted] = {}
    for item in sorted(admitted, key=lambda a: order[a.event.event_id]):
        first.setdefault((item.event.table, item.event.key), item)
    proof = prove(session, list(first.values()), ReplayResult())
    by_table: dict[str, list[LedgerEvent]] = {}
    for item in proof.valid:
        by_table.setdefault(item.event.table, []).append(item.event)
    found: list[KeyCollision] = []
    for table, members in by_table.items():
        shape = proof.shapes[table]
        for start in range(0, len(members), BATCH):
            batch = members[start : start + BATCH]
            try:
                with session.savepoint():
                    other = _other_content(session, shape, batch)
            except RowsRejected:
                continue  # images the table refuses: replay refuses them too, nothing is overwritten
            written = session.written_at(table, [e.key for e, _ in other]) if other else {}
            found.extend(
                KeyCollision(
                    e.event_id,
                    e.table,
                    e.key,
                    e.row_json,
                    e.commit_ts_ms,
                    held,
                    written.get(e.key),
                    e.op,
                    e.before_json,
                )
                for e, held in other
            )
    session.rollback()
    return found


def _other_content(
    session: RecoverySession, shape: TableShape, batch: list[LedgerEvent]
) -> list[tuple[LedgerEvent, str]]:
    """The events of `batch` whose key holds a row in neither the state before the change nor after it,
    with that row."""
    after = session.current_rows(shape, batch)
    # The state before: an update's before image; a delete's image is the row as it was.
    updates = [e for e in batch if e.op == "update"]
    before = session.current_rows(shape, [replace(e, row_json=e.before_json or "{}") for e in updates])
    other: list[tuple[LedgerEvent, str]] = []
    for event in batch:
        now = after.get(event.event_id)
        if event.op == "update" and now is None:
            other.append((event, ""))  # no row where the lost update found one
            continue
        if now is None or now.same:
            continue  # a free key, or the row already as the change left it (for a delete: its image)
        if event.op == "update":
            then = before.get(event.event_id)
            if then is not None and then.same:
                continue  # the row as it was before the lost update: a loss, no collision
            other.append((event, then.text if then is not None else now.text))
        else:
            other.append((event, now.text))
    return other
