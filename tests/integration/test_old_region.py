"""When the old region comes back: its primary's outbox, read as a ledger, returns the tail the ledger
never saw — through a real failover, with the relay stalled before the disaster and the application
writing to the new primary before fencing (split brain).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from drledger.drill.postgres.rig import FailoverRig
from tests.helpers import failover_aftermath, run_cli

pytestmark = pytest.mark.debezium


def dr_rows(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT id, customer FROM public.orders").fetchall()}


def stall_the_relay_midway(rig: FailoverRig) -> None:
    rig.run_workload(tps=100, seconds=2)
    rig.pause_relay()  # the ledger falls behind: what follows reaches only the primary (and part the replica)
    rig.run_workload(tps=100, seconds=3)


@pytest.fixture(scope="module")
def aftermath() -> Iterator[tuple[FailoverRig, set[int]]]:
    with failover_aftermath(stall_the_relay_midway, lag_s=1.0, settle_s=0) as (rig, _):
        # The application is pointed at the new primary before anyone fences: its sequence, behind the
        # old primary's, hands out keys the old primary had already committed.
        with psycopg.connect(rig.dr_dsn, autocommit=True) as conn:
            split = {
                r[0]
                for r in conn.execute(
                    "INSERT INTO public.orders (customer, amount) SELECT 'after-failover', 1 "
                    "FROM generate_series(1, 3) RETURNING id"
                ).fetchall()
            }
        yield rig, split


def test_the_old_primary_returns_every_commit_the_ledger_missed(
    aftermath: tuple[FailoverRig, set[int]],
) -> None:
    rig, split = aftermath
    dr, ledger = rig.dr_dsn, rig.ledger_url
    truth = rig.truth.keys
    collide = split & truth
    assert collide, "the new primary's keys never met the old primary's: nothing to prove"

    # The ledger's recovery first, as the runbook goes.
    assert run_cli("fence", "--db", dr, "--ledger", ledger, "--json").returncode == 0
    replay = run_cli("replay", "--db", dr, "--ledger", ledger, "--apply", "--json")
    assert replay.returncode in (0, 3), replay.stderr
    # Lost after the ledger: committed keys the DR database lacks, and those the new primary took over.
    after_ledger = (truth - dr_rows(dr).keys()) | collide
    assert len(after_ledger) > 50, "the stalled relay should have left a tail only the old primary holds"

    # A database that accepts writes is not read as a ledger unless forced: the new primary is one.
    refused = run_cli("reconcile", "--db", dr, "--ledger", dr, "--json")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "Refusing to read" in refused.stderr and "writable=accept" in refused.stderr

    old = rig.old_region_returns()
    page = rig.clusters.base / "old-region.html"
    reconcile = run_cli("reconcile", "--db", dr, "--ledger", old, "--json", "--html", str(page))
    assert reconcile.returncode == 3, reconcile.stdout + reconcile.stderr  # split brain needs a person
    report = json.loads(reconcile.stdout)
    missing = {int(json.loads(e)["id"]) for e in _rows_of(report, old)}
    assert missing == after_ledger
    assert report["counts"]["missing_in_ledger"] == 0  # what the new primary wrote since is not "missing"
    collisions = {int(c["key"]): c for c in report["split_brain"]}
    assert set(collisions) == collide
    for key, collision in collisions.items():
        assert json.loads(collision["dr_row"])["customer"] == "after-failover"
        assert json.loads(collision["ledger_row"])["customer"] != "after-failover"
        assert collision["ledger_written_at"] < collision["dr_written_at"], key

    html = page.read_text()
    assert "id='split-brain'" in html and html.count("after-failover") == len(collisions)

    fence = run_cli("fence", "--db", dr, "--ledger", old, "--json")
    assert fence.returncode == 0, fence.stderr
    with psycopg.connect(dr, autocommit=True) as conn:
        (next_key,) = conn.execute("SELECT last_value FROM public.orders_id_seq").fetchone()  # type: ignore[misc]
    assert next_key > max(truth)  # past every key the old primary handed out

    replay = run_cli("replay", "--db", dr, "--ledger", old, "--apply", "--json")
    assert replay.returncode == 3, replay.stdout + replay.stderr
    result = json.loads(replay.stdout)
    assert {int(c["key"]) for c in result["conflicts"]} == set(collisions)
    assert all(c["ledger_written_at"] and c["current_written_at"] for c in result["conflicts"])
    assert result["applied"] == len(after_ledger - set(collisions))
    rows = dr_rows(dr)
    assert truth - rows.keys() == set()  # every committed key is back or held by the new primary
    assert all(rows[k] == "after-failover" for k in split)  # nothing the new primary wrote was overwritten
    assert not (rows.keys() & rig.truth.rolled_back)

    again = run_cli("replay", "--db", dr, "--ledger", old, "--apply", "--json")
    assert json.loads(again.stdout)["applied"] == 0  # idempotent


def _rows_of(report: dict, old_dsn: str) -> list[str]:
    """The lost rows' images, read from the old primary's outbox by the event ids the report names."""
    with psycopg.connect(old_dsn, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT payload::text FROM drledger.outbox WHERE id = ANY(%s::uuid[])",
                (report["missing_event_ids"],),
            ).fetchall()
        ]


def test_a_bad_database_ledger_url_is_one_sentence(aftermath: tuple[FailoverRig, set[int]]) -> None:
    rig, _split = aftermath
    bad = run_cli("reconcile", "--db", rig.dr_dsn, "--ledger", rig.dr_dsn + "?writable=yes")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'accept'" in bad.stderr, bad.stderr
    forced = run_cli("reconcile", "--db", rig.dr_dsn, "--ledger", rig.dr_dsn + "?writable=accept", "--json")
    assert forced.returncode in (0, 1, 3), forced.stderr  # read, as asked
    assert json.loads(forced.stdout)["ledgers"] == [rig.dr_dsn + "?writable=accept"]


def test_an_outbox_row_changed_after_capture_is_malformed_not_replayed(
    aftermath: tuple[FailoverRig, set[int]],
) -> None:
    rig, _split = aftermath
    old = rig.old_primary.dsn if rig.old_primary is not None else rig.old_region_returns()
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        (event_id, key) = conn.execute(
            "UPDATE drledger.outbox SET payload = jsonb_set(payload, '{customer}', '\"forged\"') "
            "WHERE id = (SELECT id FROM drledger.outbox ORDER BY created_at DESC LIMIT 1) "
            "RETURNING id::text, aggregateid"
        ).fetchone()  # type: ignore[misc]
    with psycopg.connect(rig.dr_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.orders WHERE id = %s", (int(key),))
        conn.execute("DELETE FROM drledger.outbox WHERE id = %s", (event_id,))
    reconcile = run_cli("reconcile", "--db", rig.dr_dsn, "--ledger", old, "--json")
    report = json.loads(reconcile.stdout)
    assert reconcile.returncode == 3 and report["counts"]["malformed"] == 1, reconcile.stdout
    assert event_id not in report["missing_event_ids"]
    assert "changed after capture" in report["malformed_samples"][0]["reason"]
    replay = run_cli("replay", "--db", rig.dr_dsn, "--ledger", old, "--apply", "--json")
    assert json.loads(replay.stdout)["applied"] == 0, replay.stdout
    with psycopg.connect(rig.dr_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM public.orders WHERE id = %s", (int(key),)).fetchone() == (
            0,
        )
