"""The drill as a picture (`drill --html FILE`): one self-contained page, inline CSS and SVG, no
script and no network. Three panels share one time axis, seconds from the workload's start:

1. commits per second on the primary, each second split into what the replica kept, what the
   failover lost and replay recovered, and what was lost for good; the disaster and the lost window;
2. the frontiers: the newest commit on the primary, on the replica and in the ledger, as the watcher
   saw them (the vertical gap is each one's lag);
3. the watcher's readiness gauges over time — at risk, recoverable, unrecoverable if now — with its
   prediction at the disaster beside what was measured.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from drledger.drill.run import DrillResult, DrillTimeline, WatchSample
from drledger.files import write_private
from drledger.report_html import _STYLE

_W, _H, _L, _R, _T, _B = 920, 230, 56, 16, 14, 30
_HALF_LABEL = 36  # half the width of an 11 px "lost window"
_KEPT, _RECOVERED, _LOST = "#9aa5b8", "#2f8f46", "#c9372c"
_PRIMARY, _REPLICA, _LEDGER = "#1d2330", "#3b6fd8", "#d08a12"


class _Axis:
    def __init__(self, start_ms: int, end_ms: int, top: float) -> None:
        self.start_ms, self.end_ms, self.top = start_ms, max(end_ms, start_ms + 1000), top

    def x(self, ms: float) -> float:
        return _L + (_W - _L - _R) * (ms - self.start_ms) / (self.end_ms - self.start_ms)

    def y(self, value: float, peak: float) -> float:
        return _H - _B - (_H - _B - _T) * value / max(peak, 1e-9)

    def frame(self, label: str, peak: float, unit: str, ident: str) -> list[str]:
        parts = [
            f"<svg id='{ident}' xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' role='img' "
            f"aria-label='{html.escape(label)}'>",
            f"<line x1='{_L}' y1='{_H - _B}' x2='{_W - _R}' y2='{_H - _B}' stroke='#667085'/>",
            f"<line x1='{_L}' y1='{_T}' x2='{_L}' y2='{_H - _B}' stroke='#667085'/>",
            f"<text x='{_L - 6}' y='{_T + 10}' font-size='11' text-anchor='end'>{peak:g}</text>",
            f"<text x='{_L - 6}' y='{_H - _B}' font-size='11' text-anchor='end'>0</text>",
            f"<text x='{_L + 4}' y='{_T + 10}' font-size='11' fill='#667085'>{html.escape(unit)}</text>",
        ]
        seconds = (self.end_ms - self.start_ms) / 1000
        step = max(1, round(seconds / 10))
        for second in range(0, int(seconds) + 1, step):
            x = self.x(self.start_ms + second * 1000)
            parts.append(
                f"<text x='{x:.1f}' y='{_H - _B + 16}' font-size='11' text-anchor='middle'>{second} s</text>"
            )
        return parts

    def disaster(self, at_ms: int | None) -> list[str]:
        if at_ms is None:
            return []
        x = self.x(at_ms)
        return [
            f"<line class='disaster' x1='{x:.1f}' y1='{_T}' x2='{x:.1f}' y2='{_H - _B}' stroke='{_LOST}' "
            "stroke-width='2' stroke-dasharray='5 3'/>",
            f"<text x='{x - 4:.1f}' y='{_T + 10}' font-size='11' text-anchor='end' fill='{_LOST}'>disaster</text>",
        ]


def _commits_panel(t: DrillTimeline, axis: _Axis) -> str:
    kept: Counter[int] = Counter()
    recovered: Counter[int] = Counter()
    lost: Counter[int] = Counter()
    for acked, key in t.commits:
        second = (acked - axis.start_ms) // 1000
        if key not in t.lost:
            kept[second] += 1
        elif key in t.recovered:
            recovered[second] += 1
        else:
            lost[second] += 1
    seconds = set(kept) | set(recovered) | set(lost)
    peak = max((kept[s] + recovered[s] + lost[s] for s in seconds), default=1)
    parts = axis.frame("commits per second on the primary", peak, "commits/s", "commits")
    lost_times = [acked for acked, key in t.commits if key in t.lost]
    if lost_times:
        x0, x1 = axis.x(min(lost_times)), axis.x(max(lost_times))
        parts.append(
            f"<rect id='lost-window' x='{x0:.1f}' y='{_T}' width='{max(x1 - x0, 2):.1f}' height='{_H - _B - _T}' "
            f"fill='{_LOST}' fill-opacity='0.10'/>"
        )
        # Centred on the window, but never past the plot's edges: the window often ends at the right one.
        label_x = min(max((x0 + x1) / 2, _L + _HALF_LABEL), _W - _R - _HALF_LABEL)
        parts.append(
            f"<text x='{label_x:.1f}' y='{_T + 24}' font-size='11' text-anchor='middle' fill='{_LOST}'>"
            "lost window</text>"
        )
    width = max(1.0, axis.x(axis.start_ms + 1000) - axis.x(axis.start_ms) - 1)
    for second in sorted(seconds):
        x = axis.x(axis.start_ms + second * 1000)
        base = 0
        for count, colour in ((kept[second], _KEPT), (recovered[second], _RECOVERED), (lost[second], _LOST)):
            if count:
                y_top, y_bottom = axis.y(base + count, peak), axis.y(base, peak)
                parts.append(
                    f"<rect x='{x:.1f}' y='{y_top:.1f}' width='{width:.1f}' height='{y_bottom - y_top:.1f}' "
                    f"fill='{colour}'/>"
                )
                base += count
    parts += axis.disaster(t.disaster_at_ms)
    parts.append("</svg>")
    return "".join(parts)


def _line(points: Sequence[tuple[float, float]], colour: str, ident: str, dash: str = "") -> str:
    if not points:
        return ""
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dashing = f" stroke-dasharray='{dash}'" if dash else ""
    return f"<polyline id='{ident}' points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dashing}/>"


def _series(
    samples: Sequence[WatchSample], value: Callable[[WatchSample], float | None], axis: _Axis, peak: float
) -> list[tuple[float, float]]:
    points = []
    for sample in samples:
        v = value(sample)
        if v is not None:
            points.append((axis.x(sample.at_ms), axis.y(v, peak)))
    return points


def _frontier_panel(t: DrillTimeline, axis: _Axis) -> str:
    def since_start(ms: int | None) -> float | None:
        return None if ms is None else max(0.0, (ms - axis.start_ms) / 1000)

    peak = (axis.end_ms - axis.start_ms) / 1000
    parts = axis.frame(
        "newest commit on the primary, the replica and in the ledger",
        round(peak),
        "newest commit (s)",
        "frontiers",
    )
    parts.append(
        _line(
            _series(t.samples, lambda s: since_start(s.primary_ms), axis, peak), _PRIMARY, "primary-frontier"
        )
    )
    parts.append(
        _line(
            _series(t.samples, lambda s: since_start(s.ledger_ms), axis, peak),
            _LEDGER,
            "ledger-frontier",
            "6 3",
        )
    )
    parts.append(
        _line(
            _series(t.samples, lambda s: since_start(s.replica_ms), axis, peak), _REPLICA, "replica-frontier"
        )
    )
    parts += axis.disaster(t.disaster_at_ms)
    parts.append("</svg>")
    return "".join(parts)


def _readiness_panel(t: DrillTimeline, axis: _Axis) -> str:
    values = [v for s in t.samples for v in (s.at_risk, s.recoverable, s.unrecoverable) if v is not None]
    peak = max([*values, 1])
    parts = axis.frame("readiness gauges of drledger watch", peak, "events", "readiness")
    parts.append(_line(_series(t.samples, lambda s: s.at_risk, axis, peak), _LOST, "at-risk"))
    parts.append(
        _line(_series(t.samples, lambda s: s.recoverable, axis, peak), _RECOVERED, "recoverable", "6 3")
    )
    parts.append(_line(_series(t.samples, lambda s: s.unrecoverable, axis, peak), _PRIMARY, "unrecoverable"))
    parts += axis.disaster(t.disaster_at_ms)
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        "<p class='legend'>"
        + "".join(
            f"<span><i class='sw' style='background:{colour}'></i>{html.escape(text)}</span>"
            for colour, text in items
        )
        + "</p>"
    )


def render_drill_html(result: DrillResult, tps: float) -> str:
    t = result.timeline
    if t is None or not t.commits:
        body = "<p class='muted'>The drill recorded no commits.</p>"
        start, end = 0, 1000
    else:
        start = min(acked for acked, _ in t.commits) // 1000 * 1000
        end = max([acked for acked, _ in t.commits] + [t.disaster_at_ms or 0]) + 1500
        axis = _Axis(start, end, _T)
        body = (
            "<h2>Commits per second on the primary</h2>"
            + _legend(
                [
                    (_KEPT, "reached the replica"),
                    (_RECOVERED, "lost at failover, recovered from the ledger"),
                    (_LOST, "lost for good (never reached the ledger)"),
                ]
            )
            + _commits_panel(t, axis)
            + "<h2>Frontiers: the newest commit each side holds</h2>"
            + _legend([(_PRIMARY, "primary"), (_REPLICA, "DR replica"), (_LEDGER, "ledger")])
            + _frontier_panel(t, axis)
            + "<h2>What drledger watch said a failover would do</h2>"
            + _legend([(_LOST, "at risk"), (_RECOVERED, "recoverable"), (_PRIMARY, "unrecoverable if now")])
            + _readiness_panel(t, axis)
        )
    rows = [
        ("committed", result.committed, None),
        (
            "events lost at failover (replication alone)",
            result.events(result.lost_without_ledger, "lost"),
            result.predicted_at_risk,
        ),
        (
            "recovered from the ledger",
            result.events(result.recovered, "recovered"),
            result.predicted_recoverable,
        ),
        (
            "unrecoverable (never reached the ledger)",
            result.events(result.unrecoverable, "unrecoverable"),
            result.predicted_unrecoverable,
        ),
        ("still missing after replay", result.missing_after_replay, None),
    ]
    table = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='n'>{measured:,}</td>"
        f"<td class='n'>{'' if predicted is None else f'{predicted:,}'}</td></tr>"
        for name, measured, predicted in rows
    )
    verdict = "ok" if result.verdict == "ok" else "bad"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>drledger drill</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>DR drill: {tps:g} TPS, replication lag {result.replication_lag_s:g} s</h1>"
        f"<p class='muted'>ledger {html.escape(result.ledger)}; drill took {result.total_seconds:g} s"
        + (
            ""
            if result.replica_replication is None
            else f"; <span id='replica-replication'>the replica replicated by "
            f"{html.escape(result.replica_replication)}</span>"
        )
        + "</p>"
        f"<p class='verdict {verdict}' id='verdict'>verdict: <b>{html.escape(result.verdict)}</b> — "
        f"{result.lost_without_ledger:,} records lost at failover, {result.recovered:,} recovered, "
        f"{result.missing_after_replay:,} still missing.</p>"
        "<table id='outcome'><tr><th></th><th>measured</th><th>predicted by drledger watch at the disaster</th></tr>"
        f"{table}</table>{body}</body></html>"
    )


def write_drill_html(path: Path, result: DrillResult, tps: float) -> None:
    write_private(path, render_drill_html(result, tps).encode(), "the drill's page")
