"""Connecting to MySQL (Aurora MySQL, and MariaDB as its stand-in here) with errors an operator can act on.

A DSN is a URL: `mysql://user:password@host:port/database?ssl_ca=…&ssl_cert=…&ssl_key=…`. The
database is the one whose tables are captured; drledger's own tables live in the database `drledger`
on the same server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from drledger.errors import DatabaseUnavailable, DrledgerError
from drledger.masking import mask_url, scrub

SCHEMES = ("mysql", "mariadb")
#: TLS settings a DSN may carry, as PyMySQL's `ssl` dictionary names them.
TLS_OPTIONS = {"ssl_ca": "ca", "ssl_cert": "cert", "ssl_key": "key", "ssl_verify_cert": "check_hostname"}


@dataclass(frozen=True)
class MySQLAddress:
    host: str
    port: int
    user: str
    password: str
    database: str
    tls: dict[str, str] = field(default_factory=dict)


def parse_dsn(dsn: str) -> MySQLAddress:
    shown = mask_url(dsn)
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError as exc:
        raise DrledgerError(f"The database DSN '{shown}' cannot be parsed ({exc}).") from None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise DrledgerError(
            f"The database DSN '{shown}' is not of the form mysql://user:password@host:port/db."
        )
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - set(TLS_OPTIONS))
    if unknown:
        raise DrledgerError(
            f"The database DSN '{shown}' has options drledger does not know: {', '.join(unknown)}."
        )
    return MySQLAddress(
        parts.hostname,
        port,
        unquote(parts.username or "root"),
        unquote(parts.password or ""),
        parts.path.lstrip("/"),
        {TLS_OPTIONS[k]: v for k, v in options.items()},
    )


def connect(dsn: str, *, database: str | None = None, autocommit: bool = True) -> Any:
    """A PyMySQL connection in utf8mb4, strict SQL mode and UTC, so values are neither truncated
    silently nor shifted by a session's time zone."""
    try:
        import pymysql
    except ImportError:
        raise DrledgerError("MySQL needs the PyMySQL driver: pip install 'drledger[mysql]'.") from None
    address = parse_dsn(dsn)
    try:
        return pymysql.connect(
            host=address.host,
            port=address.port,
            user=address.user,
            password=address.password,
            database=(database if database is not None else address.database) or None,
            charset="utf8mb4",
            autocommit=autocommit,
            connect_timeout=10,
            ssl=address.tls or None,
            init_command="SET SESSION time_zone = '+00:00', "
            "SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO')",
        )
    except pymysql.err.OperationalError as exc:
        raise DatabaseUnavailable(
            f"Cannot connect to the database at {mask_url(dsn)}: {scrub(_reason(exc), dsn)}."
        ) from None


def _reason(exc: BaseException) -> str:
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    text = str(args[1]) if len(args) > 1 else str(exc)
    return text.strip().rstrip(".")


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return int(args[0]) if args and isinstance(args[0], int) else None


def explain(exc: BaseException) -> DrledgerError | None:
    """PyMySQL's exception as the one sentence the command line prints; None for anything else."""
    try:
        import pymysql
    except ImportError:
        return None
    if not isinstance(exc, pymysql.err.Error):
        return None
    reason = _reason(exc)
    if error_code(exc) in (1044, 1045, 1142, 1143, 1227, 1370):
        return DrledgerError(
            f"The database refused: {reason}; this role lacks a privilege the command needs "
            "(drledger init --check --as DUTY=ROLE names it, with its GRANT)."
        )
    return DrledgerError(f"The database refused: {reason}.")
