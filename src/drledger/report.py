"""What the commands print: a reconcile Report as JSON, as a saved file for replay, and as a terminal
summary; replay's and fence's results, a watch snapshot and a ledger's census on the terminal.

The HTML page lives in report_html.py; this module holds the shapes every output shares. Text that
came from a ledger or a database (table names, keys, reasons, samples) is printed as `Text`, never
read as Rich markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from drledger.errors import ExitCode
from drledger.masking import mask_dsn, mask_url
from drledger.reconcile import LAG_CANNOT_EXPLAIN_MS, KeyCollision, Report
from drledger.timeutil import format_instant

if TYPE_CHECKING:
    from drledger.census import LedgerCensus
    from drledger.fence import FenceResult
    from drledger.replay import ReplayResult
    from drledger.watch.cycle import Snapshot

UNKNOWABLE = (
    "Commits on the failed primary after the ledger's last commit reached neither the DR database nor the "
    "ledger, if there were any: nothing here can count them."
)


def verdict(report: Report) -> str:
    if report.ledger_events == 0 and report.dr_events > 0:
        return (
            "The ledger holds nothing in this window while the DR database does: the ledger is lost or was never "
            "written, so recovery from it is impossible and the loss cannot be measured."
        )
    if report.exit_code == ExitCode.NEEDS_HUMAN:
        parts = []
        if report.mismatched:
            parts.append(f"{len(report.mismatched)} events differ between the ledger and the DR database")
        if report.missing_in_ledger:
            parts.append(
                f"{len(report.missing_in_ledger)} DR rows never reached the ledger (relay lag or outage)"
            )
        if behind := report.missing_before_newest:
            oldest = behind[0].created_at_ms - LAG_CANNOT_EXPLAIN_MS
            parts.append(
                f"{len(behind)} of them were created more than {LAG_CANNOT_EXPLAIN_MS // 60_000} minutes before the "
                "ledger's newest event, which no relay lag explains: the ledger went backwards (a broker "
                "re-created empty, a file restored from an old copy) or a relay skipped them; start the relay "
                f"with --backfill-since {format_instant(oldest)} on the database that still holds them"
            )
        if report.malformed:
            parts.append(f"{report.malformed} ledger records are unreadable")
        if report.ambiguous:
            parts.append(
                f"{len(report.ambiguous)} lost events or rows are held in the ledger in conflicting versions "
                "and will not be replayed"
            )
        if report.split_brain:
            parts.append(
                f"{len(report.split_brain)} lost events collide with rows the DR database wrote under the same "
                "keys since (split brain): replay keeps the DR rows and reports both versions"
            )
        if report.stale:
            parts.append(
                f"{len(report.stale)} lost events find an older version of their row in the DR database, not "
                "written there since (stale: the key was deleted and inserted again in the lost window); replay "
                "does not overwrite it and reports both versions"
            )
        return "Needs a human: " + "; ".join(parts) + "."
    if report.missing_in_dr:
        skipped = (
            " The split-brain lookup was skipped (this role may not read the lost rows' tables): whether the DR "
            "database wrote any of their keys since is not known."
            if report.split_brain_unchecked
            else ""
        )
        changes = _by_op(report)
        return (
            f"{len(report.missing_in_dr)} committed events are missing from the DR database"
            + (f" ({changes} among them)" if changes else "")
            + " and can be replayed."
            + skipped
        )
    return "Nothing is missing: every ledger event in the window is in the DR database."


def _by_op(report: Report) -> str:
    """The lost updates and deletes, counted: '2 updates, 1 delete'."""
    return ", ".join(
        f"{n} {op}{'s' if n != 1 else ''}" for op, n in report.missing_by_op.items() if op != "insert"
    )


def report_json(report: Report, *, ledgers: list[str], db: str) -> dict[str, Any]:
    """The report as JSON; the DSN and ledger URLs are shown masked, whatever the caller passed."""
    window = report.window
    by_table = Counter(e.table for e in report.missing_in_dr)
    return {
        "window": {
            "since": format_instant(window.since_ms),
            "until": format_instant(window.until_ms),
            "skew_seconds": window.skew_ms / 1000,
        },
        "ledgers": [mask_url(url) for url in ledgers],
        "db": mask_dsn(db),
        "counts": {
            "ledger_events": report.ledger_events,
            "dr_events": report.dr_events,
            "missing_in_dr": len(report.missing_in_dr),
            "missing_in_ledger": len(report.missing_in_ledger),
            "missing_in_ledger_before_its_newest": len(report.missing_before_newest),
            "mismatched": len(report.mismatched),
            "duplicates": report.duplicates,
            "malformed": report.malformed,
            "conflicting": sum(len(a.events) for a in report.ambiguous),
            "split_brain": len(report.split_brain),
            "stale": len(report.stale),
        },
        "exposure": {
            "dr_last_commit": format_instant(report.dr_last_commit_ms),
            "ledger_last_commit": format_instant(report.ledger_last_commit_ms),
            "gap_seconds": report.gap_seconds,
            "gap_events": len(report.missing_in_dr),
            "unknowable": UNKNOWABLE,
        },
        "missing_by_table": dict(sorted(by_table.items())),
        "missing_by_op": report.missing_by_op,
        "missing_event_ids": [e.event_id for e in report.missing_in_dr],
        "missing_in_ledger_ids": [r.event_id for r in report.missing_in_ledger],
        "mismatched": [
            {
                "event_id": m.event_id,
                "table": m.table,
                "key": m.key,
                "ledger_row": m.ledger_row,
                "dr_row": m.dr_row,
            }
            for m in report.mismatched
        ],
        "conflicting": [a.as_json() for a in report.ambiguous],
        "split_brain": [_collision_json(c) for c in report.split_brain],
        "stale": [_collision_json(c) for c in report.stale],
        "split_brain_unchecked": report.split_brain_unchecked,
        "malformed_samples": [
            {"position": s.position, "reason": s.reason, "sample": s.sample} for s in report.malformed_samples
        ],
        "verdict": verdict(report),
        "exit_code": report.exit_code,
    }


def _collision_json(c: KeyCollision) -> dict[str, Any]:
    return {
        "event_id": c.event_id,
        "table": c.table,
        "key": c.key,
        "ledger_row": c.ledger_row,
        "ledger_written_at": format_instant(c.ledger_written_ms),
        "dr_row": c.dr_row,
        "dr_written_at": format_instant(c.dr_written_ms),
        "op": c.op,
        "ledger_before": c.ledger_before,
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The summary as a table. Text that came from the ledger (table names, keys, reasons) is shown as
    it is, never read as Rich markup: a ledger must not be able to style or hide what is printed."""
    counts = summary["counts"]
    exposure = summary["exposure"]
    table = Table(
        title=Text(f"reconcile {summary['window']['since']} → {summary['window']['until']}"),
        show_header=False,
    )
    alarming = (
        "missing_in_dr",
        "missing_in_ledger",
        "missing_in_ledger_before_its_newest",
        "mismatched",
        "malformed",
        "conflicting",
        "split_brain",
        "stale",
    )
    for key, value in counts.items():
        table.add_row(key, Text(str(value), style="bold red" if key in alarming and value else ""))
    table.add_section()
    table.add_row("last commit in DR", str(exposure["dr_last_commit"]))
    table.add_row("last commit in ledger", str(exposure["ledger_last_commit"]))
    table.add_row("ledger ahead of DR by", f"{exposure['gap_seconds']} s, {exposure['gap_events']} events")
    console.print(table)
    for name, count in summary["missing_by_table"].items():
        console.print(Text(f"  missing in DR: {name}: {count}"))
    if set(summary["missing_by_op"]) - {"insert"}:
        console.print(
            Text(
                "  missing in DR by change: "
                + ", ".join(f"{op} {n}" for op, n in summary["missing_by_op"].items())
            )
        )
    for sample in summary["malformed_samples"]:
        console.print(
            Text("  malformed ", style="yellow") + Text(f"{sample['position']}: {sample['reason']}")
        )
    for mismatch in summary["mismatched"][:10]:
        console.print(
            Text("  mismatch ", style="red")
            + Text(f"{mismatch['table']} key {mismatch['key']} ({mismatch['event_id']})")
        )
    for group in summary["conflicting"][:10]:
        ids = ", ".join(v["event_id"] for v in group["versions"])
        console.print(
            Text("  conflicting ", style="red")
            + Text(f"{group['table']} key {group['key']}: {group['reason']} ({ids})")
        )
    for collision in summary["split_brain"][:10]:
        console.print(
            Text("  split brain ", style="red")
            + Text(
                f"{collision['table']} key {collision['key']}: lost version written {collision['ledger_written_at']}, "
                f"DR version written {collision['dr_written_at']}"
            )
        )
    for collision in summary["stale"][:10]:
        console.print(
            Text("  stale ", style="red")
            + Text(
                f"{collision['table']} key {collision['key']}: lost version written {collision['ledger_written_at']}, "
                f"the DR holds an older one (written {collision['dr_written_at']})"
            )
        )
    if summary["split_brain_unchecked"]:
        console.print(Text(f"  split brain not checked: {summary['split_brain_unchecked']}", style="yellow"))
    console.print(Text(summary["verdict"]))
    console.print(Text(exposure["unknowable"], style="dim"))


