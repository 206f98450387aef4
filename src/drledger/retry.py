"""The one backoff every retry in drledger waits by: doubling from a tenth of a second, capped."""

from __future__ import annotations

from collections.abc import Iterator

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


def backoff(first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> Iterator[float]:
    """The delays to wait between attempts: first, twice that, … never more than `cap`."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)
