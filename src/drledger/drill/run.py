"""`drledger drill`: the spec's disaster, for real, on this machine, measured against ground truth.

A primary and a replica trailing it by a drawn lag, the relay into a ledger, inserts at a steady rate
with every acknowledged commit recorded client-side; mid-workload the primary region dies (in-flight
WAL dropped, primary and relay SIGKILLed), the replica is promoted, then reconcile, fence, replay and
a final check of the promoted database against what the application was told was committed.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from drledger.drill import changes as truth_of
from drledger.drill.postgres.rig import FailoverRig, GroundTruth
from drledger.errors import DrledgerError, ExitCode
from drledger.events import DEFAULT_OPS, LedgerEvent
from drledger.ledger import destroy_ledger, open_ledger
from drledger.ledger.base import Ledger, ProgressCallback
from drledger.masking import mask_url
from drledger.reconcile import Report
from drledger.recovery import ReconcileRequest, run_reconcile
from drledger.relay.engine import lag_percentile, read_stats
from drledger.replay import CHUNK_EVENTS, ReplayResult, replay
from drledger.runbook import fence_from_ledger
from drledger.watch.cycle import Snapshot, Watcher, WatchSettings

Progress = Callable[[str], None]

_LAG = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?))?\s*s?\s*$")


def draw_lag(text: str, rng: random.Random) -> float:
    """'2-5s' draws uniformly from the range; '3s' is fixed."""
    match = _LAG.match(text)
    if not match:
        raise DrledgerError(f"--lag '{text}' is not a lag; write it like 3s or 2-5s.")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) else low
    if high < low:
        raise DrledgerError(f"--lag '{text}' has its range backwards.")
    return round(rng.uniform(low, high), 2)


@dataclass
class DrillSettings:
    tps: float = 100
    duration_s: float = 30
    lag: str = "2-5s"
    ledger_url: str | None = None
    seed: int | None = None
    keep: bool = False
    multi_row_every: int = 0
    rollback_every: int = 0
    warmup_rows: int | None = None  # None: WARMUP_ROWS, or QUEUE_WARMUP_ROWS into a queue ledger
    engine: str = "postgresql"
    # What the workload does and drledger captures: every change by default; ("insert",) is the
    # insert-only drill.
    ops: tuple[str, ...] = DEFAULT_OPS

    def __post_init__(self) -> None:
        # A wrong --engine, --tps or --duration is one sentence before anything starts.
        _check_engine(self.engine)
        if self.tps <= 0 or self.duration_s <= 0:
            raise DrledgerError("--tps and --duration must be positive.")


ENGINES = ("postgresql", "mysql")
#: Rows the relay is warmed up with by default. A queue ledger (SQS) gets fewer: every one of them must
#: also be drained by the DR reader, a round trip per ten (minutes for 20,000 against moto), and the
#: lag it measures is the queue's round trips, the same after 2,000 rows as after 20,000.
WARMUP_ROWS = 20_000
QUEUE_WARMUP_ROWS = 2_000


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise _unknown_engine(engine)


def _unknown_engine(engine: str) -> DrledgerError:
    return DrledgerError(f"--engine must be one of {', '.join(ENGINES)}; got '{engine}'.")


def rig_for(engine: str) -> type[FailoverRig]:
    """The failover rig of a database engine: PostgreSQL clusters, or MariaDB servers for MySQL."""
    if engine == "mysql":
        from drledger.drill.mysql.rig import MySQLFailoverRig

        return MySQLFailoverRig
    if engine == "postgresql":
        return FailoverRig
    raise _unknown_engine(engine)


@dataclass
class DrillResult:
    committed: int
    on_replica_at_failover: int
    lost_without_ledger: int
    detected: int
    recovered: int
    unrecoverable: int
    missing_after_replay: int
    replication_lag_s: float
    ledger_lag_p99_ms: float | None
    detect_seconds: float
    recover_seconds: float
    verdict: str
    ledger_lag_p50_ms: float | None = None
    replication_lag_measured_s: float | None = None
    conflicts: int = 0
    phantom_rows: int = 0
    rolled_back: int = 0
    total_seconds: float = 0.0
    ledger: str = ""
    reconcile_exit_code: int = ExitCode.SUCCESS
    reconcile_error: str | None = None
    missing_in_ledger: int = 0
    # Seconds between the ledger's last event and the disaster: commits in there could not be known.
    ledger_blind_seconds: float | None = None
    rolled_back_in_ledger: int = 0
    # What `drledger watch` predicted at the moment of disaster (None: it could not measure then).
    predicted_at_risk: int | None = None
    predicted_recoverable: int | None = None
    predicted_unrecoverable: int | None = None
    # Each conflict replay reported on the demo table: {"key": the lost row's key, "why": replay's reason}.
    conflicts_reported: list[dict[str, Any]] = field(default_factory=list)
    # How the DR replica replicated (MySQL: GTID, or binlog file and position; see docs/mysql.md).
    replica_replication: str | None = None
    ops: list[str] = field(default_factory=lambda: list(DEFAULT_OPS))
    # Updates and deletes (the drill with them): per op, lost at failover, detected by reconcile,
    # recovered, held back by replay, unrecoverable (never reached the ledger).
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    # Rows (an order's status, an account's balance) whose value at the end is not what the commits
    # the database holds leave, in order (target 0): a change on a row it did not change, or half a
    # transaction. Examples are "table key: expected → found".
    wrong_rows: int = 0
    wrong_row_examples: list[str] = field(default_factory=list)
    # The sum of the accounts' balances before the workload and at the end: transfers keep it.
    balance_total_opening: str | None = None
    balance_total_after: str | None = None
    # Replay's rate (events it was given ÷ its wall time, reading, proving and fencing included) and that
    # of a plain load of the same rows and outbox rows in the same chunks, durable, measured right after
    # it in the promoted database; their ratio is how close replay comes to its limit.
    replay_events_per_s: float | None = None
    plain_load_events_per_s: float | None = None
    replay_to_plain_load: float | None = None
    keep: dict[str, str] = field(default_factory=dict)
    # For the picture (drill --html); not part of --json.
    timeline: DrillTimeline | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("timeline", None)
        return doc

    def events(self, rows: int, what: str) -> int:
        """`rows` (inserted rows) plus the updates and deletes counted as `what`: events, as watch
        counts what is at risk."""
        return rows + sum(figures.get(what, 0) for figures in self.changes.values())


@dataclass
class WatchSample:
    """One cycle of the watcher during the drill: when, the three frontiers, and the readiness gauges."""

    at_ms: int
    primary_ms: int | None
    replica_ms: int | None
    ledger_ms: int | None
    at_risk: int | None
    recoverable: int | None
    unrecoverable: int | None

    @classmethod
    def of(cls, snap: Snapshot) -> WatchSample:
        ready = snap.readiness
        return cls(
            snap.at_ms,
            snap.primary.newest_commit_ms if snap.primary.up else None,
            snap.replica.newest_commit_ms if snap.replica is not None and snap.replica.up else None,
            snap.ledger.newest_commit_ms if snap.ledger.up else None,
            ready.at_risk if ready else None,
            ready.recoverable if ready else None,
            ready.unrecoverable_if_now if ready else None,
        )


@dataclass
class DrillTimeline:
    """What the drill's picture shows: every acknowledged commit, what became of it, the watcher's view."""

    commits: list[tuple[int, int]]  # (acknowledged at ms, key)
    lost: set[int]
    recovered: set[int]
    samples: list[WatchSample]
    disaster_at_ms: int | None
    prediction: WatchSample | None
    title: str = ""


class DrillWatch:
    """`drledger watch` beside the workload: a cycle a second on the primary, the replica and the
    ledger, and one more at the moment of disaster — the prediction the drill then checks."""

    INTERVAL_S = 1.0
    #: Waiting longer than this for the watcher at the disaster is said, not sat through silently.
    SAY_AFTER_S = 5.0

    def __init__(self, primary_dsn: str, replica_dsn: str, ledger_url: str) -> None:
        settings = WatchSettings(primary_dsn, ledger_url, replica_dsn, grace_s=5.0, skew_s=1.0, lookback_s=60)
        self.watcher = Watcher(settings)
        # A watcher of its own for the prediction: the sampler may be in the middle of a slow cycle
        # (a remote ledger) when the disaster is due, and the disaster must not wait for it.
        self.predictor = Watcher(settings)
        self.samples: list[WatchSample] = []
        self.prediction: WatchSample | None = None
        self._predicting: threading.Thread | None = None
        self._prediction: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self.samples.append(WatchSample.of(self.watcher.cycle()))

    def predict(self) -> None:
        """Stop sampling and measure once more, now: what a failover at this instant would do.

        Returns once the primary and the replica have been read (what is at risk is fixed then); the
        ledger is read on, in the background, while the disaster strikes (`prediction_done`). The
        relay dies with the region, so the ledger it leaves is the ledger of that instant.
        """
        self._stop.set()
        read = threading.Event()
        done: list[Snapshot] = []
        self._predicting = threading.Thread(
            target=lambda: done.append(self.predictor.cycle(databases_read=read.set)),
            name="drill-watch-prediction",
            daemon=True,
        )
        self._prediction = done
        self._predicting.start()
        read.wait(30)

    def prediction_done(self, progress: Progress | None = None) -> None:
        self._thread.join(self.SAY_AFTER_S)
        if self._thread.is_alive() and progress is not None:
            progress("waiting for the watcher's last cycle to finish reading the ledger")
        self._thread.join(120)
        if self._predicting is not None:
            self._predicting.join(self.SAY_AFTER_S)
            if self._predicting.is_alive() and progress is not None:
                progress("waiting for the watcher's prediction to finish reading the ledger")
            self._predicting.join(120)
            if self._prediction:
                self.prediction = WatchSample.of(self._prediction[0])
                self.samples.append(self.prediction)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._predicting is not None:
            self._predicting.join(30)
        self.watcher.close()
        self.predictor.close()


@dataclass
class DrWrites:
    """What the DR application wrote after promotion (after fence, before replay): the keys of its own
    rows, and the lost rows those writes take a unique value of — which replay must report as conflicts
    and leave out, while everything else comes back."""

    keys: set[int] = field(default_factory=set)
    clashes_with: set[int] = field(default_factory=set)


class QueueReader:
    """The DR region's reader of a queue ledger (SQS), as the operator runs one: while the drill runs,
    it drains the queue into the ledger's local index every half second, so the queue holds only the
    last moments. Without it the queue holds the whole warm-up when the watcher first reads it, and
    the watcher's first cycle drains it (for minutes against moto, whose every SQS call costs in
    proportion to the queue's depth) while the disaster waits for that cycle."""

    INTERVAL_S = 0.5
    SAY_EVERY_S = 10.0

    def __init__(self, ledger_url: str, progress: Progress) -> None:
        self.ledger_url = ledger_url
        self.progress = progress
        self.moved = 0
        self.drains = 0
        self.error: str | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-queue-reader", daemon=True)

    @staticmethod
    def needed(ledger: Ledger) -> bool:
        return not ledger.writer_reads_back and callable(getattr(ledger, "drain", None))

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with open_ledger(self.ledger_url) as ledger:
                drain: Callable[[ProgressCallback], int] = ledger.drain  # type: ignore[attr-defined]
                while True:
                    before = self.moved
                    moved = drain(lambda so_far: setattr(self, "moved", before + so_far))  # noqa: B023
                    with self._changed:
                        self.moved = before + moved
                        self.drains += 1
                        self._changed.notify_all()
                    if self._stop.wait(self.INTERVAL_S):
                        return
        except DrledgerError as exc:  # the watcher and reconcile read the queue too, and will say it
            self.error = str(exc)
        finally:
            with self._changed:
                self._stop.set()
                self._changed.notify_all()

    def catch_up(self, timeout_s: float = 600) -> None:
        """Wait until a whole drain begun after this call has ended: the queue then holds only what
        the relay sent since. Says how far it got every SAY_EVERY_S."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            target = self.drains + 2
            while self.drains < target and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                before = self.moved
                self._changed.wait_for(
                    lambda: self.drains >= target or self._stop.is_set(), min(left, self.SAY_EVERY_S)
                )
                if self.drains < target and not self._stop.is_set():
                    self.progress(
                        f"the DR reader is draining the warm-up from the queue: {self.moved:,} messages "
                        f"in its index ({(self.moved - before) / self.SAY_EVERY_S:,.0f}/s)"
                    )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _keys_of(events: list[LedgerEvent], table: str) -> set[int]:
    return {int(e.key) for e in events if e.table == table}


class Drill:
    """One drill run; `scenarios.py` reuses its phases with variations."""

    def __init__(self, settings: DrillSettings, progress: Progress) -> None:
        self.settings = settings
        self.progress = progress
        self.rng = random.Random(settings.seed)
        self.lag_s = draw_lag(settings.lag, self.rng)
        self.rig = rig_for(settings.engine)(lag_s=self.lag_s, ledger_url=settings.ledger_url)
        self.started = time.monotonic()
        self.lag_samples: list[float] = []
        self.workload_stop = threading.Event()
        self.lag_before_workload: dict[int, int] = {}
        self.disaster_at_ms: int | None = None
        self.watch: DrillWatch | None = None
        self.replica_replication: str | None = None
        self.replayed: ReplayResult | None = None
        self.queue_reader: QueueReader | None = None

    def setup(self) -> None:
        with open_ledger(self.rig.ledger_url, writer=True, create=True) as ledger:
            if ledger.created:
                self.progress(f"created the ledger {ledger.display_url}, which did not exist")
            if QueueReader.needed(ledger):
                self.progress(f"a DR reader drains {ledger.display_url} into its index as the drill runs")
                self.queue_reader = QueueReader(self.rig.ledger_url, self.progress)
                self.queue_reader.start()
        self.progress(f"starting a primary and a replica {self.lag_s:g} s behind it, and the relay")
        self.rig.start(ops=self.settings.ops)
        self.replica_replication = self.rig.replica_replication()
        rows = self.settings.warmup_rows
        if rows is None:
            rows = QUEUE_WARMUP_ROWS if self.queue_reader is not None else WARMUP_ROWS
        if rows:
            self.progress(f"warming the relay up ({rows:,} rows of a side table)")
            self.rig.warm_up(rows)
            if self.queue_reader is not None:
                # The workload starts on a queue the DR reader keeps up with, not on the warm-up's.
                self.queue_reader.catch_up()
        self.lag_before_workload = read_stats(self.rig.relay_stats_file)
        self.watch = DrillWatch(self.rig.primary_dsn, self.rig.dr_dsn, self.rig.ledger_url)
        self.watch.start()

    def workload_then_disaster(
        self, before: dict[float, Callable[[FailoverRig], None]] | None = None
    ) -> GroundTruth:
        """Write for the set duration; the region dies while the application is still writing.

        `before` maps seconds-before-the-disaster to something to do then (pause the relay, say).
        """
        settings = self.settings
        stop = self.workload_stop
        outcome: list[GroundTruth] = []
        pending = sorted((before or {}).items(), reverse=True)
        self.progress(f"writing {settings.tps:g} transactions/s for {settings.duration_s:g} s")

        def write() -> None:
            outcome.append(
                self.rig.run_workload(
                    settings.tps,
                    settings.duration_s + 60,
                    rollback_every=settings.rollback_every,
                    multi_row_every=settings.multi_row_every,
                    stop=stop,
                )
            )

        writer = threading.Thread(target=write, name="workload", daemon=True)
        writer.start()
        try:
            self._until_disaster(settings, pending)
        finally:
            stop.set()  # also on Ctrl-C: the writer must not outlive the clusters it writes to
        if self.watch is not None:
            self.watch.predict()
        self.disaster_at_ms = time.time_ns() // 1_000_000
        self.rig.disaster()
        self.stop_queue_reader()  # the relay is dead: nothing more reaches the queue
        if self.watch is not None:
            self.watch.prediction_done(self.progress)
        self.progress("disaster: the primary region died (in-flight WAL dropped, primary and relay killed)")
        writer.join(30)
        if not outcome:
            raise DrledgerError("The workload did not finish; see the relay log.")
        return outcome[0]

    def _until_disaster(
        self, settings: DrillSettings, pending: list[tuple[float, Callable[[FailoverRig], None]]]
    ) -> None:
        disaster_at = time.monotonic() + settings.duration_s
        while (left := disaster_at - time.monotonic()) > 0:
            if pending and left <= pending[0][0]:
                pending.pop(0)[1](self.rig)
                continue
            time.sleep(min(0.5, left, max(0.01, left - pending[0][0]) if pending else left))
            if left < settings.duration_s / 2 and (sample := self.rig.replication_lag_sample()) is not None:
                self.lag_samples.append(sample)
        for _, action in pending:
            action(self.rig)

    def failover(self) -> None:
        self.progress("failover: promoting the replica")
        self.rig.failover()

    def fence(self) -> str | None:
        """The runbook's first step after promotion, before the application writes; why it could not run."""
        self.progress("fence: sequences past every key the ledger knows")
        try:
            fence_from_ledger(ReconcileRequest([self.rig.ledger_url], self.rig.dr_dsn))
        except DrledgerError as exc:
            return str(exc)
        return None

    def reconcile(self) -> tuple[Report | None, float, str | None]:
        self.progress("reconcile: the ledger against the promoted database")
        started = time.monotonic()
        try:
            report = run_reconcile(ReconcileRequest([self.rig.ledger_url], self.rig.dr_dsn))
        except DrledgerError as exc:
            return None, time.monotonic() - started, str(exc)
        return report, time.monotonic() - started, None

    def recover(self, report: Report) -> tuple[int, int, float]:
        self.progress(f"replay: {len(report.missing_in_dr)} events")
        started = time.monotonic()
        # As the operator's replay --apply: validated, fenced again, then applied.
        result = self.replayed = replay(self.rig.dr_dsn, report.missing_in_dr, apply=True)
        return result.applied + result.present, len(result.conflicts), time.monotonic() - started

    def ledger_lag(self) -> tuple[float | None, float | None]:
        """Percentiles of the workload's own events (the warm-up's are subtracted out)."""
        histogram = read_stats(self.rig.relay_stats_file)
        for lag, count in self.lag_before_workload.items():
            histogram[lag] = histogram.get(lag, 0) - count
        histogram = {lag: count for lag, count in histogram.items() if count > 0}
        return lag_percentile(histogram, 50), lag_percentile(histogram, 99)

    def stop_queue_reader(self) -> None:
        if self.queue_reader is not None:
            self.queue_reader.stop()
            self.queue_reader = None

    def close(self) -> None:
        self.workload_stop.set()
        self.stop_queue_reader()
        if self.watch is not None:
            self.watch.close()
        if not self.settings.keep:
            self.rig.close()

    def kept(self) -> dict[str, str]:
        return {
            "promoted_dr": self.rig.dr_dsn,
            "ledger": self.rig.ledger_url,
            "directory": str(self.rig.clusters.base),
            "stop": self.rig.stop_command(),
        }


