"""The margins drledger reads and writes with, one definition for the library and the command line:
the fence margin's default and bounds, the clock-skew margin, and the default lookback.

The durations are kept as an operator types them (the command line shows them as its defaults);
the library's seconds and milliseconds are derived from that text.

Light to import (the command line builds its options from it before loading any database driver).
"""

from __future__ import annotations

from drledger.errors import DrledgerError
from drledger.timeutil import parse_duration

#: How far past the highest key the ledger knows a sequence is moved: room for keys the failed
#: primary handed out after the ledger's last event.
DEFAULT_MARGIN = 1000
#: A margin wider than this is a typo, not a plan: it would spend a sequence's range for nothing.
MAX_MARGIN = 1_000_000_000


#: Clock-skew (and commit-order) margin: both sides of a window are read this much wider.
DEFAULT_SKEW = "5s"
DEFAULT_SKEW_S = parse_duration(DEFAULT_SKEW)
DEFAULT_SKEW_MS = round(DEFAULT_SKEW_S * 1000)
#: How far before the DR database's last commit the default reconcile window starts; and how far back
#: a freshly started watcher checks the ledger's completeness (the window reconcile would read).
DEFAULT_LOOKBACK = "10m"
DEFAULT_LOOKBACK_S = parse_duration(DEFAULT_LOOKBACK)
DEFAULT_LOOKBACK_MS = round(DEFAULT_LOOKBACK_S * 1000)


def validate_margin(margin: int) -> None:
    if not 0 <= margin <= MAX_MARGIN:
        raise DrledgerError(
            f"The fence margin must be a whole number from 0 to {MAX_MARGIN:,}; got {margin}."
        )
