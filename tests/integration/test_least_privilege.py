"""The whole runbook with four least-privilege roles, and the application writing as a fifth, plain one.

The installer runs init, the relay streams, the reader reconciles, the recoverer fences and replays,
each with exactly the GRANTs `init --print-grants` prints, through a real failover; the application
role is never granted anything on drledger, keeps writing after init, cannot write the outbox and
cannot suppress capture. A missing privilege is one sentence and exit 2, whatever the command.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from drledger.drill.postgres.cluster import LocalCluster
from drledger.drill.postgres.rig import FailoverRig, GroundTruth
from tests.helpers import failover_aftermath, fresh_database, one_sentence, run_cli

pytestmark = pytest.mark.debezium

ROLES = {
    "installer": "drl_installer",
    "relay": "drl_relay",
    "reader": "drl_reader",
    "recoverer": "drl_recoverer",
}
APP = "shop_app"
TABLES = ["public.orders", "public.drill_warmup"]


def as_role(dsn: str, role: str) -> str:
    return dsn.replace("postgres@", f"{role}@", 1)


def run_sql(dsn: str, script: str) -> None:
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in body.split(";\n"):
            if statement.strip():
                conn.execute(statement)


def check_roles(dsn: str) -> dict:
    """`init --check` with every role named for its duty, as JSON."""
    tables = (a for t in TABLES for a in ("--table", t))
    roles = (a for d, r in ROLES.items() for a in ("--as", f"{d}={r}"))
    return json.loads(run_cli("init", "--db", dsn, "--check", "--json", *tables, *roles).stdout)


@dataclass
class Story:
    rig: FailoverRig
    truth: GroundTruth
    on_dr: set[int]
    grants: str
    check_before: dict
    check_after: dict
    app: dict[str, object]


def install_as_the_roles_then_write(
    rig: FailoverRig,
) -> tuple[GroundTruth, str, dict, dict, dict[str, object]]:
    """The roles created and granted as `init --print-grants` says, init run by the installer, the
    relay started as its role, the application writing as its own; the truth, the grants printed,
    `init --check` before and after the grants, and what the application could do to drledger."""
    primary = rig.primary_dsn
    run_sql(
        primary,
        f"CREATE ROLE {APP} LOGIN;\n"
        f"GRANT SELECT, INSERT ON public.orders TO {APP};\n"
        f"GRANT USAGE ON SEQUENCE public.orders_id_seq TO {APP}",
    )
    printed = {
        phase: run_cli(
            "init",
            "--db",
            primary,
            *(a for t in TABLES for a in ("--table", t)),
            "--print-grants",
            *(a for duty, role in ROLES.items() for a in ("--role", f"{duty}={role}")),
            *(("--phase", phase) if phase else ()),
        )
        for phase in (None, "before", "after")
    }
    assert all(p.returncode == 0 for p in printed.values()), [p.stderr for p in printed.values()]
    grants = printed[None]
    before, after = printed["before"].stdout, printed["after"].stdout
    assert grants.stdout == before + "\n" + after  # two people run the two parts, at two times
    # Piped, as here: one statement a line, however long, never broken inside a quoted name.
    assert all(
        line.endswith(";") for line in grants.stdout.splitlines() if line and not line.startswith("--")
    )
    creates = [line for line in before.splitlines() if line.startswith("CREATE ROLE")]
    run_sql(primary, "\n".join(creates))
    check_before = check_roles(primary)
    run_sql(primary, "\n".join(line for line in before.splitlines() if line not in creates))
    init = run_cli(
        "init", "--db", as_role(primary, ROLES["installer"]), *(a for t in TABLES for a in ("--table", t))
    )
    assert init.returncode == 0, init.stderr
    run_sql(as_role(primary, ROLES["installer"]), after)
    check_after = check_roles(primary)
    app = application_attempts(as_role(primary, APP))
    rig.start_relay(dsn=as_role(primary, ROLES["relay"]))
    truth = rig.run_workload(tps=100, seconds=5, dsn=as_role(primary, APP))
    return truth, grants.stdout, check_before, check_after, app


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    with failover_aftermath(install_as_the_roles_then_write, relay=False, capture=False) as (rig, before):
        truth, grants, check_before, check_after, app = before
        yield Story(rig, truth, rig.keys_in(rig.dr_dsn), grants, check_before, check_after, app)


def test_grants_are_printed_for_each_role_and_check_names_what_is_missing(story: Story) -> None:
    assert 'GRANT TRIGGER ON "public"."orders" TO "drl_installer"' in story.grants
    assert 'ALTER ROLE "drl_relay" WITH REPLICATION' in story.grants
    assert 'GRANT SELECT, UPDATE ON SEQUENCE public.orders_id_seq TO "drl_recoverer"' in story.grants
    # replay applies lost updates and deletes too: the recoverer's list says so
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        assert f'GRANT {privilege} ON "public"."orders" TO "drl_recoverer"' in story.grants
    assert APP not in story.grants  # the application needs nothing
    missing = [f for f in story.check_before["findings"] if not f["ok"]]
    assert any(
        "drl_relay (relay) lacks the REPLICATION attribute" in f["what"] and "REPLICATION" in f["fix"]
        for f in missing
    )
    assert any("drl_recoverer (recoverer) lacks INSERT on public.orders" in f["what"] for f in missing)
    privilege_findings = [f for f in story.check_after["findings"] if f["what"].startswith("drl_")]
    assert privilege_findings and all(f["ok"] for f in privilege_findings), privilege_findings


def test_the_application_needs_nothing_new_and_cannot_forge_or_hide(story: Story) -> None:
    assert story.truth.commits, "the application could not write after init"
    assert story.app == {"drledger_usage": False, "outbox_insert": "denied", "suppressed_row_events": 1}


def application_attempts(dsn: str) -> dict[str, object]:
    """What the application's role can do to drledger, tried on the primary as it runs."""
    seen: dict[str, object] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        seen["drledger_usage"] = conn.execute(
            "SELECT has_schema_privilege(current_user, 'drledger', 'USAGE')"
        ).fetchone()[0]  # type: ignore[index]
        try:
            conn.execute(
                "INSERT INTO drledger.outbox (aggregatetype, aggregateid, payload) VALUES ('public.orders', '1', '{}')"
            )
            seen["outbox_insert"] = "allowed"
        except psycopg.errors.InsufficientPrivilege:
            seen["outbox_insert"] = "denied"
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL drledger.suppress_capture = on")
        hidden = conn.execute(
            "INSERT INTO public.orders (customer, amount) VALUES ('hidden?', 1) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.commit()
    with psycopg.connect(dsn.replace(f"{APP}@", "postgres@", 1)) as conn:
        seen["suppressed_row_events"] = conn.execute(
            "SELECT count(*) FROM drledger.outbox WHERE aggregateid = %s", (str(hidden),)
        ).fetchone()[0]  # type: ignore[index]
    return seen


def test_each_role_runs_its_step_of_the_runbook(story: Story) -> None:
    dr, url = story.rig.dr_dsn, story.rig.ledger_url
    recoverer, reader = as_role(dr, ROLES["recoverer"]), as_role(dr, ROLES["reader"])
    lost = story.truth.keys - story.on_dr
    assert lost

    fence = run_cli("fence", "--db", recoverer, "--ledger", url, "--json")
    assert fence.returncode == 0, fence.stderr
    watch = run_cli("watch", "--db", reader, "--ledger", url, "--once", "--json", "--listen", "127.0.0.1:0")
    assert watch.returncode in (0, 1) and json.loads(watch.stdout)["primary"]["up"], (
        watch.stdout + watch.stderr
    )
    reconcile = run_cli("reconcile", "--db", reader, "--ledger", url, "--json")
    assert reconcile.returncode == 1, reconcile.stderr
    missing = json.loads(reconcile.stdout)["counts"]["missing_in_dr"]
    assert missing >= len(lost) - 10
    # The reader may not read the application's tables, so the split-brain lookup is said to be undone;
    # the recoverer may, and finds no key taken twice.
    unchecked = json.loads(reconcile.stdout)["split_brain_unchecked"]
    assert "permission denied" in unchecked and "GRANT SELECT ON public.orders" in unchecked, unchecked
    text = run_cli("reconcile", "--db", reader, "--ledger", url)
    assert "split-brain lookup was skipped" in " ".join(text.stdout.split()), text.stdout
    checked = json.loads(run_cli("reconcile", "--db", recoverer, "--ledger", url, "--json").stdout)
    assert checked["split_brain_unchecked"] is None and checked["split_brain"] == []
    replay = run_cli("replay", "--db", recoverer, "--ledger", url, "--apply", "--json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert json.loads(replay.stdout)["applied"] == missing
    with psycopg.connect(dr) as conn:
        # replayed rows came back under their own event ids, with capture suppressed: no new event
        assert (
            conn.execute(
                "SELECT count(*) FROM drledger.outbox o JOIN drledger.replay_log l ON l.event_id = o.id"
            ).fetchone()[0]  # type: ignore[index]
            == missing
        )
    restored = story.rig.keys_in(dr)
    assert restored >= story.on_dr and len(story.truth.keys - restored) <= 10


def test_a_missing_privilege_is_one_sentence_and_exit_2(story: Story) -> None:
    dr, url = story.rig.dr_dsn, story.rig.ledger_url
    app, reader = as_role(dr, APP), as_role(dr, ROLES["reader"])
    # The application's role holds none of the reader's rights; the reader none of the recoverer's writes.
    one_sentence(
        run_cli("reconcile", "--db", app, "--ledger", url),
        f"drledger reconcile as {APP} lacks USAGE on schema drledger: run GRANT USAGE ON SCHEMA",
        "the reader's rights",
    )
    for command in ("replay", "fence"):
        one_sentence(
            run_cli(command, "--db", reader, "--ledger", url, *(("--apply",) if command == "replay" else ())),
            f"drledger {command} as drl_reader lacks INSERT on drledger.outbox: run GRANT INSERT ON",
            "the recoverer's rights",
        )
    one_sentence(
        run_cli("init", "--db", app, "--table", "public.orders"),
        f'drledger init as {APP} lacks TRIGGER on public.orders: run GRANT TRIGGER ON "public"."orders"',
    )
    one_sentence(run_cli("prune", "--db", app, "--older-than", "7d", "--apply"), "permission denied")


def stops_before_anything(
    result: subprocess.CompletedProcess[str], command: str, role: str, grant: str
) -> None:
    """Exit 2, one sentence naming the command, the role and the GRANT that gives the right back."""
    one_sentence(
        result,
        f"drledger {command} as {role} lacks ",
        f": run {grant} (drledger init --print-grants lists the ",
    )


def test_a_right_revoked_from_the_printed_grants_stops_each_duty_before_it_reads_or_writes(
    story: Story,
) -> None:
    """One right of each duty's list taken away (on the promoted database, where the roles replicated
    to): its command names itself and the GRANT, before anything, and init --check --as shows it ✗."""
    dr, url = story.rig.dr_dsn, story.rig.ledger_url
    revoked = {
        "installer": (
            'GRANT TRIGGER ON "public"."orders" TO "drl_installer"',
            ("init", "--table", "public.orders"),
        ),
        "relay": (
            'ALTER ROLE "drl_relay" WITH REPLICATION',
            ("relay", "--ledger", url, "--state-dir", str(story.rig.clusters.base / "never")),
        ),
        "reader": ('GRANT SELECT ON "drledger"."outbox" TO "drl_reader"', ("reconcile", "--ledger", url)),
        "recoverer": (
            'GRANT INSERT ON "drledger"."replay_log" TO "drl_recoverer"',
            ("fence", "--ledger", url),
        ),
    }
    undo = {
        duty: grant.replace("WITH REPLICATION", "WITH NOREPLICATION")
        if duty == "relay"
        else grant.replace("GRANT", "REVOKE", 1).replace(" TO ", " FROM ", 1)
        for duty, (grant, _) in revoked.items()
    }
    before = story.rig.keys_in(dr)
    with psycopg.connect(dr, autocommit=True) as conn:
        logged = conn.execute("SELECT count(*) FROM drledger.replay_log").fetchone()[0]  # type: ignore[index]
        sequence = conn.execute("SELECT last_value FROM public.orders_id_seq").fetchone()[0]  # type: ignore[index]
        for statement in undo.values():
            conn.execute(statement)
    try:
        for duty, (grant, command) in revoked.items():
            role = ROLES[duty]
            stops_before_anything(
                run_cli(command[0], "--db", as_role(dr, role), *command[1:]), command[0], role, grant
            )
        reader, recoverer = as_role(dr, ROLES["reader"]), as_role(dr, ROLES["recoverer"])
        stops_before_anything(
            run_cli("watch", "--db", reader, "--ledger", url, "--once", "--listen", "127.0.0.1:0"),
            "watch",
            ROLES["reader"],
            revoked["reader"][0],
        )
        stops_before_anything(
            run_cli("replay", "--db", recoverer, "--ledger", url, "--apply"),
            "replay",
            ROLES["recoverer"],
            revoked["recoverer"][0],
        )
        with psycopg.connect(dr, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM drledger.replay_log").fetchone()[0] == logged  # type: ignore[index]
            assert conn.execute("SELECT last_value FROM public.orders_id_seq").fetchone()[0] == sequence  # type: ignore[index]
        assert story.rig.keys_in(dr) == before
        tables = (a for t in TABLES for a in ("--table", t))
        roles = (a for d, r in ROLES.items() for a in ("--as", f"{d}={r}"))
        check = run_cli("init", "--db", dr, "--check", "--json", *tables, *roles)
        assert check.returncode == 1
        lacking = {f["fix"] for f in json.loads(check.stdout)["findings"] if not f["ok"]}
        assert {grant for grant, _ in revoked.values()} <= lacking, lacking
    finally:
        with psycopg.connect(dr, autocommit=True) as conn:
            for grant, _ in revoked.values():
                conn.execute(grant)


#: 63 characters (PostgreSQL's longest name), mixed case and spaces: a name an 80-column wrap would cut
#: inside its quotes.
LONG_NAME = "Quarterly Revenue By Region And Product Line For Finance 2026Q4"


def test_print_grants_piped_to_a_file_never_wraps_and_psql_runs_it(
    primary: LocalCluster, workdir: Path
) -> None:
    assert len(LONG_NAME) == 63
    table = f'public."{LONG_NAME}"'
    suffix = uuid.uuid4().hex[:6]
    roles = {duty: f"{role}_{suffix}" for duty, role in ROLES.items()}
    try:
        with fresh_database(primary, f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v text)") as dsn:
            scripts = {}
            for phase in ("before", "after"):
                printed = run_cli(
                    "init",
                    "--db",
                    dsn,
                    "--table",
                    table,
                    "--print-grants",
                    *(a for duty, role in roles.items() for a in ("--role", f"{duty}={role}")),
                    "--phase",
                    phase,
                    env={"COLUMNS": "80"},  # what a terminal would have said; a pipe is not one
                )
                assert printed.returncode == 0, printed.stderr
                scripts[phase] = workdir / f"grants-{phase}.sql"
                scripts[phase].write_text(printed.stdout)
            text = scripts["before"].read_text() + scripts["after"].read_text()
            assert f'"{LONG_NAME}"' in text and "\x1b[" not in text  # whole, and never coloured
            for line in text.splitlines():
                assert line.count('"') % 2 == 0, f"a line ends inside a quoted name: {line!r}"
                assert not line or line.startswith("--") or line.endswith(";"), line
            assert max(len(line) for line in text.splitlines()) > 80  # a wrap would have had to cut

            def psql(script: Path, as_dsn: str) -> None:
                ran = subprocess.run(
                    ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", as_dsn, "-f", str(script)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert ran.returncode == 0, ran.stderr

            psql(scripts["before"], dsn)  # the superuser's part: the roles and what init needs
            installer = as_role(dsn, roles["installer"])
            init = run_cli("init", "--db", installer, "--table", table)
            assert init.returncode == 0, init.stderr
            psql(scripts["after"], installer)  # the installer's part, on what init made
            check = json.loads(
                run_cli(
                    "init",
                    "--db",
                    dsn,
                    "--table",
                    table,
                    "--check",
                    "--json",
                    *(a for duty, role in roles.items() for a in ("--as", f"{duty}={role}")),
                ).stdout
            )
            assert [f["what"] for f in check["findings"] if not f["ok"]] == [], check
    finally:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            for role in roles.values():
                conn.execute(f"DROP ROLE IF EXISTS {role}")
