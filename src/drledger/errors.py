"""drledger's exit codes and exception types: what the command line turns into one sentence and a code.

Every code a command may end with is an `ExitCode` member, with its meaning; `COMMAND_EXITS` says
which codes each command uses and what each means there. The command line's `--help` epilogs and
`exit_code_table()` (the table docs/exit-codes.md embeds) are generated from them, so the codes,
the help and the docs cannot drift apart.

Exit codes shared by every command: 2 bad input, or something an operator must fix (one sentence on
stderr, no traceback). The relay, a long-running process meant to run under a supervisor, adds one:
75 (EX_TEMPFAIL from sysexits.h), "a transient failure: restart me" — the database or the ledger went
away; nothing is lost, a restart resumes from the last batch the ledger acknowledged.

Every exception drledger raises on purpose is defined here, under `DrledgerError` where the operator
sees it (a one-sentence message and its `exit_code`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Every code a drledger command ends with."""

    SUCCESS = 0
    PROBLEM_FOUND = 1
    OPERATOR = 2
    NEEDS_HUMAN = 3
    INTERNAL_ERROR = 70
    RETRY = 75
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        """What the code means, in full (the docs' table)."""
        return _MEANINGS[self][0]

    @property
    def summary(self) -> str:
        """What the code means, in a few words (`drledger --help`, and a command's epilog by default)."""
        return _MEANINGS[self][1]


#: Kept for callers that name the codes by their old constants.
EXIT_OPERATOR = ExitCode.OPERATOR
EXIT_RETRY = ExitCode.RETRY

_MEANINGS: dict[ExitCode, tuple[str, str]] = {
    ExitCode.SUCCESS: ("success: done, nothing missing, or stopped by SIGINT/SIGTERM", "success"),
    ExitCode.PROBLEM_FOUND: (
        "the command ran and found a problem: `init --check` found something missing; `reconcile` found a "
        "recoverable loss; a drill's verdict failed; `watch --once` found a problem",
        "a check failed",
    ),
    ExitCode.OPERATOR: (
        "bad input, or something an operator must fix: an unreachable database, ledger or broker, a missing "
        "privilege, a bad URL; for the relay, an operator is needed (do not restart it)",
        "bad input or an unreachable database, ledger or broker (for the relay: an operator is needed)",
    ),
    ExitCode.NEEDS_HUMAN: (
        "something needs a person: mismatches, events missing from the ledger, malformed records, conflicting "
        "versions, split brain, replay conflicts or refusals, keys that could not be fenced",
        "something needs a human (reconcile, replay, fence)",
    ),
    ExitCode.INTERNAL_ERROR: (
        "a failure drledger did not foresee (a bug): one sentence, no traceback (`DRLEDGER_DEBUG=1` shows it)",
        "a failure drledger did not foresee, a bug (DRLEDGER_DEBUG=1 shows where)",
    ),
    ExitCode.RETRY: (
        "the relay stopped on a transient failure (EX_TEMPFAIL: the database or the ledger unreachable, the "
        "connection lost, the ledger not taking a batch for `--ledger-timeout`): restart it, it resumes where "
        "the ledger left off",
        "the relay stopped on a transient failure, restart it",
    ),
    ExitCode.INTERRUPTED: ("interrupted (Ctrl-C)", "interrupted"),
}


@dataclass(frozen=True)
class CommandExit:
    """A code a command ends with: what it means for this command (None: the code's summary), and the
    option without which the command never ends with it (`init --check`, `watch --once`)."""

    code: ExitCode
    specific: str | None = None
    option: str | None = None

    @property
    def meaning(self) -> str:
        return self.specific if self.specific is not None else self.code.summary


#: Any command may end with these: a bug, or Ctrl-C.
_ANY = (CommandExit(ExitCode.INTERNAL_ERROR), CommandExit(ExitCode.INTERRUPTED))
_CONNECTION = "bad input or a connection error"

