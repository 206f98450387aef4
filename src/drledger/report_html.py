"""The reconcile report and the replay result, each as one self-contained HTML page (inline CSS and
SVG; opens offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from drledger.errors import ExitCode
from drledger.files import write_private
from drledger.reconcile import Report

_WIDTH, _HEIGHT, _PAD = 900, 260, 40

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#1d2330}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
.verdict{padding:.8em 1em;border-radius:6px;background:#eef3fb;border-left:5px solid #3b6fd8}
.verdict.bad{background:#fdf0ef;border-color:#c9372c} .verdict.ok{background:#eef8f0;border-color:#2f8f46}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:.25em .9em;border-bottom:1px solid #dde2ea;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#667085} code{font-size:.92em}
.legend span{display:inline-block;margin-right:1.2em} .sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


def _series_path(counts: dict[int, int], start: int, seconds: int, peak: int) -> str:
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    points = []
    for offset in range(seconds + 1):
        x = _PAD + inner_w * offset / max(seconds, 1)
        y = _HEIGHT - _PAD - inner_h * counts.get(start + offset, 0) / max(peak, 1)
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)


def timeline_svg(report: Report) -> str:
    """Events per second in the ledger and in the DR database; the window the DR lost is shaded."""
    seconds_seen = set(report.ledger_per_second) | set(report.dr_per_second)
    if not seconds_seen:
        return "<p class='muted'>No events in the window.</p>"
    start, end = min(seconds_seen) - 1, max(seconds_seen) + 1
    seconds = end - start
    peak = max([*report.ledger_per_second.values(), *report.dr_per_second.values(), 1])
    inner_w = _WIDTH - 2 * _PAD

    def x_of(second: float) -> float:
        return _PAD + inner_w * (second - start) / max(seconds, 1)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{_HEIGHT}' role='img' "
        "aria-label='events per second, ledger and DR database'>"
    ]
    if report.dr_last_commit_ms is not None and report.ledger_last_commit_ms is not None:
        lost_from = x_of(report.dr_last_commit_ms / 1000)
        lost_to = x_of(report.ledger_last_commit_ms / 1000)
        if lost_to > lost_from:
            parts.append(
                f"<rect id='lost-window' x='{lost_from:.1f}' y='{_PAD}' width='{lost_to - lost_from:.1f}' "
                f"height='{_HEIGHT - 2 * _PAD}' fill='#c9372c' fill-opacity='0.15'/>"
            )
            parts.append(
                f"<text x='{lost_from + 4:.1f}' y='{_PAD + 14}' font-size='12' fill='#c9372c'>lost by the DR database</text>"
            )
    parts.append(
        f"<line x1='{_PAD}' y1='{_HEIGHT - _PAD}' x2='{_WIDTH - _PAD}' y2='{_HEIGHT - _PAD}' stroke='#98a2b3'/>"
    )
    parts.append(f"<line x1='{_PAD}' y1='{_PAD}' x2='{_PAD}' y2='{_HEIGHT - _PAD}' stroke='#98a2b3'/>")
    parts.append(f"<text x='{_PAD - 6}' y='{_PAD + 4}' font-size='11' text-anchor='end'>{peak}</text>")
    parts.append(f"<text x='{_PAD - 6}' y='{_HEIGHT - _PAD}' font-size='11' text-anchor='end'>0</text>")
    parts.append(f"<text x='{_PAD}' y='{_HEIGHT - 12}' font-size='11'>{seconds} s before</text>")
    parts.append(
        f"<text x='{_WIDTH - _PAD}' y='{_HEIGHT - 12}' font-size='11' text-anchor='end'>last second in window</text>"
    )
    parts.append(
        f"<polyline id='ledger-series' fill='none' stroke='#3b6fd8' stroke-width='2' "
        f"points='{_series_path(report.ledger_per_second, start, seconds, peak)}'/>"
    )
    parts.append(
        f"<polyline id='dr-series' fill='none' stroke='#2f8f46' stroke-width='2' stroke-dasharray='5 3' "
        f"points='{_series_path(report.dr_per_second, start, seconds, peak)}'/>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _ambiguous_section(summary: dict[str, Any]) -> str:
    """Lost events the ledger holds in conflicting versions: each version shown, none replayed."""
    rows = [
        [g["table"], g["key"], g["reason"], v["event_id"], v["row"][:300]]
        for g in summary["conflicting"][:100]
        for v in g["versions"]
    ]
    return _table_section(
        "Conflicting versions in the ledger (held back from replay)",
        "conflicting",
        {"table": False, "key": False, "why": False, "event id": True, "row": True},
        rows,
    )


def _split_brain_section(summary: dict[str, Any]) -> str:
    """Lost events whose key the DR database has given to another row: both versions, never overwritten."""
    return _collision_section(
        summary["split_brain"],
        "Split brain: keys written on both sides (neither is overwritten)",
        "split-brain",
    ) + _collision_section(
        summary["stale"],
        "Stale: the DR database holds an older version of the lost row (not overwritten)",
        "stale",
    )


def _collision_section(collisions: list[dict[str, Any]], title: str, table_id: str) -> str:
    rows = [
        [
            c["table"],
            c["key"],
            c["event_id"],
            str(c["ledger_written_at"]),
            c["ledger_row"][:300],
            str(c["dr_written_at"]),
            c["dr_row"][:300],
        ]
        for c in collisions[:200]
    ]
    columns = {"table": False, "key": False, "event id": True, "lost version written": False}
    columns |= {"lost version": True, "DR version written": False, "DR version": True}
    return _table_section(title, table_id, columns, rows)


def _table_section(title: str, table_id: str, columns: dict[str, bool], rows: list[list[str]]) -> str:
    """A titled table, every cell escaped; `columns` maps each header to whether its cells are code."""
    if not rows:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td><code>{esc(cell)}</code></td>" if code else f"<td>{esc(cell)}</td>"
            for cell, code in zip(row, columns.values(), strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f"<h2>{esc(title)}</h2><table id='{table_id}'><tr>{head}</tr>{body}</table>"


def render_html(summary: dict[str, Any], report: Report) -> str:
    counts, exposure = summary["counts"], summary["exposure"]
    tone = "ok" if summary["exit_code"] == ExitCode.SUCCESS else "bad"
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td class='n'>{v:,}</td></tr>" for k, v in counts.items())
    tables = (
        "".join(
            f"<tr><td>{esc(name)}</td><td class='n'>{n:,}</td></tr>"
            for name, n in summary["missing_by_table"].items()
        )
        or "<tr><td colspan='2' class='muted'>none</td></tr>"
    )
    tables += "".join(
        f"<tr><td>{esc(op)}s (all tables)</td><td class='n'>{n:,}</td></tr>"
        for op, n in summary["missing_by_op"].items()
        if set(summary["missing_by_op"]) - {"insert"}
    )
    missing = "".join(
        f"<tr><td><code>{esc(e.event_id)}</code></td><td>{esc(e.op)} {esc(e.table)}</td><td>{esc(e.key)}</td><td class='n'>{e.txid}</td></tr>"
        for e in report.missing_in_dr[:200]
    )
    more = len(report.missing_in_dr) - 200
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drledger reconcile report</title><style>{_STYLE}</style></head>
<body>
<h1>drledger reconcile report</h1>
<p class="muted">window {esc(str(summary["window"]["since"]))} → {esc(str(summary["window"]["until"]))}
(skew margin {summary["window"]["skew_seconds"]} s) · ledgers {esc(", ".join(summary["ledgers"]))} · DR {esc(summary["db"])}</p>
<p class="verdict {tone}" id="verdict">{esc(summary["verdict"])}</p>
<h2>Counts</h2><table id="counts">{rows}</table>
<h2>Exposure</h2>
<table id="exposure">
<tr><td>last commit in the DR database</td><td>{esc(str(exposure["dr_last_commit"]))}</td></tr>
<tr><td>last commit in the ledger</td><td>{esc(str(exposure["ledger_last_commit"]))}</td></tr>
<tr><td>ledger ahead of the DR database by</td><td>{exposure["gap_seconds"]} s, {exposure["gap_events"]:,} events</td></tr>
</table>
<p class="muted">{esc(exposure["unknowable"])}</p>
<h2>Timeline</h2>
<p class="legend"><span><i class="sw" style="background:#3b6fd8"></i>ledger events / s</span>
<span><i class="sw" style="background:#2f8f46"></i>DR database events / s</span>
<span><i class="sw" style="background:#f4c7c3"></i>lost window</span></p>
{timeline_svg(report)}
<h2>Missing from the DR database, by table</h2><table id="missing-by-table">{tables}</table>
{_ambiguous_section(summary)}
{_split_brain_section(summary)}
<h2>Missing events</h2>
<table id="missing-events"><tr><th>event id</th><th>table</th><th>key</th><th>txid</th></tr>{missing}</table>
{f"<p class='muted'>… and {more:,} more (see --json or --save).</p>" if more > 0 else ""}
</body></html>
"""


