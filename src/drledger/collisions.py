"""Split brain: the lost events whose key the promoted database has since given to a different row.

Between promotion and `fence`, the application writing to the new primary is handed keys from a
sequence that never saw the old primary's last commits, so a key the old primary had committed can be
taken again with other content. Replay never overwrites such a row (it reports a conflict); reconcile
names each one beforehand, with both versions and when each was written, so a person can decide.
"""

from __future__ import annotations

from collections.abc import Sequence

from drledger.errors import RowsRejected
from drledger.events import LedgerEvent
from drledger.reconcile import KeyCollision
from drledger.replay import ReplayResult, prove
from drledger.screening import screen
from drledger.source.base import RecoverySession

BATCH = 5_000


def key_collisions(session: RecoverySession, events: Sequence[LedgerEvent]) -> list[KeyCollision]:
    """The events (proven as replay would prove them) whose key holds other content now. Read only."""
    # Inserts only: the row a lost update or delete finds is its before image, which is no collision.
    inserts = [a for a in screen(events).admitted if a.event.op == "insert"]
    proof = prove(session, inserts, ReplayResult())
    by_table: dict[str, list[LedgerEvent]] = {}
    for admitted in proof.valid:
        by_table.setdefault(admitted.event.table, []).append(admitted.event)
    found: list[KeyCollision] = []
    for table, members in by_table.items():
        shape = proof.shapes[table]
        for start in range(0, len(members), BATCH):
            batch = members[start : start + BATCH]
            try:
                with session.savepoint():
                    held = session.current_rows(shape, batch)
            except RowsRejected:
                continue  # images the table refuses: replay refuses them too, nothing is overwritten
            other = [e for e in batch if e.event_id in held and not held[e.event_id].same]
            written = session.written_at(table, [e.key for e in other]) if other else {}
            found.extend(
                KeyCollision(
                    e.event_id,
                    e.table,
                    e.key,
                    e.row_json,
                    e.commit_ts_ms,
                    held[e.event_id].text,
                    written.get(e.key),
                )
                for e in other
            )
    session.rollback()
    return found