@dataclass
class _Findings:
    """What the disaster left and what recovery did, measured against the ground truth."""

    demo_table: str
    truth: GroundTruth
    in_ledger: set[int]
    on_replica: set[int]
    unrecoverable: int
    report: Report | None
    detect_s: float
    reconcile_error: str | None
    recovered: int = 0
    conflicts: int = 0
    recover_s: float = 0.0
    missing_after: int = 0
    phantoms: int = 0
    dr_writes: DrWrites = field(default_factory=DrWrites)
    conflict_keys: set[int] = field(default_factory=set)
    changes: ChangeFindings | None = None

    @property
    def lost_commits(self) -> range:
        """The commits the promoted replica lacked: all after the prefix it holds."""
        commits = self.truth.commits
        return range(truth_of.replica_prefix(commits, self.on_replica), len(commits))

    @property
    def lost(self) -> set[int]:
        """The order keys the commits lost at failover inserted."""
        return {k for i in self.lost_commits for k in self.truth.commits[i].keys}

    @property
    def detected(self) -> int:
        if self.report is None:
            return 0
        inserts = [e for e in self.report.missing_in_dr if e.op == "insert"]
        return len(_keys_of(inserts, self.demo_table) & self.truth.keys)

    @property
    def verdict(self) -> str:
        """ok when everything that reached the ledger came back, nothing else is missing, and nothing
        was invented or overwritten — but for the lost rows the DR application took a unique value of
        after promotion: each of those, and only those, reported as a conflict and left out."""
        taken = self.dr_writes.clashes_with
        ok = (
            self.missing_after == self.unrecoverable + len(taken)
            and self.recovered == self.detected - len(taken)
            and self.detected == len(self.lost) - self.unrecoverable
            and self.conflicts == len(taken)
            and self.conflict_keys == taken
            and self.phantoms == 0
            and (self.changes is None or self.changes.ok)
        )
        return "ok" if ok else "failed"


