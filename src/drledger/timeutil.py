"""Parsing and printing the instants and durations operators type on the command line."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from drledger.errors import DrledgerError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
#: Longer than any window, retention or margin an operator means: a century.
MAX_DURATION_S = 100 * 365 * 86400
# Instants drledger can compare with a database's clock: the epoch to the end of year 9999.
_LAST_INSTANT_MS = 253_402_300_799_999


def parse_duration(text: str) -> float:
    """'90s', '15m', '7d', '250ms' or a bare number of seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise DrledgerError(f"'{text}' is not a duration; write it like 30s, 15m, 2h or 7d.")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise DrledgerError(f"'{text}' is longer than a century; give a duration an operator means.")
    return seconds


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_instant(text: str, *, now: int | None = None) -> int:
    """An ISO-8601 time, 'now', or a duration meaning that long ago → epoch milliseconds (UTC).

    A time without a zone is taken as UTC, because operators compare it with database timestamps.
    """
    reference = now_ms() if now is None else now
    stripped = text.strip()
    if stripped.lower() == "now":
        return reference
    if _DURATION.match(stripped):
        instant = reference - int(parse_duration(stripped) * 1000)
    else:
        try:
            parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        except ValueError:
            raise DrledgerError(
                f"'{text}' is not a time; give an ISO-8601 time (2026-11-27T15:00:00Z), 'now', "
                "or how long ago (15m, 2h)."
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            instant = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            instant = -1
    if not 0 <= instant <= _LAST_INSTANT_MS:
        raise DrledgerError(f"'{text}' is not a time between 1970 and the year 9999.")
    return instant


def format_instant(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
