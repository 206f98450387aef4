"""Connecting to PostgreSQL with errors an operator can act on, and DSNs safe to print."""

from __future__ import annotations

from typing import Any

import psycopg

from drledger.errors import DatabaseUnavailable, DrledgerError
from drledger.masking import mask_dsn, scrub

__all__ = ["connect", "mask_dsn"]


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, connect_timeout=10, **kwargs)
    except psycopg.ProgrammingError as exc:
        raise DrledgerError(
            f"The database DSN '{mask_dsn(dsn)}' is not valid: {scrub(_first_line(exc), dsn)}."
        ) from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"Cannot connect to the database at {mask_dsn(dsn)}: {scrub(_first_line(exc), dsn)}."
        ) from None


def _first_line(exc: Exception) -> str:
    """libpq's reason without its preamble: 'connection to server at …, port … failed: X' → 'X'."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else exc.__class__.__name__
    return first.rsplit("failed: ", 1)[-1].strip().rstrip(".")