@dataclass
class ChangeFindings:
    """The updates and deletes of the lost commits, what became of them, and the promoted database's
    rows against the state the commits it holds leave."""

    by_op: dict[str, dict[str, int]]
    wrong: list[str]
    opening_total: str
    total_after: str

    @property
    def ok(self) -> bool:
        """Every row as its commits leave it, the balances' sum kept, and nothing that reached the ledger
        held back (the drill's DR application writes no row a lost change touches)."""
        held = sum(figures["held_back"] for figures in self.by_op.values())
        return not self.wrong and self.opening_total == self.total_after and held == 0


def find_changes(
    truth: GroundTruth, lost: range, in_ledger: set[int], present: set[int], state: truth_of.State
) -> ChangeFindings:
    """`lost`: the commits the replica lacked; `in_ledger`: the order keys whose insert reached the ledger;
    `present`: the order keys in the promoted database now, and `state` its rows."""
    commits = [*truth.commits, *([truth.in_flight] if truth.in_flight is not None else [])]
    held = truth_of.landed(commits, present)
    reached = {i for i in lost if in_ledger.intersection(commits[i].keys)}
    figures = {
        "lost": truth_of.count_changes(commits, lost),
        "recovered": truth_of.count_changes(commits, held.intersection(lost)),
        "held_back": truth_of.count_changes(commits, reached - held),
        "unrecoverable": truth_of.count_changes(commits, set(lost) - reached),
    }
    by_op = {op: {what: counts[op] for what, counts in figures.items()} for op in truth_of.CHANGE_OPS}
    expected = truth_of.expected_state(commits, held, truth.opening)
    wrong = [
        f"{table} {key}: {expected[(table, key)]} → {state.get((table, key))}"
        for table, key in truth_of.differing(expected, state)
    ]
    return ChangeFindings(
        by_op,
        wrong,
        str(truth_of.balance_total(truth.opening)),
        str(truth_of.balance_total(state)),
    )


