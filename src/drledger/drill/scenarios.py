"""Each row of the spec's "DR Scenarios" table, made to happen for real and checked against ground truth."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from drledger.drill import SCENARIO_NAMES
from drledger.drill.alerting import LocalAlerting, binaries
from drledger.drill.old_region import OldRegionFindings
from drledger.drill.old_region import old_region_returns as old_region_returns_step
from drledger.drill.postgres.cluster import free_port
from drledger.drill.postgres.rig import FailoverRig, GroundTruth
from drledger.drill.run import Drill, DrillResult, DrillSettings, DrWrites, Progress, run_drill
from drledger.errors import ExitCode
from drledger.ledger import sibling_ledger_url
from drledger.recovery import ReconcileRequest, run_reconcile
from drledger.replay import OTHER_UNIQUE_KEY
from drledger.timeutil import format_instant
from drledger.watch.cycle import Snapshot, WatchSettings
from drledger.watch.service import run_watch


@dataclass
class ScenarioOutcome:
    scenario: str
    expected: str
    observed: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    # Shown under the scenarios' table; not part of --json (the figures hold the same numbers).
    detail: RenderableType | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "expected": self.expected,
            "observed": self.observed,
            "pass": self.passed,
            "figures": self.figures,
        }


def db_lost_ledger_ok(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    result = run_drill(settings, progress)
    passed = (
        result.verdict == "ok" and result.lost_without_ledger > 0 and result.recovered == result.detected > 0
    )
    return ScenarioOutcome(
        "db-lost-ledger-ok",
        "The DB region dies, the ledger survives: everything that reached the ledger is recovered.",
        f"{result.lost_without_ledger} records lost at failover; {result.detected} detected, {result.recovered} "
        f"recovered; {result.unrecoverable} never reached the ledger; {result.missing_after_replay} still missing.",
        passed,
        result.as_json(),
    )


def ledger_lagging(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    pause_s = round(max(1.0, min(3.0, settings.duration_s / 3)), 1)

    def stall(rig: FailoverRig) -> None:
        progress(f"the relay stalls {pause_s:g} s before the disaster")
        rig.pause_relay()

    result = run_drill(settings, progress, before={pause_s: stall})
    passed = result.verdict == "ok" and result.unrecoverable > 0
    return ScenarioOutcome(
        "ledger-lagging",
        "The relay falls behind before the disaster: partial recovery, and the report says how much could not be known.",
        f"relay stalled {pause_s:g} s before the disaster: {result.lost_without_ledger} lost, {result.recovered} recovered, "
        f"{result.unrecoverable} unrecoverable. The report shows the ledger's last commit "
        f"{result.ledger_blind_seconds} s before the disaster: commits in that time could not be known "
        f"({result.missing_in_ledger} of them reached the DR database; reconcile exit {result.reconcile_exit_code}).",
        passed,
        result.as_json(),
    )


def not_committed(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    result = run_drill(replace(settings, rollback_every=2), progress)
    passed = (
        result.verdict == "ok"
        and result.rolled_back > 0
        and result.rolled_back_in_ledger == 0
        and result.phantom_rows == 0
    )
    return ScenarioOutcome(
        "not-committed",
        "Rolled-back transactions: nothing in the ledger, nothing to recover, no phantom rows.",
        f"{result.rolled_back} rows rolled back: {result.rolled_back_in_ledger} in the ledger, {result.phantom_rows} "
        f"phantom rows after replay; committed rows: {result.recovered} recovered, {result.missing_after_replay} missing.",
        passed,
        result.as_json(),
    )


def region_lost_with_ledger(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    result = run_drill(settings, progress, lose_ledger=True)
    said_impossible = result.reconcile_error is not None or result.reconcile_exit_code == ExitCode.NEEDS_HUMAN
    passed = (
        said_impossible
        and result.recovered == 0
        and result.missing_after_replay == result.lost_without_ledger > 0
    )
    how = result.reconcile_error or f"reconcile exit {result.reconcile_exit_code}"
    return ScenarioOutcome(
        "region-lost-with-ledger",
        "The ledger lived in the failed region and is lost too: recovery impossible, said plainly (never '0 missing').",
        f"{result.lost_without_ledger} records lost and unrecoverable; reconcile said: {how}",
        passed,
        result.as_json(),
    )


def ledger_up_relay_down(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    drill = Drill(settings, progress)
    try:
        drill.setup()
        half = settings.duration_s / 2
        progress(f"writing; the relay dies after {half:g} s while the primary stays up")
        truth = drill.rig.run_workload(settings.tps, half)
        time.sleep(0.5)
        with _AlertWatch(drill, progress) as alerting:
            killed_at = time.time()
            drill.rig.stop_relay(signal.SIGKILL)
            down_since = format_instant(time.time_ns() // 1_000_000)
            truth_after, alert_s, how = alerting.write_until_alert(settings, half, killed_at)
        # Checked by the rows the application placed (the ground truth knows each one's key); the alert
        # and the report count every change.
        never_relayed = len((truth.keys | truth_after.keys) - drill.rig.keys_in_ledger())
        progress("reconcile: the ledger against the live primary (a routine check)")
        report = run_reconcile(ReconcileRequest([drill.rig.ledger_url], drill.rig.primary_dsn))
        flagged = len(report.missing_in_ledger)
        table = drill.rig.demo_table
        flagged_rows = sum(1 for r in report.missing_in_ledger if r.table == table and r.op == "insert")
        alert = (
            f"ALERT drledger: {flagged} committed changes never reached the ledger; the relay has been down since "
            f"{down_since}. Restart it (drledger relay) before a failover makes them unrecoverable."
        )
        heard = f"relay death → {how}: {alert_s:.1f} s" if alert_s is not None else f"no alert heard ({how})"
        passed = (
            report.exit_code == ExitCode.NEEDS_HUMAN
            and flagged_rows == never_relayed > 0
            and flagged >= flagged_rows
            and alert_s is not None
        )
        return ScenarioOutcome(
            "ledger-up-relay-down",
            "Capture breaks while the primary is alive: an alert fires, and reconcile shows events missing_in_ledger.",
            f"{never_relayed} orders placed after the relay died; {heard}; reconcile exit {report.exit_code}, "
            f"missing_in_ledger {flagged} ({flagged_rows} of them those orders). {alert}",
            passed,
            {
                "never_relayed": never_relayed,
                "missing_in_ledger": flagged,
                "missing_in_ledger_orders": flagged_rows,
                "exit_code": report.exit_code,
                "alert": alert,
                "relay_death_to_alert_s": None if alert_s is None else round(alert_s, 1),
                "alert_path": how,
            },
        )
    finally:
        drill.close()


class _AlertWatch:
    """How the relay's death is heard. With Prometheus and Alertmanager installed: for real — the
    watcher serves its gauges, a local Prometheus evaluates drledger's packaged rules, and the time is
    until DrledgerRelayDown reaches Alertmanager's webhook. Without them: until the watcher itself
    first reports the relay down (the rule's 30 s `for` not included), and the outcome says so."""

    TIMEOUT_S = 120.0

    def __init__(self, drill: Drill, progress: Progress) -> None:
        self.drill = drill
        self.progress = progress
        self.stop = threading.Event()
        self.port = free_port()
        self.alerting: LocalAlerting | None = None
        self.relay_seen_down: float | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _AlertWatch:
        rig = self.drill.rig
        settings = WatchSettings(
            rig.primary_dsn, rig.ledger_url, rig.dr_dsn, interval_s=1.0, grace_s=5.0, skew_s=1.0
        )

        def seen(snap: Snapshot) -> None:
            if snap.relay.up is False and self.relay_seen_down is None:
                self.relay_seen_down = time.time()

        self.thread = threading.Thread(
            target=run_watch,
            args=(settings, self.stop),
            kwargs={"listen": ("127.0.0.1", self.port), "on_cycle": seen},
            name="drill-watch-service",
            daemon=True,
        )
        self.thread.start()
        if binaries() is not None:
            self.progress("Prometheus and Alertmanager scrape drledger watch, with drledger's alert rules")
            self.alerting = LocalAlerting([f"127.0.0.1:{self.port}"]).start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self._query("drledger_relay_up == 1"):
                time.sleep(0.5)
        else:
            self.progress(
                "Prometheus and Alertmanager are not installed: the watcher's own detection is timed"
            )
        return self

    def _query(self, expr: str) -> bool:
        assert self.alerting is not None
        try:
            return bool(self.alerting.query(expr))
        except OSError:
            return False

    def write_until_alert(
        self, settings: DrillSettings, at_least_s: float, killed_at: float
    ) -> tuple[GroundTruth, float | None, str]:
        """Keep the application writing for `at_least_s`, and on until the alert is heard."""
        stop = threading.Event()
        outcome: list[GroundTruth] = []
        writer = threading.Thread(
            target=lambda: outcome.append(
                self.drill.rig.run_workload(settings.tps, at_least_s + self.TIMEOUT_S, stop=stop)
            ),
            name="workload",
            daemon=True,
        )
        writer.start()
        heard: float | None = None
        if self.alerting is not None:
            how = "DrledgerRelayDown at Alertmanager's webhook"
            self.progress(f"waiting for {how}")
            note = self.alerting.webhook.first("DrledgerRelayDown", self.TIMEOUT_S)
            heard = None if note is None else note.received_at - killed_at
        else:
            how = "the watcher reporting the relay down"
            deadline = time.monotonic() + self.TIMEOUT_S
            while self.relay_seen_down is None and time.monotonic() < deadline:
                time.sleep(0.2)
            heard = None if self.relay_seen_down is None else self.relay_seen_down - killed_at
        left = at_least_s - (time.time() - killed_at)
        if left > 0:
            time.sleep(left)
        stop.set()
        writer.join(60)
        return (outcome[0] if outcome else GroundTruth()), heard, how

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(15)
        if self.alerting is not None:
            self.alerting.close()


def healthy(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    drill = Drill(settings, progress)
    try:
        drill.setup()
        drill.rig.run_workload(settings.tps, settings.duration_s)
        progress(f"no disaster: waiting {drill.lag_s + 1:g} s for the replica to catch up")
        time.sleep(drill.lag_s + 1)
        progress("reconcile: the ledger against the replica")
        report = run_reconcile(ReconcileRequest([drill.rig.ledger_url], drill.rig.dr_dsn))
        counts = (
            len(report.missing_in_dr),
            len(report.missing_in_ledger),
            len(report.mismatched),
            report.malformed,
        )
        passed = (
            report.exit_code == ExitCode.SUCCESS
            and counts == (0, 0, 0, 0)
            and report.ledger_events == report.dr_events > 0
        )
        return ScenarioOutcome(
            "healthy",
            "No disaster: reconcile is clean.",
            f"{report.ledger_events} events in the ledger, {report.dr_events} in the replica; missing in DR {counts[0]}, "
            f"missing in ledger {counts[1]}, mismatched {counts[2]}, malformed {counts[3]}; exit {report.exit_code}.",
            passed,
            {
                "ledger_events": report.ledger_events,
                "dr_events": report.dr_events,
                "exit_code": report.exit_code,
            },
        )
    finally:
        drill.close()


OLD_REGION_EXPECTED = (
    "The old region returns after the ledger's recovery: its primary, started isolated and read-only, is "
    "reconciled against the promoted database and replayed; nothing committed stays lost (also what a "
    "stalled relay never put in the ledger)."
)


def old_region_returns(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    """Two disasters: one with the ledger caught up, one with the relay stalled before it; after each,
    the ledger's recovery and then the old region's."""
    if not settings.rollback_every:
        settings = replace(settings, rollback_every=10)  # rolled-back keys must not come back either
    pause_s = round(max(1.0, min(3.0, settings.duration_s / 3)), 1)
    cases = [
        _old_region_case(settings, progress, "ledger caught up", None),
        _old_region_case(settings, progress, "relay stalled", pause_s),
    ]
    plain, stalled = cases[0].old, cases[1].old
    passed = (
        all(c.result.verdict == "ok" and c.old.on_target for c in cases)
        and stalled.unrecoverable_after_ledger > 0
        and stalled.replayed >= stalled.unrecoverable_after_ledger
        and plain.rolled_back > 0
    )
    observed = (
        " ".join(
            f"{c.label}: unrecoverable after the ledger {c.old.unrecoverable_after_ledger} of "
            f"{c.result.events(c.result.lost_without_ledger, 'lost')} events lost, after the old region returned "
            f"{c.old.unrecoverable_after_old_region} (target 0; the old primary returned {c.old.replayed})."
            for c in cases
        )
        + f" Phantom rows {sum(c.old.phantom_rows for c in cases)}, rolled-back keys present "
        f"{sum(c.old.rolled_back_present for c in cases)} of {sum(c.old.rolled_back for c in cases)}, "
        f"conflicts {sum(c.old.conflicts for c in cases)}."
    )
    return ScenarioOutcome(
        "old-region-returns",
        OLD_REGION_EXPECTED,
        observed,
        passed,
        {
            "ledger_caught_up": cases[0].figures(),
            "relay_stalled": cases[1].figures(),
        },
        detail=_old_region_table(cases),
    )


@dataclass
class _OldRegionCase:
    name: str
    stall_s: float | None
    result: DrillResult
    old: OldRegionFindings

    @property
    def label(self) -> str:
        return f"{self.name} {self.stall_s:g} s" if self.stall_s else self.name

    def figures(self) -> dict[str, Any]:
        """The case's --json figures: `relay_stalled_s` (the relay's stall before the disaster; null: it
        kept up), `lost_at_failover`, `recovered_by_ledger` (events: rows placed, updates, deletes),
        OldRegionFindings' keys (documented there:
        `unrecoverable_after_ledger`, `unrecoverable_after_old_region` — target 0 —, `phantom_rows`, …),
        and `drill`: the ledger drill's own --json object."""
        return {
            "relay_stalled_s": self.stall_s,
            "lost_at_failover": self.result.events(self.result.lost_without_ledger, "lost"),
            "recovered_by_ledger": self.result.events(self.result.recovered, "recovered"),
            **self.old.as_json(),
            "drill": self.result.as_json(),
        }


def _old_region_case(
    settings: DrillSettings, progress: Progress, name: str, stall_s: float | None
) -> _OldRegionCase:
    """One disaster and the ledger's recovery (with the relay stalled `stall_s` before it, if set), then
    the old region returns. A ledger of its own, as each scenario has."""

    def said(line: str) -> None:
        progress(f"{name}: {line}")

    def stall(rig: FailoverRig) -> None:
        said(f"the relay stalls {stall_s:g} s before the disaster")
        rig.pause_relay()

    found: list[OldRegionFindings] = []
    before: dict[float, Callable[[FailoverRig], None]] | None = None if stall_s is None else {stall_s: stall}
    result = run_drill(
        _own_ledger(settings, "stalled" if stall_s else "caught-up"),
        said,
        before=before,
        after=lambda rig: found.append(old_region_returns_step(rig, said)),
    )
    return _OldRegionCase(name, stall_s, result, found[0])


def _old_region_table(cases: list[_OldRegionCase]) -> Table:
    table = Table(title="old-region-returns: against the ground truth")
    table.add_column("")
    for case in cases:
        table.add_column(case.label, justify="right")
    table.add_column("target", justify="right")
    rows: list[tuple[str, str, Callable[[_OldRegionCase], int]]] = [
        ("orders placed (acknowledged to the application)", "", lambda c: c.old.committed),
        ("events lost at failover", "", lambda c: c.result.events(c.result.lost_without_ledger, "lost")),
        ("events recovered from the ledger", "", lambda c: c.result.events(c.result.recovered, "recovered")),
        ("events unrecoverable after the ledger", "", lambda c: c.old.unrecoverable_after_ledger),
        ("events returned by the old primary", "", lambda c: c.old.replayed),
        ("orders missing after the old region returned", "0", lambda c: c.old.unrecoverable_after_old_region),
        ("phantom rows", "0", lambda c: c.old.phantom_rows),
        ("rolled-back keys present", "0", lambda c: c.old.rolled_back_present),
        ("rows not as the acknowledged commits left them", "0", lambda c: c.old.wrong_rows),
    ]
    for label, target, value in rows:
        table.add_row(label, *(f"{value(c):,}" for c in cases), target)
    return table


def dr_takes_unique_value(settings: DrillSettings, progress: Progress) -> ScenarioOutcome:
    """After promotion (and fence) the DR application places an order under the reference — a unique key
    besides the primary key — that a lost order holds in the ledger. Replay must report that lost order
    as a conflict named by the unique constraint, leave the DR's order as it is, and bring back
    everything else."""
    taken: dict[str, Any] = {}

    def dr_application(rig: FailoverRig, truth: GroundTruth, lost_in_ledger: set[int]) -> DrWrites:
        # A lost order committed alone and never changed after, so neither its source transaction nor a
        # later one holds anything else to hold back behind it.
        changed = {ch.key for c in truth.commits for ch in c.changes if ch.table == "orders"}
        alone = sorted(
            c.keys[0]
            for c in truth.commits
            if len(c.keys) == 1 and not c.changes and c.keys[0] in lost_in_ledger and c.keys[0] not in changed
        )
        if not alone:
            progress("no lost order reached the ledger: the DR application has no reference to take")
            return DrWrites()
        lost_key = alone[len(alone) // 2]
        dr_key, reference = rig.dr_takes_reference_of(lost_key)
        progress(
            f"the DR application places order {dr_key} under {reference}, the reference of lost order {lost_key}"
        )
        taken.update(
            lost_key=lost_key, dr_key=dr_key, reference=reference, constraint=rig.reference_constraint
        )
        return DrWrites({dr_key}, {lost_key})

    result = run_drill(settings, progress, promoted=dr_application)
    reported = result.conflicts_reported
    named = (
        bool(taken)
        and [c["key"] for c in reported] == [taken["lost_key"]]
        and reported[0]["why"].startswith(OTHER_UNIQUE_KEY)
        and f": {taken['constraint']} " in reported[0]["why"]
    )
    passed = result.verdict == "ok" and named and result.recovered > 0
    said = "; ".join(f"order {c['key']}: {c['why']}" for c in reported) or "none"
    observed = (
        f"the DR application took the reference of lost order {taken['lost_key']} (its own order {taken['dr_key']}); "
        if taken
        else "no lost order reached the ledger, so the DR application took nothing; "
    ) + (
        f"{result.lost_without_ledger} lost at failover, {result.recovered} recovered, "
        f"{result.unrecoverable} never reached the ledger, {result.missing_after_replay} still missing; "
        f"conflicts reported: {said}."
    )
    return ScenarioOutcome(
        "dr-takes-unique-value",
        "The promoted database takes a lost row's unique value (an order reference) before replay: replay "
        "reports exactly that row as a conflict named by the unique constraint, and everything else comes back.",
        observed,
        passed,
        {**result.as_json(), "dr_took": taken or None},
    )


_RUNS: tuple[Callable[[DrillSettings, Progress], ScenarioOutcome], ...] = (
    db_lost_ledger_ok,
    ledger_lagging,
    not_committed,
    region_lost_with_ledger,
    ledger_up_relay_down,
    healthy,
    old_region_returns,
    dr_takes_unique_value,
)
SCENARIOS = dict(zip(SCENARIO_NAMES, _RUNS, strict=True))


def run_scenarios(names: list[str], settings: DrillSettings, progress: Progress) -> list[ScenarioOutcome]:
    outcomes = []
    for name in names:
        progress(f"scenario {name}")
        # Each scenario gets its own ledger, so one's events never count in another's.
        outcomes.append(SCENARIOS[name](_own_ledger(settings, name), progress))
    return outcomes


def _own_ledger(settings: DrillSettings, name: str) -> DrillSettings:
    url = settings.ledger_url
    if url is None:
        return replace(settings, keep=False)  # each rig makes its own embedded ledger
    return replace(settings, ledger_url=sibling_ledger_url(url, f"{name}-{int(time.time())}"), keep=False)


def scenario_table(outcomes: list[ScenarioOutcome]) -> RenderableType:
    """The scenarios, one row each; under it, the tables of figures some scenarios add."""
    table = Table(title="DR scenarios, measured", show_lines=True)
    table.add_column("scenario")
    table.add_column("expected")
    table.add_column("observed")
    table.add_column("pass")
    for outcome in outcomes:
        table.add_row(
            outcome.scenario,
            outcome.expected,
            outcome.observed,
            "[green]yes[/]" if outcome.passed else "[red]NO[/]",
        )
    details = [outcome.detail for outcome in outcomes if outcome.detail is not None]
    return Group(table, *details) if details else table
