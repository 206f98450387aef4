"""The Debezium PostgreSQL connector's configuration for one relay, built from a DSN and options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from drledger.errors import DrledgerError
from drledger.outbox.postgres import PUBLICATION

TOPIC_PREFIX = "drledger"
HEARTBEAT_QUERY = (
    "INSERT INTO drledger.heartbeat (id, beat_at) VALUES (1, now()) "
    "ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at"
)


@dataclass(frozen=True)
class RelaySettings:
    slot: str = "drledger_slot"
    state_dir: Path = Path(".drledger")
    snapshot: str = "initial"
    heartbeat_ms: int = 1000
    # Debezium's default of 500 ms is a floor under commit→ledger latency; 5 ms costs little CPU.
    poll_interval_ms: int = 5
    max_batch_size: int = 4096
    max_queue_size: int = 32768

    @property
    def offsets_file(self) -> Path:
        return self.state_dir / f"{self.slot}.offsets"

    @property
    def stats_file(self) -> Path:
        return self.state_dir / f"{self.slot}.stats.json"


def debezium_properties(dsn: str, settings: RelaySettings) -> dict[str, str]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise DrledgerError(f"The database DSN is not valid: {exc}.") from None
    props = {
        "name": f"drledger-relay-{settings.slot}",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": str(params.get("host", "localhost")),
        "database.port": str(params.get("port", "5432")),
        "database.user": str(params.get("user", "postgres")),
        "database.dbname": str(params.get("dbname", params.get("user", "postgres"))),
        "topic.prefix": TOPIC_PREFIX,
        "plugin.name": "pgoutput",
        "slot.name": settings.slot,
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "table.include.list": "drledger.outbox,drledger.heartbeat",
        "snapshot.mode": settings.snapshot,
        "heartbeat.interval.ms": str(settings.heartbeat_ms),
        "heartbeat.action.query": HEARTBEAT_QUERY,
        "poll.interval.ms": str(settings.poll_interval_ms),
        "max.batch.size": str(settings.max_batch_size),
        "max.queue.size": str(settings.max_queue_size),
        "tombstones.on.delete": "false",
        "decimal.handling.mode": "string",
        # Offsets are flushed after every batch: the slot's confirmed LSN follows what the ledger holds.
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(settings.offsets_file),
        "offset.flush.interval.ms": "0",
        "offset.flush.timeout.ms": "10000",
        "converter.schemas.enable": "false",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "errors.max.retries": "-1",
        "errors.retry.delay.max.ms": "5000",
    }
    if "password" in params:
        props["database.password"] = str(params["password"])
    if "sslmode" in params:
        props["database.sslmode"] = str(params["sslmode"])
    return props
