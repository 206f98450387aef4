"""The fence margin's default and bounds: one definition for the library and the command line.

Light to import (the command line builds its options from it before loading any database driver).
"""

from __future__ import annotations

from drledger.errors import DrledgerError

#: How far past the highest key the ledger knows a sequence is moved: room for keys the failed
#: primary handed out after the ledger's last event.
DEFAULT_MARGIN = 1000
#: A margin wider than this is a typo, not a plan: it would spend a sequence's range for nothing.
MAX_MARGIN = 1_000_000_000


def validate_margin(margin: int) -> None:
    if not 0 <= margin <= MAX_MARGIN:
        raise DrledgerError(
            f"The fence margin must be a whole number from 0 to {MAX_MARGIN:,}; got {margin}."
        )
