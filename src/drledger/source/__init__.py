"""The source-database seam (see base.py): `open_source` picks the engine from the DSN's form."""

from __future__ import annotations

import sys

from drledger.errors import DrledgerError
from drledger.source.base import SourceDatabase

#: URL schemes by engine; a key=value DSN (host=… dbname=…) is PostgreSQL's libpq form.
POSTGRES_SCHEMES = ("postgresql", "postgres")
MYSQL_SCHEMES = ("mysql", "mariadb")


def open_source(dsn: str) -> SourceDatabase:
    """The database a DSN names, as drledger's one interface to it. Touches nothing until used."""
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme in POSTGRES_SCHEMES or not scheme:
        from drledger.source.postgres import PostgresSource

        return PostgresSource(dsn)
    if scheme in MYSQL_SCHEMES:
        from drledger.source.mysql import MySQLSource

        return MySQLSource(dsn)
    raise DrledgerError(
        f"drledger does not know the database engine '{scheme}'; give a postgresql:// or mysql:// URL, or a "
        "PostgreSQL key=value DSN."
    )


def explain_failure(exc: BaseException) -> DrledgerError | None:
    """A database driver's exception that escaped a command, as one sentence and an exit code; None
    if it is not one (a driver never loaded raised nothing)."""
    if "psycopg" in sys.modules:
        from drledger.source.postgres.connection import explain

        explained = explain(exc)
        if explained is not None:
            return explained
    if "pymysql" in sys.modules:
        from drledger.source.mysql.connection import explain as explain_mysql

        return explain_mysql(exc)
    return None