def print_replay(console: Console, result: ReplayResult) -> None:
    """What replay did (or, in a dry run, would do): totals, per table, and each event it held back."""
    if result.dry_run:
        console.print(
            f"would replay {len(result.plan)} transactions: {result.applied} rows would be applied, "
            f"{result.present} are already present, {result.already_replayed} were replayed before, "
            f"{len(result.conflicts)} conflicts, {len(result.refused)} refused (dry run; add --apply)"
        )
    else:
        console.print(
            f"replayed {result.transactions} transactions: {result.applied} rows applied, {result.present} already "
            f"present, {result.already_replayed} replayed before, {len(result.conflicts)} conflicts, "
            f"{len(result.refused)} refused"
        )
    for name, outcomes in sorted(result.by_table.items()):
        console.print(Text(f"  {name}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.items()))))
    for conflict in result.conflicts[:50]:
        console.print(
            Text("conflict ", style="red")
            + Text(f"{conflict.table} key {conflict.key} ({conflict.event_id}): {conflict.why}")
        )
        console.print(Text(f"  ledger:  {conflict.ledger_row}"))
        if conflict.current_row is not None:
            console.print(Text(f"  current: {conflict.current_row}"))
    for refusal in result.refused[:50]:
        event = refusal.event
        console.print(
            Text("refused ", style="red")
            + Text(f"{event.table} key {event.key} ({event.event_id}): {refusal.reason}")
        )
    for group in result.ambiguous[:50]:
        ids = ", ".join(e.event_id for e in group.events)
        console.print(
            Text("held back ", style="red") + Text(f"{group.table} key {group.key}: {group.reason} ({ids})")
        )
    for record in result.malformed[:20]:
        console.print(Text("unreadable ", style="yellow") + Text(f"{record.position}: {record.reason}"))
    hidden = (
        max(0, len(result.conflicts) - 50)
        + max(0, len(result.refused) - 50)
        + max(0, len(result.ambiguous) - 50)
    )
    if hidden:
        console.print(f"… and {hidden} more (see --json)")
    print_fences(console, result.fence, moved_only=True, dry_run=result.dry_run)


def print_fences(console: Console, fence: FenceResult, *, moved_only: bool, dry_run: bool = False) -> None:
    """Each sequence fence moved (or would move), those already far enough unless `moved_only`, and
    every key that could not be fenced."""
    verb = "would fence" if dry_run else "fenced"
    for item in fence.fences:
        if item.moved:
            console.print(
                Text(f"{verb} {item.sequence} ({item.table}.{item.column}): {item.before} → {item.after}")
            )
        elif not moved_only:
            console.print(Text(f"{item.sequence} ({item.table}.{item.column}): already at {item.before}"))
    for gap in fence.unfenced:
        console.print(
            Text("not fenced ", style="red")
            + Text(
                f"{gap.sequence} ({gap.table}.{gap.column}): {gap.keys} keys, the highest {gap.highest}: {gap.reason}"
            )
        )


def print_snapshot(console: Console, snap: Snapshot) -> None:
    """One watch cycle as a table, then each problem it found."""
    table = Table(title="drledger watch", show_header=False)

    def row(name: str, value: object) -> None:
        table.add_row(name, Text("n/a" if value is None else str(value)))

    for name, side in (("primary", snap.primary), ("replica", snap.replica), ("ledger", snap.ledger)):
        if side is not None:
            row(name, "up" if side.up else f"DOWN: {side.error}")
    row("relay", None if snap.relay.up is None else ("alive" if snap.relay.up else "DOWN"))
    row("missing in ledger", snap.missing_in_ledger)
    ready = snap.readiness
    row("at risk (not yet on the replica)", ready.at_risk if ready else None)
    row("recoverable (in the ledger)", ready.recoverable if ready else None)
    row("unrecoverable if the primary died now", ready.unrecoverable_if_now if ready else None)
    row("replica lag (s)", snap.replica_lag_s)
    row("ledger lag (s)", snap.ledger_lag_s)
    if snap.slot is not None:
        row(
            "slot",
            f"{'active' if snap.slot.active else 'inactive'}, WAL {snap.slot.wal_status}, "
            f"retained {snap.slot.retained_bytes} bytes",
        )
    console.print(table)
    for problem in snap.problems:
        console.print(Text("problem ", style="red") + Text(problem))


def print_census(console: Console, census: LedgerCensus, ledgers: Sequence[str]) -> None:
    """What a ledger holds (`ledgers`: the display URLs of the ledgers read as one), then a sample of
    its malformed records."""
    summary = census.as_json()
    table = Table(title=Text("ledger " + ", ".join(ledgers)), show_header=False)
    for key in (
        "events",
        "distinct",
        "duplicates",
        "conflicting",
        "malformed",
        "first_commit",
        "last_commit",
    ):
        table.add_row(
            key, Text(str(summary[key]), style="bold red" if key == "conflicting" and summary[key] else "")
        )
    for name, count in summary["tables"].items():
        table.add_row(Text(f"  {name}"), str(count))
    console.print(table)
    for sample in census.malformed_samples:
        console.print(
            Text("malformed ", style="yellow")
            + Text(f"{sample.position}: {sample.reason}: {sample.sample!r}")
        )
