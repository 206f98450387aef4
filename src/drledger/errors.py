"""The exception types the command line turns into a one-sentence message and an exit code.

Exit codes shared by every command: 2 bad input, or something an operator must fix (one sentence on
stderr, no traceback). The relay, a long-running process meant to run under a supervisor, adds one:
75 (EX_TEMPFAIL from sysexits.h), "a transient failure: restart me" — the database or the ledger went
away; nothing is lost, a restart resumes from the last batch the ledger acknowledged.
"""

from __future__ import annotations

EXIT_OPERATOR = 2
EXIT_RETRY = 75


class DrledgerError(Exception):
    """A failure the operator can act on: bad input, an unreachable service, a missing prerequisite.

    The message is shown as it is, so it must be one plain sentence that says what to do.
    """

    exit_code = EXIT_OPERATOR


class LedgerUnavailable(DrledgerError):
    """The ledger could not be reached or did not acknowledge a write."""


class DatabaseUnavailable(DrledgerError):
    """The database could not be reached."""


class RetryLater(DrledgerError):
    """A long-running command stopped on a transient failure (a connection lost, a broker away).

    Exit 75: a supervisor should start it again, after a pause; it resumes where it left off.
    """

    exit_code = EXIT_RETRY
