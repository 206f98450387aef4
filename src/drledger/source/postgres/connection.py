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


def explain(exc: BaseException) -> DrledgerError | None:
    """psycopg's exception as the one sentence the command line prints; None for anything else."""
    if not isinstance(exc, psycopg.Error):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return DrledgerError(
            f"The database refused: {first}; this role lacks a privilege the command needs "
            "(drledger init --check --as DUTY=ROLE names it, with its GRANT)."
        )
    return DrledgerError(f"The database refused: {first}.")
