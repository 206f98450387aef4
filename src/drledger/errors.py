"""The one exception type the command line turns into a one-sentence message and exit code 2."""

from __future__ import annotations


class DrledgerError(Exception):
    """A failure the operator can act on: bad input, an unreachable service, a missing prerequisite.

    The message is shown as it is, so it must be one plain sentence that says what to do.
    """

    exit_code = 2


class LedgerUnavailable(DrledgerError):
    """The ledger could not be reached or did not acknowledge a write."""


class DatabaseUnavailable(DrledgerError):
    """The database could not be reached."""
