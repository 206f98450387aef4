"""The connector configuration for a Kafka Connect cluster that writes a drledger ledger topic.

It is the embedded relay's own Debezium configuration (`SourceDatabase.connector_properties`: the same
publication, slot, heartbeat, snapshot and outbox tables), less what only the embedded engine has (its
offsets file; on MySQL, its schema history file, which Connect keeps in a topic), plus two single message
transforms that apply to the outbox's changes only:

1. `HeaderFrom` copies the change envelope's kind, commit clock and log position into headers, since
   the EventRouter keeps only the row;
2. Debezium's outbox `EventRouter` routes every event to the ledger topic, keyed by the row key, the
   event id in its `id` header, every other outbox column drledger reads in a header, the payload
   expanded as JSON in the value.

What each header holds and how a reader proves a record: `ledger/connect_records.py`. Pure: builds a
dict; `rest.py` sends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drledger.connect import DEFAULT_CONNECT_SLOT, DEFAULT_NAME
from drledger.errors import DrledgerError
from drledger.ledger.connect_records import ENVELOPE_HEADERS, EVENT_ID, OUTBOX_HEADERS, kafka_topic
from drledger.masking import MASK
from drledger.source import open_source
from drledger.streaming import RelaySettings

#: A connector's name as it appears in Connect's REST paths: no slash, nothing to escape.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
EVENT_ROUTER = "io.debezium.transforms.outbox.EventRouter"
HEADER_FROM = "org.apache.kafka.connect.transforms.HeaderFrom$Value"
TOPIC_MATCHES = "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
SIMPLE_HEADERS = "org.apache.kafka.connect.storage.SimpleHeaderConverter"
PASSWORD = "database.password"
# The embedded engine's own settings: Connect keeps offsets in its offsets topic and sets converters
# per worker or connector (below), so none of these belongs in a connector's configuration.
_ENGINE_ONLY = frozenset(
    {
        "name",
        "offset.storage",
        "offset.storage.file.filename",
        "offset.flush.interval.ms",
        "offset.flush.timeout.ms",
        "converter.schemas.enable",
        "key.converter.schemas.enable",
        "value.converter.schemas.enable",
    }
)
_FILE_HISTORY = "schema.history.internal.file.filename"
#: The schema (PostgreSQL) or database (MySQL) `init` puts the outbox in, and its table.
OUTBOX_TABLE = ("drledger", "outbox")


@dataclass(frozen=True)
class ConnectorRequest:
    """What `connect-config` was asked for."""

    db: str
    ledger: str
    name: str = DEFAULT_NAME
    slot: str = DEFAULT_CONNECT_SLOT
    snapshot: str = "initial"
    heartbeat_ms: int = 1000
    #: A Connect config-provider reference (`${file:/path:key}`) printed and sent for the password.
    password_ref: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DrledgerError(
                f"--name {self.name[:60]!r} is not a connector name drledger uses: 1 to 200 letters, digits, "
                "dots, dashes or underscores, starting with a letter or digit."
            )
        if self.password_ref is not None and not re.fullmatch(r"\$\{[^}]+\}", self.password_ref):
            raise DrledgerError(
                "--password-ref takes a Kafka Connect config-provider reference such as "
                "'${file:/etc/kafka-connect/drledger.properties:password}'."
            )


def engine_of(connector_class: str) -> str:
    """'postgres' or 'mysql', from the Debezium connector class the source seam chose."""
    for engine in ENVELOPE_HEADERS:
        if f".{engine}" in connector_class.lower():
            return engine
    raise DrledgerError(f"drledger has no Kafka Connect configuration for the connector {connector_class}.")


def connector_config(request: ConnectorRequest) -> dict[str, str]:
    """The connector's configuration, its password as given (to send, never to print: `shown`)."""
    bootstrap, topic = kafka_topic(request.ledger)
    settings = RelaySettings(slot=request.slot, snapshot=request.snapshot, heartbeat_ms=request.heartbeat_ms)
    props = open_source(request.db).connector_properties(settings)
    engine = engine_of(props["connector.class"])
    config = {"name": request.name, "tasks.max": "1"}
    config.update({k: v for k, v in props.items() if k not in _ENGINE_ONLY})
    if _FILE_HISTORY in config:  # MySQL: the schema history lives in a topic beside the ledger's
        del config[_FILE_HISTORY]
        config["schema.history.internal"] = "io.debezium.storage.kafka.history.KafkaSchemaHistory"
        config["schema.history.internal.kafka.bootstrap.servers"] = bootstrap
        config["schema.history.internal.kafka.topic"] = f"{topic}-drledger-schema-history"
    if request.password_ref is not None:
        config[PASSWORD] = request.password_ref
    outbox_topic = ".".join((config["topic.prefix"], *OUTBOX_TABLE))
    envelope = ENVELOPE_HEADERS[engine]
    config.update(
        {
            # Only the outbox's changes are events; heartbeats and the heartbeat table's changes go to
            # their own topics untouched, as Debezium names them.
            "predicates": "drledger_outbox",
            "predicates.drledger_outbox.type": TOPIC_MATCHES,
            "predicates.drledger_outbox.pattern": re.escape(outbox_topic),
            "transforms": "drledger_change,drledger_outbox",
            "transforms.drledger_change.type": HEADER_FROM,
            "transforms.drledger_change.predicate": "drledger_outbox",
            "transforms.drledger_change.fields": ",".join(envelope),
            "transforms.drledger_change.headers": ",".join(envelope.values()),
            "transforms.drledger_change.operation": "copy",
            "transforms.drledger_outbox.type": EVENT_ROUTER,
            "transforms.drledger_outbox.predicate": "drledger_outbox",
            # The EventRouter writes the event id into a header of this column's name: `id`, read as such.
            "transforms.drledger_outbox.table.field.event.id": EVENT_ID,
            "transforms.drledger_outbox.table.field.event.key": "aggregateid",
            "transforms.drledger_outbox.table.field.event.payload": "payload",
            "transforms.drledger_outbox.route.by.field": "aggregatetype",
            "transforms.drledger_outbox.route.topic.replacement": topic,
            "transforms.drledger_outbox.table.expand.json.payload": "true",
            "transforms.drledger_outbox.table.fields.additional.placement": ",".join(
                f"{column}:header:{header}" for column, header in OUTBOX_HEADERS.items()
            ),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false",
            # drledger reads every event from its headers, written this way whatever the worker's default.
            "header.converter": SIMPLE_HEADERS,
            # A record the connector cannot write stops it: a ledger with a silent hole is worse.
            "errors.tolerance": "none",
            # Connect 3.3+ with exactly.once.source.support=enabled: transactions; elsewhere ignored.
            "exactly.once.support": "requested",
        }
    )
    return config


def shown(config: dict[str, str]) -> dict[str, str]:
    """The configuration as printed: a password given in the DSN masked (a reference stays)."""
    value = config.get(PASSWORD)
    if value is None or value.startswith("${"):
        return dict(config)
    return {**config, PASSWORD: MASK}
