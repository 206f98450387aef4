"""The Debezium PostgreSQL connector's configuration for one relay, built from a DSN and its settings.

The connection settings are libpq's, as psycopg would use them: the DSN first, then the PG*
environment variables (PGHOST, PGSSLMODE, PGSSLROOTCERT, …), then libpq's defaults. Every TLS setting
reaches Debezium, which hands it to its Java driver (PgJDBC); a TLS setting that driver cannot apply
is refused in one sentence rather than dropped, because dropping it would weaken the connection.
"""

from __future__ import annotations

import psycopg
from psycopg import pq

from drledger.errors import DrledgerError
from drledger.source.postgres.outbox import PUBLICATION
from drledger.streaming import RelaySettings, engine_properties

TOPIC_PREFIX = "drledger"
HEARTBEAT_QUERY = (
    "INSERT INTO drledger.heartbeat (id, beat_at) VALUES (1, now()) "
    "ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at"
)

# libpq's TLS settings and the Debezium PostgreSQL connector's names for them (Debezium 3.x:
# database.sslmode takes libpq's values disable/allow/prefer/require/verify-ca/verify-full).
TLS_SETTINGS = {
    "sslmode": "database.sslmode",
    "sslrootcert": "database.sslrootcert",
    "sslcert": "database.sslcert",
    "sslkey": "database.sslkey",
    "sslpassword": "database.sslpassword",
}
# libpq TLS settings PgJDBC has no equivalent for, with the value that asks for nothing special.
_TLS_UNSUPPORTED = {
    "sslcrl": None,
    "sslcrldir": None,
    "sslcertmode": None,
    "ssl_max_protocol_version": None,
    "ssl_min_protocol_version": "TLSv1.2",  # Java's own floor
    "sslnegotiation": "postgres",
}


def connection_settings(dsn: str) -> dict[str, str]:
    """The libpq settings a connection with this DSN uses: the DSN's, else PG* variables, else defaults."""
    try:
        given = {o.keyword.decode(): o.val for o in pq.Conninfo.parse(dsn.encode())}
    except psycopg.Error as exc:
        raise DrledgerError(f"The database DSN is not valid: {str(exc).strip()}.") from None
    settings: dict[str, str] = {}
    for option in pq.Conninfo.get_defaults():
        key = option.keyword.decode()
        value = given.get(key) if given.get(key) is not None else option.val
        if value is not None:
            settings[key] = value.decode()
    return settings


def debezium_properties(dsn: str, settings: RelaySettings, *, password: str | None = None) -> dict[str, str]:
    """Debezium's properties for a relay on `dsn`. `password` is the one libpq found (e.g. in ~/.pgpass)
    when the DSN and environment give none."""
    params = connection_settings(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    if "," in host or "," in params.get("port", ""):
        raise DrledgerError(
            f"The database DSN names several hosts ({host}); the relay follows one: give it the primary's."
        )
    if host.startswith("/") or host.startswith("@"):
        raise DrledgerError(
            f"The database DSN reaches PostgreSQL through a Unix socket ({host}), which Debezium's Java driver "
            "cannot use: give --db a host name or address (host=127.0.0.1 for this machine)."
        )
    for key, neutral in _TLS_UNSUPPORTED.items():
        value = params.get(key)
        if value not in (None, "", neutral):
            raise DrledgerError(
                f"The database connection sets {key}={value}, which Debezium's Java driver (PgJDBC) cannot apply: "
                "remove it from the DSN and the environment, or the relay would connect with weaker TLS than asked."
            )
    user = params.get("user", "postgres")
    props = engine_properties(settings)
    props.update(
        {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": host,
            "database.port": params.get("port", "5432"),
            "database.user": user,
            "database.dbname": params.get("dbname") or user,
            "topic.prefix": TOPIC_PREFIX,
            "plugin.name": "pgoutput",
            "slot.name": settings.slot,
            "publication.name": PUBLICATION,
            "publication.autocreate.mode": "disabled",
            "table.include.list": "drledger.outbox,drledger.heartbeat",
            "heartbeat.action.query": HEARTBEAT_QUERY,
            # A slot held by a relay that just died is retried for 30 s.
            "slot.max.retries": "6",
            "slot.retry.delay.ms": "5000",
        }
    )
    secret = params.get("password") or password
    if secret:
        props["database.password"] = secret
    for libpq_key, debezium_key in TLS_SETTINGS.items():
        if params.get(libpq_key):
            props[debezium_key] = params[libpq_key]
    return props
