"""Reconcile, replay, fence and backfill after a real failover.

A primary and a replica trailing it by ~2 s through the lag injector, the Debezium relay feeding the
embedded ledger, inserts at 100 TPS with every acknowledged commit recorded client-side, then the
disaster: in-flight WAL dropped, primary SIGKILLed, replica promoted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drledger.drill.postgres.rig import FailoverRig, GroundTruth
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from tests.helpers import check_screenshot, failover_aftermath, rendered_dom, run_cli, wait_for

pytestmark = pytest.mark.debezium


class Aftermath:
    """What a failover left: the rig, the ground truth, and what the DR database holds."""

    def __init__(self, rig: FailoverRig, truth: GroundTruth, promoted_at_ms: int) -> None:
        self.rig = rig
        self.truth = truth
        self.promoted_at_ms = promoted_at_ms
        self.on_dr_at_failover = rig.keys_in(rig.dr_dsn)
        self.lost = truth.keys - self.on_dr_at_failover
        with open_ledger(rig.ledger_url) as ledger:
            self.in_ledger = {int(r.key) for r in ledger.read() if isinstance(r, LedgerEvent)}

    @property
    def dsn(self) -> str:
        return self.rig.dr_dsn

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--db", self.dsn, timeout=300)


def failover() -> Iterator[Aftermath]:
    with failover_aftermath(lambda rig: rig.run_workload(tps=100, seconds=5)) as (rig, truth):
        yield Aftermath(rig, truth, time.time_ns() // 1_000_000)


@pytest.fixture(scope="module")
def clean() -> Iterator[Aftermath]:
    yield from failover()


@pytest.fixture(scope="module")
def contested() -> Iterator[Aftermath]:
    yield from failover()


def reconcile_json(after: Aftermath, *extra: str) -> tuple[int, dict]:
    result = after.cli("reconcile", "--ledger", after.rig.ledger_url, "--json", *extra)
    assert result.returncode in (0, 1, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_reconcile_finds_exactly_the_lost_commits_that_reached_the_ledger(
    clean: Aftermath, tmp_path: Path
) -> None:
    assert clean.lost, "the failover lost nothing: the lag was not applied"
    assert clean.on_dr_at_failover, "the replica held nothing: replication did not run"
    code, summary = reconcile_json(clean, "--save", str(tmp_path / "report.json"))
    assert code == 1
    with open_ledger(clean.rig.ledger_url) as ledger:
        key_of = {r.event_id: int(r.key) for r in ledger.read() if isinstance(r, LedgerEvent)}
    found = {key_of[event_id] for event_id in summary["missing_event_ids"]}
    assert found == clean.lost & clean.in_ledger  # nothing recoverable is missed …
    assert found <= clean.truth.keys - clean.on_dr_at_failover  # … and no false positives
    assert len(clean.lost - clean.in_ledger) <= 10  # the relay was milliseconds behind
    counts = summary["counts"]
    assert counts["missing_in_dr"] == len(found)
    assert counts["missing_in_ledger"] == counts["mismatched"] == counts["malformed"] == 0
    assert counts["dr_events"] == len(clean.on_dr_at_failover)
    assert summary["exposure"]["gap_seconds"] > 0.5
    assert summary["missing_by_table"] == {"public.orders": len(found)}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["events"]) == len(found)


def test_html_report_renders_offline_in_chromium(clean: Aftermath, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert clean.cli("reconcile", "--ledger", clean.rig.ledger_url, "--html", str(page)).returncode == 1
    text = page.read_text()
    assert "id='lost-window'" in text and "<script" not in text and "http" not in text.split("</style>")[0]
    dom = rendered_dom(page)
    assert 'id="lost-window"' in dom and 'id="missing-events"' in dom
    check_screenshot(page, window_size="1000,1400", keep_as="report-screenshot.png")


def test_replay_restores_then_changes_nothing(clean: Aftermath, tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    reconcile_json(clean, "--save", str(saved))
    dry = clean.cli("replay", "--from", str(saved), "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dry_run"] is True
    assert clean.rig.keys_in(clean.dsn) == clean.on_dr_at_failover  # a dry run writes nothing

    applied = clean.cli("replay", "--from", str(saved), "--apply", "--json")
    assert applied.returncode == 0, applied.stderr
    result = json.loads(applied.stdout)
    recoverable = clean.lost & clean.in_ledger
    assert result["applied"] == len(recoverable) and result["conflicts"] == []
    assert clean.rig.keys_in(clean.dsn) == clean.on_dr_at_failover | recoverable
    with psycopg.connect(clean.dsn) as conn:
        suppressed = conn.execute(
            "SELECT count(*) FROM drledger.outbox o JOIN drledger.replay_log l ON l.event_id = o.id"
        ).fetchone()[0]  # type: ignore[index]
        total_outbox = conn.execute("SELECT count(*) FROM drledger.outbox").fetchone()[0]  # type: ignore[index]
    assert suppressed == len(recoverable)  # the original ids came back …
    assert total_outbox == len(clean.on_dr_at_failover) + len(recoverable)  # … and no new event was minted

    code, summary = reconcile_json(clean)
    assert code == 0 and summary["counts"]["missing_in_dr"] == 0

    again = json.loads(clean.cli("replay", "--from", str(saved), "--apply", "--json").stdout)
    assert (again["applied"], again["already_replayed"]) == (0, len(recoverable))
    via_ledger = clean.cli("replay", "--ledger", clean.rig.ledger_url, "--apply", "--json")
    assert via_ledger.returncode == 0 and json.loads(via_ledger.stdout)["applied"] == 0


def test_malformed_ledger_records_are_counted_and_the_run_completes(clean: Aftermath) -> None:
    ledger_file = Path(clean.rig.ledger_url.removeprefix("sqlite://"))
    copy = ledger_file.with_name("ledger-with-garbage.db")
    # SQLite's backup copies what the write-ahead log holds too (a file copy would miss it).
    with sqlite3.connect(ledger_file) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (NULL, NULL, x'00ff00')")
        db.execute(
            "INSERT INTO ledger_events (commit_ts_ms, event_id, body) VALUES (NULL, NULL, '{\"v\": 1}')"
        )
    result = clean.cli("reconcile", "--ledger", f"sqlite://{copy}", "--json")
    assert result.returncode == 3
    summary = json.loads(result.stdout)
    assert summary["counts"]["malformed"] == 2 and len(summary["malformed_samples"]) == 2
    assert "unreadable" in summary["verdict"]


def test_bad_input_is_one_sentence_and_exit_2(clean: Aftermath, tmp_path: Path) -> None:
    def one_sentence(result: subprocess.CompletedProcess[str], fragment: str) -> None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr

    one_sentence(
        run_cli("reconcile", "--db", "postgresql://x:pw@127.0.0.1:1/db", "--ledger", clean.rig.ledger_url),
        "Cannot connect to the database",
    )
    (tmp_path / "junk.json").write_text("{not json")
    one_sentence(clean.cli("replay", "--from", str(tmp_path / "junk.json")), "not a saved reconcile report")
    one_sentence(clean.cli("replay", "--from", str(tmp_path / "absent.json")), "Cannot read the saved report")
    one_sentence(
        clean.cli("reconcile", "--ledger", clean.rig.ledger_url, "--since", "1m", "--until", "2m"),
        "The window is empty",
    )
    one_sentence(
        clean.cli(
            "reconcile",
            "--ledger",
            clean.rig.ledger_url,
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2000-01-02T00:00:00Z",
        ),
        "holds no events",
    )


def test_conflicts_fencing_and_backfill_on_the_new_primary(contested: Aftermath) -> None:
    after = contested
    assert after.lost
    with psycopg.connect(after.dsn, autocommit=True) as conn:
        # Unfenced, the promoted database's sequence trails the failed primary's: a new write takes a lost key.
        taken = conn.execute(
            "INSERT INTO orders (customer, amount) VALUES ('written after failover', 1) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
    assert taken in after.lost & after.in_ledger, "an unfenced insert should collide with a lost key"

    fenced = after.cli("fence", "--ledger", after.rig.ledger_url, "--json")
    assert fenced.returncode == 0, fenced.stderr
    assert (
        json.loads(after.cli("fence", "--ledger", after.rig.ledger_url, "--json").stdout)["fenced"][0][
            "before"
        ]
        == json.loads(fenced.stdout)["fenced"][0]["after"]
    )  # idempotent
    with psycopg.connect(after.dsn, autocommit=True) as conn:
        safe = conn.execute(
            "INSERT INTO orders (customer, amount) VALUES ('fenced', 2) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
    assert safe > max(after.truth.keys)

    result = after.cli("replay", "--ledger", after.rig.ledger_url, "--apply", "--json")
    assert result.returncode == 3, result.stderr
    outcome = json.loads(result.stdout)
    assert [int(c["key"]) for c in outcome["conflicts"]] == [taken]
    conflict = outcome["conflicts"][0]
    assert (
        "written after failover" in conflict["current_row"]
        and "written after failover" not in conflict["ledger_row"]
    )
    with psycopg.connect(after.dsn) as conn:
        kept = conn.execute("SELECT customer FROM orders WHERE id = %s", (taken,)).fetchone()[0]  # type: ignore[index]
    assert kept == "written after failover"  # never overwritten
    assert after.rig.keys_in(after.dsn) >= (after.lost & after.in_ledger)

    # The rows the new primary took before any relay ran there: backfill publishes them, then it streams.
    before_relay = {taken, safe}
    after.rig.start_relay("--backfill-since", "10m", dsn=after.dsn, slot="drledger_dr")
    with psycopg.connect(after.dsn, autocommit=True) as conn:
        streamed = conn.execute(
            "INSERT INTO orders (customer, amount) VALUES ('after relay', 3) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]

    def new_primary_keys_in_ledger() -> set[int]:
        new_writes = {"written after failover", "fenced", "after relay"}
        with open_ledger(after.rig.ledger_url) as ledger:
            return {
                int(r.key)
                for r in ledger.read()
                if isinstance(r, LedgerEvent) and r.row["customer"] in new_writes
            }

    wait_for(
        lambda: new_primary_keys_in_ledger() >= before_relay | {streamed}, 60, "backfilled and streamed rows"
    )
    after.rig.stop_relay()
