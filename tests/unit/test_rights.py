"""The one list of rights: which duty each command runs as, what the list holds, and the sentence a
command stops with when its role lacks a right of it (the checks themselves run on real servers:
tests/integration/test_least_privilege.py, test_mysql.py)."""

from __future__ import annotations

from drledger.names import TableName
from drledger.roles import COMMAND_DUTY, MissingRight, missing_right_sentence
from drledger.source.mysql.privileges import needs


def test_every_command_that_touches_a_database_runs_as_one_duty() -> None:
    assert COMMAND_DUTY == {
        "init": "installer",
        "relay": "relay",
        "reconcile": "reader",
        "watch": "reader",
        "ledger inspect": "reader",
        "fence": "recoverer",
        "replay": "recoverer",
    }


def test_the_sentence_names_the_command_the_role_the_right_and_the_grant() -> None:
    right = MissingRight(
        "drledger_reader",
        "reader",
        "SELECT on drledger.outbox",
        'GRANT SELECT ON "drledger"."outbox" TO "drledger_reader"',
    )
    assert missing_right_sentence("reconcile", right) == (
        "drledger reconcile as drledger_reader lacks SELECT on drledger.outbox: run "
        'GRANT SELECT ON "drledger"."outbox" TO "drledger_reader" '
        "(drledger init --print-grants lists the reader's rights)."
    )


def test_the_mysql_recoverer_may_apply_updates_and_deletes_and_only_watch_needs_process() -> None:
    listed = needs({"recoverer": "rec", "reader": "rd"}, [TableName("Sales", "customer")])
    recoverer = {n.what for _, n in listed if n.duty == "recoverer"}
    assert {f"{p} on Sales.customer" for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "ALTER")} <= recoverer
    reader = {n.what: n for _, n in listed if n.duty == "reader"}
    assert set(reader) == {"SELECT on drledger.outbox", "SELECT on drledger.relays", "PROCESS on *.*"}
    assert [w for w, n in reader.items() if n.used_by("reconcile")] == ["SELECT on drledger.outbox"]
    assert all(n.used_by("watch") for n in reader.values())
    grants = {n.grant(r) for r, n in listed}
    assert "GRANT DELETE ON `Sales`.`customer` TO 'rec'@'%'" in grants
    assert "GRANT PROCESS ON *.* TO 'rd'@'%'" in grants