def run_drill(
    settings: DrillSettings,
    progress: Progress,
    *,
    before: dict[float, Callable[[FailoverRig], None]] | None = None,
    lose_ledger: bool = False,
    after: Callable[[FailoverRig], None] | None = None,
    promoted: Callable[[FailoverRig, GroundTruth, set[int]], DrWrites] | None = None,
) -> DrillResult:
    """The whole drill. `before` acts on the rig seconds before the disaster; `lose_ledger` makes the
    ledger die with the region (the spec's "DB + Kafka down" row); `after` acts on the rig once the
    ledger's recovery is measured, before everything is stopped (the old region returning, say);
    `promoted` is the DR application writing once fence has run, before reconcile and replay (given the
    ground truth and the lost keys the ledger holds; what it wrote is what the verdict allows for).

    After the failover the drill runs the operator's runbook, in its order: fence, reconcile, replay.
    """
    drill = Drill(settings, progress)
    try:
        drill.setup()
        truth = drill.workload_then_disaster(before)
        p50, p99 = drill.ledger_lag()
        in_ledger = drill.rig.keys_in_ledger()
        if lose_ledger:
            progress("the ledger lived in the failed region: it is gone too")
            destroy_ledger(drill.rig.ledger_url)
        drill.failover()
        on_replica = drill.rig.keys_in(drill.rig.dr_dsn)
        # The orders of the commits the replica lacked (with deletes, not every order it lacks is lost).
        prefix = truth_of.replica_prefix(truth.commits, on_replica)
        lost = {k for c in truth.commits[prefix:] for k in c.keys}
        fence_error = drill.fence()
        dr_writes = DrWrites() if promoted is None else promoted(drill.rig, truth, lost & in_ledger)
        report, detect_s, failure = drill.reconcile()
        found = _Findings(
            drill.rig.demo_table,
            truth,
            in_ledger,
            on_replica,
            len(lost) if lose_ledger else len(lost - in_ledger),
            report,
            detect_s,
            failure or fence_error,
            dr_writes=dr_writes,
        )
        if report is not None and report.missing_in_dr:
            _, found.conflicts, found.recover_s = drill.recover(report)
        progress("verifying the promoted database against the ground truth")
        on_dr = drill.rig.keys_in(drill.rig.dr_dsn)
        landed = truth_of.landed(truth.commits, on_dr)
        lost_commits = found.lost_commits
        found.recovered = sum(len(truth.commits[i].keys) for i in landed.intersection(lost_commits))
        found.missing_after = sum(len(c.keys) for i, c in enumerate(truth.commits) if i not in landed)
        if drill.rig.changes:
            found.changes = find_changes(
                truth,
                lost_commits,
                set() if lose_ledger else in_ledger,
                on_dr,
                drill.rig.state_in(drill.rig.dr_dsn),
            )
            if report is not None:
                for op, figures in found.changes.by_op.items():
                    figures["detected"] = report.missing_by_op.get(op, 0)
        # Rows no acknowledged commit wrote (the DR application's own excepted).
        found.phantoms = len(on_dr - truth.keys - dr_writes.keys)
        reported = _conflicts_reported(drill)
        found.conflict_keys = {c["key"] for c in reported}
        result = _result(drill, found, p50, p99)
        result.conflicts_reported = reported
        if report is not None and report.missing_in_dr and found.recover_s > 0:
            _replay_against_its_limit(drill, report.missing_in_dr, found.recover_s, result)
        if after is not None:
            after(drill.rig)
        return result
    finally:
        drill.close()