#: Every command, in the order `exit_code_table()` names them, with the codes it ends with (any order:
#: its epilog lists them by code).
COMMAND_EXITS: dict[str, tuple[CommandExit, ...]] = {
    "init": (
        CommandExit(ExitCode.SUCCESS),
        CommandExit(ExitCode.PROBLEM_FOUND, "with --check: something is missing", "--check"),
        CommandExit(ExitCode.OPERATOR, _CONNECTION),
        *_ANY,
    ),
    "relay": (
        CommandExit(ExitCode.SUCCESS, "stopped by SIGINT/SIGTERM"),
        CommandExit(
            ExitCode.OPERATOR,
            "an operator is needed (bad input, the state directory belongs to another database, the "
            "replication slot was lost, a privilege or the outbox is missing)",
        ),
        CommandExit(
            ExitCode.RETRY,
            "a transient failure (database or ledger unreachable, connection lost): restart it, it resumes "
            "where the ledger left off",
        ),
        *_ANY,
    ),
    "prune": (CommandExit(ExitCode.SUCCESS), CommandExit(ExitCode.OPERATOR, _CONNECTION), *_ANY),
    "reconcile": (
        CommandExit(ExitCode.SUCCESS, "nothing missing"),
        CommandExit(ExitCode.PROBLEM_FOUND, "recoverable loss found"),
        CommandExit(ExitCode.OPERATOR, _CONNECTION),
        CommandExit(
            ExitCode.NEEDS_HUMAN,
            "something needs a human (mismatches, events missing from the ledger, malformed records)",
        ),
        *_ANY,
    ),
    "replay": (
        CommandExit(ExitCode.SUCCESS, "done (or, in a dry run, nothing to refuse)"),
        CommandExit(
            ExitCode.OPERATOR,
            "bad input or a connection error (a run stopped part way prints what it committed; run it again "
            "to resume), or a row replay wrote read back differently from its image (that source "
            "transaction was rolled back and is listed as refused)",
        ),
        CommandExit(
            ExitCode.NEEDS_HUMAN,
            "something was not written and needs a human (conflicts, refused or conflicting events, unreadable "
            "records, keys that could not be fenced)",
        ),
        *_ANY,
    ),
    "fence": (
        CommandExit(ExitCode.SUCCESS, "every sequence is past every proven key"),
        CommandExit(ExitCode.OPERATOR, _CONNECTION),
        CommandExit(
            ExitCode.NEEDS_HUMAN,
            "some keys could not be fenced (beyond the sequence's range, or a descending sequence)",
        ),
        *_ANY,
    ),
    "drill": (
        CommandExit(ExitCode.SUCCESS, "the verdict is ok"),
        CommandExit(ExitCode.PROBLEM_FOUND, "the drill ran and its verdict failed"),
        CommandExit(ExitCode.OPERATOR, "it could not run"),
        *_ANY,
    ),
    "watch": (
        CommandExit(ExitCode.SUCCESS, "stopped by SIGINT/SIGTERM (with --once: all is well)"),
        CommandExit(
            ExitCode.PROBLEM_FOUND,
            "with --once: a problem was found (a side unreadable, the relay down, events missing from the "
            "ledger, events a failover now would lose for good)",
            "--once",
        ),
        CommandExit(ExitCode.OPERATOR, "bad input (one sentence)"),
        *_ANY,
    ),
    "connect-config": (
        CommandExit(ExitCode.SUCCESS, "printed (with --apply: validated, then created or updated)"),
        CommandExit(
            ExitCode.OPERATOR,
            "bad input, Kafka Connect unreachable, or the configuration refused by Connect's validation",
        ),
        *_ANY,
    ),
    "ledger inspect": (CommandExit(ExitCode.SUCCESS), CommandExit(ExitCode.OPERATOR, _CONNECTION), *_ANY),
}

#: What a command's epilog says after its codes, where something about them needs saying.
_EXIT_NOTES = {
    "watch": "An outage of the primary, the replica or the ledger is a gauge and a log line, never an exit.",
}


def exit_help(command: str | None = None) -> str:
    """The "Exit codes: …" paragraph of a command's --help (None: drledger's own, every code)."""
    if command is None:
        entries = [(code, code.summary) for code in ExitCode]
        note = None
    else:
        entries = sorted((e.code, e.meaning) for e in COMMAND_EXITS[command])
        note = _EXIT_NOTES.get(command)
    text = "Exit codes: " + "; ".join(f"{int(code)} {meaning}" for code, meaning in entries) + "."
    return f"{text} {note}" if note else text


def commands_using(code: ExitCode) -> str:
    """The commands that end with `code`, as the docs' table names them ("every command" if all do)."""
    using = [
        (command, entry.option)
        for command, entries in COMMAND_EXITS.items()
        for entry in entries
        if entry.code is code
    ]
    if len(using) == len(COMMAND_EXITS) and not any(option for _, option in using):
        return "every command"
    return ", ".join(f"`{command} {option}`" if option else f"`{command}`" for command, option in using)


def exit_code_table() -> str:
    """Every exit code as a Markdown table (code | name | meaning | commands), as docs/exit-codes.md shows it."""
    lines = ["| code | name | meaning | commands |", "|---|---|---|---|"]
    lines += [
        f"| {int(code)} | `{code.name}` | {code.meaning} | {commands_using(code)} |" for code in ExitCode
    ]
    return "\n".join(lines) + "\n"


class DrledgerError(Exception):
    """A failure the operator can act on: bad input, an unreachable service, a missing prerequisite.

    The message is shown as it is, so it must be one plain sentence that says what to do.
    """

    exit_code: ExitCode = ExitCode.OPERATOR


class MissingPrivilege(DrledgerError):
    """The connected role lacks a right of its duty's list (drledger.roles): found before the command
    read or wrote anything, said with the command and the GRANT that fixes it."""


class LedgerUnavailable(DrledgerError):
    """The ledger could not be reached or did not acknowledge a write."""


class DatabaseUnavailable(DrledgerError):
    """The database could not be reached."""


class SourceUnavailable(DatabaseUnavailable):
    """The database went away part way (a lost connection, a server shutting down)."""


class RetryLater(DrledgerError):
    """A long-running command stopped on a transient failure (a connection lost, a broker away).

    Exit 75: a supervisor should start it again, after a pause; it resumes where it left off.
    """

    exit_code = ExitCode.RETRY


class LedgerMissing(LedgerUnavailable):
    """The ledger named does not exist (yet): a file, topic, queue or stream nobody created. A reader
    stops on it (exit 2); the watcher, started before the relay, reports the ledger down until it appears."""


class SlotBusy(RetryLater):
    """The replication slot is held by another connection: a relay that just died (freed shortly), or
    another relay on the same slot (which no retry mends: the relay stops, exit 2, after a short grace)."""


#: What AWS answers when the queue or stream named does not exist.
AWS_NOT_FOUND = frozenset(
    {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)


class AwsFailure(LedgerUnavailable):
    """An AWS call failed with an error code; callers decide by the code, never by the message."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def not_found(self) -> bool:
        return self.code in AWS_NOT_FOUND


class ReplayInterrupted(DrledgerError):
    """Replay stopped part way; `result` (a `replay.ReplayResult`: this bottom layer does not import
    it) holds what was committed before it stopped."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


class RowsRejected(Exception):
    """The database refused some rows (a value of the wrong type, a foreign key, a check): `reason`
    is its own first line. Replay narrows a rejected batch down to the rows and reports them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived before the engine ran (during checks, start-up or a backfill)."""