def write_html(path: Path, summary: dict[str, Any], report: Report) -> None:
    write_private(path, render_html(summary, report).encode("utf-8"), "HTML report")


def render_replay_html(summary: dict[str, Any]) -> str:
    """replay's result (its --json object): what it applied, and every event it did not write with why —
    a conflict with both versions and their write times, a held-back transaction with the event it
    waits behind and the constraint that ties them."""
    esc = html.escape
    tone = "ok" if summary["exit_code"] == ExitCode.SUCCESS else "bad"
    mode = "dry run (rolled back): what --apply would do" if summary["dry_run"] else "applied"
    applied = summary["would_apply"] if summary["dry_run"] else summary["applied"]
    counts = {
        "source transactions": summary["transactions"],
        "would apply" if summary["dry_run"] else "applied": applied,
        "already present": summary["present"],
        "already replayed": summary["already_replayed"],
        "conflicts": len(summary["conflicts"]),
        "refused or held back": len(summary["refused"]),
        "conflicting versions": len(summary["conflicting"]),
        "malformed records": len(summary["malformed"]),
    }
    rows = "".join(f"<tr><td>{esc(k)}</td><td class='n'>{v:,}</td></tr>" for k, v in counts.items())
    conflicts = _table_section(
        "Conflicts: not written, both versions shown",
        "conflicts",
        {"table": False, "key": False, "why": False, "ledger before": True, "ledger row": True}
        | {"lost version written": False, "DR row": True, "DR row written": False},
        [
            [
                c["table"],
                c["key"],
                c["why"],
                (c.get("ledger_before") or "")[:300],
                c["ledger_row"][:300],
                str(c.get("ledger_written_at")),
                (c.get("current_row") or "(no row)")[:300],
                str(c.get("current_written_at")),
            ]
            for c in summary["conflicts"][:500]
        ],
    )
    refused = _table_section(
        "Refused or held back: not written, and why (a held-back transaction names the event it waits behind)",
        "refused",
        {"table": False, "key": False, "txid": False, "event id": True, "reason": False},
        [
            [r["table"], r["key"], str(r["txid"]), r["event_id"], r["reason"]]
            for r in summary["refused"][:1000]
        ],
    )
    verdict = (
        "Everything was written or was already there."
        if tone == "ok"
        else "Some events were not written: a person decides each one below (exit "
        f"{int(summary['exit_code'])})."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drledger replay</title><style>{_STYLE}</style></head>
<body>
<h1>drledger replay</h1>
<p class="muted">{esc(mode)}</p>
<p class="verdict {tone}" id="verdict">{esc(verdict)}</p>
<h2>Counts</h2><table id="counts">{rows}</table>
{conflicts}
{refused}
</body></html>
"""


def write_replay_html(path: Path, summary: dict[str, Any]) -> None:
    write_private(path, render_replay_html(summary).encode("utf-8"), "HTML page")
