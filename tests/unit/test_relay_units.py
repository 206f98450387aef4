"""The relay's rules that need no service: Debezium's connection settings, the state directory's
ownership checks, and how a Debezium failure becomes one sentence and an exit code."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from drledger.errors import EXIT_OPERATOR, EXIT_RETRY, DrledgerError, RetryLater
from drledger.relay.state import RelayState, check_source, snapshot_due
from drledger.source.postgres.debezium import debezium_properties
from drledger.source.postgres.faults import classify
from drledger.streaming import Cause, RelaySettings, SlotInfo, SourceIdentity

PRIMARY = SourceIdentity("7300000000000000001", 1, "shop", "drledger_slot")
SLOT = SlotInfo("shop", "pgoutput", "reserved", None)


def test_every_libpq_tls_setting_reaches_debezium(tmp_path: Path) -> None:
    props = debezium_properties(
        "postgresql://app:pw@db.example:6543/shop?sslmode=verify-full&sslrootcert=/etc/drledger/ca.pem"
        "&sslcert=/etc/drledger/client.crt&sslkey=/etc/drledger/client.pk8&sslpassword=k3y",
        RelaySettings(slot="s1", state_dir=tmp_path),
    )
    assert props["database.sslmode"] == "verify-full"
    assert props["database.sslrootcert"] == "/etc/drledger/ca.pem"
    assert props["database.sslcert"] == "/etc/drledger/client.crt"
    assert props["database.sslkey"] == "/etc/drledger/client.pk8"
    assert props["database.sslpassword"] == "k3y"
    assert (props["database.hostname"], props["database.port"], props["database.user"]) == (
        "db.example",
        "6543",
        "app",
    )


def test_tls_settings_come_from_the_environment_as_libpq_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-ca")
    monkeypatch.setenv("PGSSLROOTCERT", "/etc/ssl/pg-ca.pem")
    props = debezium_properties("host=db dbname=shop user=app", RelaySettings(state_dir=tmp_path))
    assert props["database.sslmode"] == "verify-ca"
    assert props["database.sslrootcert"] == "/etc/ssl/pg-ca.pem"
    # The DSN wins over the environment, as in libpq.
    props = debezium_properties(
        "host=db dbname=shop user=app sslmode=require", RelaySettings(state_dir=tmp_path)
    )
    assert props["database.sslmode"] == "require"


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        ("postgresql://app@db/shop?sslcrl=/etc/crl.pem", "sslcrl=/etc/crl.pem"),
        ("postgresql://app@db/shop?ssl_min_protocol_version=TLSv1.3", "ssl_min_protocol_version"),
        ("postgresql://app@db1,db2/shop", "several hosts"),
        ("host=/var/run/postgresql dbname=shop", "Unix socket"),
        ("postgresql://app@db/shop?nonsense=1", "not valid"),
    ],
)
def test_connection_settings_debezium_cannot_honour_are_refused(
    tmp_path: Path, dsn: str, fragment: str
) -> None:
    with pytest.raises(DrledgerError, match=fragment) as caught:
        debezium_properties(dsn, RelaySettings(state_dir=tmp_path))
    assert caught.value.exit_code == EXIT_OPERATOR
    assert "\n" not in str(caught.value)


def test_bounded_retries_never_forever(tmp_path: Path) -> None:
    props = debezium_properties("postgresql://app@db/shop", RelaySettings(state_dir=tmp_path))
    assert int(props["errors.max.retries"]) > 0  # -1 would retry forever: a zombie


def open_state(tmp_path: Path, slot: str = "drledger_slot") -> RelayState:
    state = RelayState(RelaySettings(slot=slot, state_dir=tmp_path / "state"))
    state.open()
    return state


def test_state_directory_is_private_and_tied_to_its_database(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    check_source(state, PRIMARY, None, backfill=False)
    directory = tmp_path / "state"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    recorded = json.loads(state.settings.identity_file.read_text())
    assert (recorded["system_identifier"], recorded["timeline"], recorded["database"]) == (
        PRIMARY.system_identifier,
        1,
        "shop",
    )


def test_a_loose_state_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    (directory / "drledger_slot.stats.json").write_text("{}")
    os.chmod(directory / "drledger_slot.stats.json", 0o644)
    open_state(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "drledger_slot.stats.json").stat().st_mode) == 0o600


def test_a_shared_directory_is_never_chmodded(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "notes.txt").write_text("not the relay's")
    state = RelayState(RelaySettings(state_dir=shared))
    state.open()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE(state.settings.offsets_file.stat().st_mode) == 0o600


def test_only_one_relay_per_state_directory_and_slot(tmp_path: Path) -> None:
    open_state(tmp_path)
    with pytest.raises(DrledgerError, match=r"Another relay \(pid \d+\) is running with slot drledger_slot"):
        open_state(tmp_path)
    open_state(tmp_path, slot="other_slot")  # another slot's state is its own


def with_offsets(state: RelayState) -> None:
    state.settings.offsets_file.write_bytes(b"\xac\xed\x00\x05 debezium's offsets")


def test_another_databases_offsets_are_refused_and_kept(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    check_source(state, PRIMARY, SLOT, backfill=False)
    with_offsets(state)
    before = {p.name: p.read_bytes() for p in state.directory.iterdir() if p.suffix != ".lock"}
    other = SourceIdentity("7399999999999999999", 1, "shop", "drledger_slot")
    with pytest.raises(DrledgerError, match="belongs to another database") as caught:
        check_source(state, other, SLOT, backfill=False)
    assert str(state.directory) in str(caught.value)
    assert {p.name: p.read_bytes() for p in state.directory.iterdir() if p.suffix != ".lock"} == before


def test_a_record_without_offsets_protects_nothing(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    check_source(state, PRIMARY, None, backfill=False)  # recorded, but never got to relay
    other = SourceIdentity("7399999999999999999", 1, "lab", "drledger_slot")
    check_source(state, other, None, backfill=False)
    assert state.recorded_identity() == other


def test_the_promoted_replica_cannot_resume_from_the_primarys_offsets(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    check_source(state, PRIMARY, SLOT, backfill=False)
    with_offsets(state)
    promoted = SourceIdentity(PRIMARY.system_identifier, 2, "shop", "drledger_slot")
    with pytest.raises(DrledgerError, match=r"timeline 1 .* now on timeline 2") as caught:
        check_source(state, promoted, SLOT, backfill=True)
    assert "--slot" in str(caught.value) and "--backfill-since" in str(caught.value)
    # The runbook's own slot on the promoted database starts a state of its own.
    runbook = open_state(tmp_path, slot="drledger_dr")
    check_source(
        runbook, SourceIdentity(PRIMARY.system_identifier, 2, "shop", "drledger_dr"), None, backfill=True
    )


def test_a_lost_or_missing_slot_says_how_to_backfill(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    check_source(state, PRIMARY, SLOT, backfill=False)
    with_offsets(state)
    state.settings.stats_file.write_text(json.dumps({"last_commit_ms": 1_800_000_000_000}))
    lost = SlotInfo("shop", "pgoutput", "lost", None)
    with pytest.raises(DrledgerError, match="was invalidated") as caught:
        check_source(state, PRIMARY, lost, backfill=False)
    assert "pg_drop_replication_slot('drledger_slot')" in str(caught.value)
    assert "--backfill-since 2027-01-15T07:45:00.000Z" in str(
        caught.value
    )  # 15 minutes before the last event
    with pytest.raises(DrledgerError, match="no longer exists"):
        check_source(state, PRIMARY, None, backfill=False)
    check_source(state, PRIMARY, None, backfill=True)  # a backfill creates it and covers the gap
    with pytest.raises(DrledgerError, match="belongs to the database 'other'"):
        check_source(state, PRIMARY, SlotInfo("other", "pgoutput", "reserved", None), backfill=False)


CONTEXT = {"slot": "drledger_slot", "state_dir": "/var/lib/drledger", "backfill_hint": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("chain", "code", "fragment"),
    [
        (
            [
                Cause("org.apache.kafka.connect.errors.RetriableException", "An exception occurred"),
                Cause(
                    "org.postgresql.util.PSQLException",
                    "An I/O error occurred while sending to the backend.",
                    "08006",
                ),
                Cause("java.net.SocketException", "Connection reset"),
            ],
            EXIT_RETRY,
            "lost its connection to the database (An I/O error occurred while sending to the backend)",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    "FATAL: terminating connection due to administrator command",
                    "57P01",
                )
            ],
            EXIT_RETRY,
            "lost its connection",
        ),
        (
            [
                Cause(
                    "io.debezium.DebeziumException",
                    "Publication autocreation is disabled, please create one and restart the connector.",
                )
            ],
            EXIT_OPERATOR,
            "The publication drledger_pub is missing",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    'ERROR: publication "drledger_pub" does not exist',
                    "42704",
                )
            ],
            EXIT_OPERATOR,
            "created after the slot's position",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    "ERROR: permission denied for table heartbeat",
                    "42501",
                )
            ],
            EXIT_OPERATOR,
            "lacks a privilege the relay needs (permission denied for table heartbeat)",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    'ERROR: can no longer get changes from replication slot "drledger_slot"',
                    "55000",
                )
            ],
            EXIT_OPERATOR,
            "was invalidated",
        ),
        (
            [
                Cause(
                    "io.debezium.DebeziumException",
                    "The connector is trying to read change stream starting at Struct{lsn=1}, but this is no longer "
                    "available on the server. Reconfigure the connector to use a snapshot mode when needed.",
                )
            ],
            EXIT_OPERATOR,
            "no longer available in the replication slot 'drledger_slot'",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    'ERROR: replication slot "drledger_slot" is active for PID 42',
                    "55006",
                )
            ],
            EXIT_RETRY,
            "is held by another connection",
        ),
        (
            [
                Cause(
                    "org.postgresql.util.PSQLException",
                    'FATAL: password authentication failed for user "app"',
                    "28P01",
                )
            ],
            EXIT_OPERATOR,
            "refused the relay's login",
        ),
        ([Cause("java.lang.IllegalStateException", "something new")], EXIT_RETRY, "stopped (something new)"),
    ],
)
def test_a_debezium_failure_becomes_one_sentence_and_an_exit_code(
    chain: list[Cause], code: int, fragment: str
) -> None:
    error = classify(chain, **CONTEXT)
    assert error.exit_code == code
    assert isinstance(error, RetryLater) == (code == EXIT_RETRY)
    message = str(error)
    assert fragment in message, message
    assert "\n" not in message and "\tat " not in message and message.endswith(".")


def test_a_slot_name_postgresql_would_refuse_is_refused_before_debezium_starts(tmp_path: Path) -> None:
    from drledger.errors import DrledgerError
    from drledger.streaming import RelaySettings

    for slot in ("Bad-Slot", "", "x" * 64, "drledger slot", "a;b"):
        with pytest.raises(DrledgerError, match="not a replication slot name"):
            RelaySettings(slot=slot, state_dir=tmp_path)
    RelaySettings(slot="drledger_dr_2", state_dir=tmp_path)


def test_a_snapshot_reads_age_is_not_counted_as_the_relays_lag() -> None:
    from drledger.relay.engine import RelayStats
    from tests.helpers import make_events

    old, fresh = make_events(2, start_ms=1_000, step_ms=98_990)  # committed at 1,000 and 99,990 ms
    stats = RelayStats()
    stats.record([old], 100_000, streamed=[])  # a snapshot read of a row made 99 s ago
    assert stats.events == 1 and stats.last_lag_ms is None and not stats.lag_ms_counts
    stats.record([old, fresh], 100_000, streamed=[fresh])
    assert stats.last_lag_ms == 10 and dict(stats.lag_ms_counts) == {10: 1}


def _offsets(position: str) -> bytes:
    """Debezium's offsets file as FileOffsetBackingStore writes it: a serialized Java map of byte arrays."""
    key = b'["drledger-relay-drledger_slot",{"server":"drledger"}]'
    return (
        b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap\x05\x07\xda\xc1\xc3\x16`\xd1\x03\x00\x02F\x00\nloadFactor"
        + b"ur\x00\x02[B\xac\xf3\x17\xf8\x06\x08T\xe0\x02\x00\x00xp\x00\x00\x006"
        + key
        + b"uq\x00~\x00\x02\x00\x00\x00\x83"
        + position.encode()
        + b"x"
    )


def test_a_snapshot_is_due_on_a_first_start_and_after_one_cut_short_only() -> None:
    cut = '{"last_snapshot_record":false,"lsn":42128640,"txId":728,"snapshot":"INITIAL","snapshot_completed":false}'
    done = '{"last_snapshot_record":true,"lsn":42128640,"txId":728,"snapshot":"INITIAL","snapshot_completed":true}'
    streaming = '{"lsn_proc":42129680,"messageType":"UPDATE","lsn_commit":42129624,"lsn":42129680,"txId":734}'
    older = '{"last_snapshot_record":false,"lsn":1,"snapshot":true}'  # before snapshot_completed existed
    assert snapshot_due(b"", "initial")
    assert snapshot_due(_offsets(cut), "initial")
    assert snapshot_due(_offsets(older), "initial")
    assert not snapshot_due(_offsets(done), "initial")
    assert not snapshot_due(_offsets(streaming), "initial")
    assert not snapshot_due(b"", "no_data") and not snapshot_due(_offsets(cut), "no_data")