def _replay_against_its_limit(
    drill: Drill, events: list[LedgerEvent], replay_s: float, result: DrillResult
) -> None:
    drill.progress(f"measuring a plain load of the same {len(events):,} rows, replay's limit")
    plain_s = drill.rig.plain_load_seconds(events, CHUNK_EVENTS)
    result.replay_events_per_s = round(len(events) / replay_s, 1)
    result.plain_load_events_per_s = round(len(events) / plain_s, 1) if plain_s > 0 else None
    if plain_s > 0:
        result.replay_to_plain_load = round(plain_s / replay_s, 2)


def _conflicts_reported(drill: Drill) -> list[dict[str, Any]]:
    """The conflicts replay reported on the demo table: each lost row's key and replay's reason."""
    if drill.replayed is None:
        return []
    table = drill.rig.demo_table
    return [{"key": int(c.key), "why": c.why} for c in drill.replayed.conflicts if c.table == table]


def _result(drill: Drill, found: _Findings, p50: float | None, p99: float | None) -> DrillResult:
    report, truth = found.report, found.truth
    samples = drill.lag_samples
    predicted = drill.watch.prediction if drill.watch is not None else None
    return DrillResult(
        committed=len(truth.keys),
        on_replica_at_failover=len(truth.keys) - len(found.lost),
        lost_without_ledger=len(found.lost),
        detected=found.detected,
        recovered=found.recovered,
        unrecoverable=found.unrecoverable,
        missing_after_replay=found.missing_after,
        replication_lag_s=drill.lag_s,
        ledger_lag_p99_ms=p99,
        ledger_lag_p50_ms=p50,
        replication_lag_measured_s=round(sum(samples) / len(samples), 2) if samples else None,
        detect_seconds=round(found.detect_s, 3),
        recover_seconds=round(found.recover_s, 3),
        verdict=found.verdict,
        conflicts=found.conflicts,
        phantom_rows=found.phantoms,
        rolled_back=len(truth.rolled_back),
        rolled_back_in_ledger=len(found.in_ledger & truth.rolled_back),
        total_seconds=round(time.monotonic() - drill.started, 1),
        ledger=mask_url(drill.rig.ledger_url),
        reconcile_exit_code=report.exit_code if report is not None else ExitCode.OPERATOR,
        reconcile_error=found.reconcile_error,
        missing_in_ledger=len(report.missing_in_ledger) if report is not None else 0,
        ledger_blind_seconds=_blind_seconds(drill.disaster_at_ms, report),
        predicted_at_risk=predicted.at_risk if predicted else None,
        predicted_recoverable=predicted.recoverable if predicted else None,
        predicted_unrecoverable=predicted.unrecoverable if predicted else None,
        replica_replication=drill.replica_replication,
        ops=list(drill.settings.ops),
        **_change_fields(found.changes),
        keep=drill.kept() if drill.settings.keep else {},
        timeline=DrillTimeline(
            commits=[(c.acked_at_ms, k) for c in truth.commits for k in c.keys],
            lost=found.lost,
            recovered=found.lost & found.in_ledger if found.recovered else set(),
            samples=drill.watch.samples if drill.watch else [],
            disaster_at_ms=drill.disaster_at_ms,
            prediction=predicted,
        ),
    )


def _change_fields(changes: ChangeFindings | None) -> dict[str, Any]:
    if changes is None:
        return {}
    return {
        "changes": changes.by_op,
        "wrong_rows": len(changes.wrong),
        "wrong_row_examples": changes.wrong[:5],
        "balance_total_opening": changes.opening_total,
        "balance_total_after": changes.total_after,
    }


def _blind_seconds(disaster_at_ms: int | None, report: Report | None) -> float | None:
    if disaster_at_ms is None or report is None or report.ledger_last_commit_ms is None:
        return None
    return round(max(0, disaster_at_ms - report.ledger_last_commit_ms) / 1000, 3)
