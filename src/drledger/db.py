"""Connecting to PostgreSQL with errors an operator can act on, and DSNs safe to print."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drledger.errors import DatabaseUnavailable, DrledgerError

_URL_PASSWORD = re.compile(r"(://[^:/@]+:)([^@]*)(@)")


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ***, in URL or key=value form."""
    if "://" in dsn:
        masked = _URL_PASSWORD.sub(r"\1***\3", dsn)
        return re.sub(r"(password=)[^&]*", r"\1***", masked)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, connect_timeout=10, **kwargs)
    except psycopg.ProgrammingError as exc:
        raise DrledgerError(f"The database DSN '{mask_dsn(dsn)}' is not valid: {_first_line(exc)}.") from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"Cannot connect to the database at {mask_dsn(dsn)}: {_first_line(exc)}."
        ) from None


def _first_line(exc: Exception) -> str:
    """libpq's reason without its preamble: 'connection to server at …, port … failed: X' → 'X'."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else exc.__class__.__name__
    return first.rsplit("failed: ", 1)[-1].strip().rstrip(".")
