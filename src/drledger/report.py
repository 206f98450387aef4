"""A reconcile Report as JSON, as a saved file for replay, and as a terminal summary.

The HTML page lives in report_html.py; this module holds the shapes every output shares.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from drledger.errors import ExitCode
from drledger.masking import mask_dsn, mask_url
from drledger.reconcile import Report
from drledger.timeutil import format_instant

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
        return "Needs a human: " + "; ".join(parts) + "."
    if report.missing_in_dr:
        return f"{len(report.missing_in_dr)} committed events are missing from the DR database and can be replayed."
    return "Nothing is missing: every ledger event in the window is in the DR database."


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
            "mismatched": len(report.mismatched),
            "duplicates": report.duplicates,
            "malformed": report.malformed,
            "conflicting": sum(len(a.events) for a in report.ambiguous),
            "split_brain": len(report.split_brain),
        },
        "exposure": {
            "dr_last_commit": format_instant(report.dr_last_commit_ms),
            "ledger_last_commit": format_instant(report.ledger_last_commit_ms),
            "gap_seconds": report.gap_seconds,
            "gap_events": len(report.missing_in_dr),
            "unknowable": UNKNOWABLE,
        },
        "missing_by_table": dict(sorted(by_table.items())),
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
        "split_brain": [
            {
                "event_id": c.event_id,
                "table": c.table,
                "key": c.key,
                "ledger_row": c.ledger_row,
                "ledger_written_at": format_instant(c.ledger_written_ms),
                "dr_row": c.dr_row,
                "dr_written_at": format_instant(c.dr_written_ms),
            }
            for c in report.split_brain
        ],
        "split_brain_unchecked": report.split_brain_unchecked,
        "malformed_samples": [
            {"position": s.position, "reason": s.reason, "sample": s.sample} for s in report.malformed_samples
        ],
        "verdict": verdict(report),
        "exit_code": report.exit_code,
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
    alarming = ("missing_in_dr", "missing_in_ledger", "mismatched", "malformed", "conflicting", "split_brain")
    for key, value in counts.items():
        table.add_row(key, Text(str(value), style="bold red" if key in alarming and value else ""))
    table.add_section()
    table.add_row("last commit in DR", str(exposure["dr_last_commit"]))
    table.add_row("last commit in ledger", str(exposure["ledger_last_commit"]))
    table.add_row("ledger ahead of DR by", f"{exposure['gap_seconds']} s, {exposure['gap_events']} events")
    console.print(table)
    for name, count in summary["missing_by_table"].items():
        console.print(Text(f"  missing in DR: {name}: {count}"))
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
    if summary["split_brain_unchecked"]:
        console.print(Text(f"  split brain not checked: {summary['split_brain_unchecked']}", style="yellow"))
    console.print(Text(summary["verdict"]))
    console.print(Text(exposure["unknowable"], style="dim"))
