"""The operator's recovery steps after a failover, as library functions the CLI and the drill share.

In the order an operator runs them (the README's runbook says the same):

1. `fence_from_ledger` — right after promotion, before the application writes: sequences move past
   every key the ledger knows, so no new write can take the key of a lost row.
2. `recovery.run_reconcile` — what the promoted database lacks, proven by fingerprints.
3. `lost_events`, then `replay.replay` — the missing events, validated, fenced again and applied
   (a rolled-back rehearsal unless asked to apply).
4. `drledger relay --backfill-since` on the promoted database — the ledger goes on from there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drledger.events import LedgerEvent, MalformedRecord
from drledger.fence import FenceResult, fence_sequences
from drledger.ledger import read_all
from drledger.margins import DEFAULT_MARGIN, validate_margin
from drledger.recovery import ReconcileRequest, choose_window, dr_latest_commit, open_ledgers, run_reconcile
from drledger.replay import ReplayResult, prove, require_recoverer_rights
from drledger.screening import screen
from drledger.source import open_source


def fence_from_ledger(
    request: ReconcileRequest, margin: int = DEFAULT_MARGIN, *, apply: bool = True
) -> tuple[FenceResult, int]:
    """Fence the promoted database past every proven key in the ledger's window.

    Returns the fences and how many ledger events in the window could not be proven (refused,
    conflicting or malformed), which fencing ignores — replay reports each of them.
    """
    validate_margin(margin)
    open_source(request.dsn).require_rights("recoverer", "fence")  # before the ledger is read
    latest = dr_latest_commit(request)
    events: list[LedgerEvent] = []
    unreadable = 0
    with open_ledgers(request.ledger_urls, request.client_config) as ledgers:
        window = choose_window(request, ledgers, latest)
        for record in read_all(ledgers, window.since_ms, window.until_ms):
            if isinstance(record, MalformedRecord):
                unreadable += 1
            else:
                events.append(record)
    screening = screen(events)
    scratch = ReplayResult(refused=list(screening.refused), ambiguous=screening.ambiguous)
    with open_source(request.dsn).recovery_session() as session:
        session.require_outbox()
        proof = prove(session, screening.admitted, scratch)
        if apply:
            require_recoverer_rights(session, "fence", proof.shapes.values())
        session.rollback()
        result = fence_sequences(session, [(a.table, a.row) for a in proof.valid], margin, apply=apply)
        session.commit()
    unproven = unreadable + len(scratch.refused) + sum(len(a.events) for a in scratch.ambiguous)
    return result, unproven


def lost_events(
    *,
    from_file: Path | None = None,
    request: ReconcileRequest | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[LedgerEvent], list[MalformedRecord]]:
    """The events to replay and the unreadable records met on the way (reconciling now, a sample of
    them): from a saved report, or reconciled now (missing and conflicting both; replay holds back
    the conflicting ones itself, as it would any input)."""
    if from_file is not None:
        from drledger.saved import load_saved_events

        return load_saved_events(from_file)
    if request is None:
        raise ValueError("lost_events needs a saved report or a reconcile request")
    report = run_reconcile(request, on_progress)
    return [*report.missing_in_dr, *(e for a in report.ambiguous for e in a.events)], report.malformed_samples
