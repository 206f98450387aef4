"""Capture what a Kafka Connect worker would write for a connector, with Debezium's and Kafka Connect's
own classes: the embedded engine runs the connector configuration `drledger connect-config` prints
(its transforms included: HeaderFrom, Debezium's outbox EventRouter) and hands over the transformed
SourceRecords; each is then converted exactly as Connect's WorkerSourceTask converts one — the key and
value converters' `fromConnectData(topic, headers, schema, value)`, each header through the header
converter's `fromConnectHeader` — with JsonConverter (schemas on and off) and StringConverter.

Run as a script (the JVM stays out of the test process):
    python tests/connect_capture.py CONFIG.json OFFSETS_FILE OUT.jsonl COUNT
CONFIG.json is the connector configuration; it stops after COUNT records for the ledger topic (COUNT 0:
after as many as the file named by $CAPTURE_UNTIL says, once it exists; 300 s at most) and writes one JSON line per record: topic, timestamp, headers and, per converter, key and value
(bytes in base64).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

CONVERTERS = {
    "json-schemas": ("org.apache.kafka.connect.json.JsonConverter", {"schemas.enable": "true"}),
    "json": ("org.apache.kafka.connect.json.JsonConverter", {"schemas.enable": "false"}),
    "string": ("org.apache.kafka.connect.storage.StringConverter", {}),
}


def _b64(data: Any) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode()


def main(config_path: str, offsets: str, out_path: str, count: int) -> int:
    import jpype

    from drledger.java import start_jvm

    config: dict[str, str] = json.loads(Path(config_path).read_text())
    topic = config["transforms.drledger_outbox.route.topic.replacement"]
    start_jvm()
    hash_map = jpype.JClass("java.util.HashMap")

    def java_map(values: dict[str, str]) -> Any:
        mapping = hash_map()
        for k, v in values.items():
            mapping.put(k, v)
        return mapping

    converters = {}
    for name, (cls, settings) in CONVERTERS.items():
        key, value = jpype.JClass(cls)(), jpype.JClass(cls)()
        key.configure(java_map(settings), True)
        value.configure(java_map(settings), False)
        converters[name] = (key, value)
    header_converter = jpype.JClass(config["header.converter"])()
    header_converter.configure(java_map({}))
    record_headers = jpype.JClass("org.apache.kafka.common.header.internals.RecordHeaders")

    props = jpype.JClass("java.util.Properties")()
    for k, v in config.items():
        props.setProperty(k, v)
    props.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore")
    props.setProperty("offset.storage.file.filename", offsets)
    props.setProperty("offset.flush.interval.ms", "0")

    captured: list[dict[str, Any]] = []
    done = threading.Event()

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
    class Consumer:
        @jpype.JOverride
        def handleBatch(self, records: Any, committer: Any) -> None:
            for change in records:
                record = change.record()
                if str(record.topic()) == topic:
                    captured.append(convert(record))
                committer.markProcessed(change)
            committer.markBatchFinished()
            # How far it got, for a test to know the snapshot is behind it and streaming has begun.
            Path(out_path + ".count").write_text(str(len(captured)))

        @jpype.JOverride
        def supportsTombstoneEvents(self) -> bool:
            return True

    def convert(record: Any) -> dict[str, Any]:
        # As WorkerSourceTask.convertTransformedRecord: headers first, then key and value with them.
        raw_headers = record_headers()
        headers = []
        for header in record.headers():
            raw = header_converter.fromConnectHeader(
                record.topic(), header.key(), header.schema(), header.value()
            )
            raw_headers.add(header.key(), raw)
            headers.append([str(header.key()), _b64(raw)])
        doc: dict[str, Any] = {
            "topic": str(record.topic()),
            "timestamp": None if record.timestamp() is None else int(record.timestamp()),
            "headers": headers,
        }
        for name, (key_converter, value_converter) in converters.items():
            doc[name] = {
                "key": _b64(
                    key_converter.fromConnectData(
                        record.topic(), raw_headers, record.keySchema(), record.key()
                    )
                ),
                "value": _b64(
                    value_converter.fromConnectData(
                        record.topic(), raw_headers, record.valueSchema(), record.value()
                    )
                ),
            }
        return doc

    failure: list[str] = []

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        @jpype.JOverride
        def handle(self, success: bool, message: Any, error: Any) -> None:
            if not success:
                failure.append(f"{message}: {error}")
            done.set()

    engine = (
        jpype.JClass("io.debezium.engine.DebeziumEngine")
        .create(jpype.JClass("io.debezium.embedded.Connect"))
        .using(props)
        .using(Completion())
        .notifying(Consumer())
        .build()
    )
    worker = threading.Thread(target=engine.run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 300
    while not done.wait(0.2) and time.monotonic() < deadline:
        wanted = count or _until()
        if wanted and len(captured) >= wanted:
            break
    if failure:
        print(f"the engine failed: {failure[0]}", file=sys.stderr)
        return 2
    time.sleep(0.5)  # let the last batch's offsets be committed before closing
    engine.close()
    Path(out_path).write_text("".join(json.dumps(doc) + "\n" for doc in captured))
    return 0 if len(captured) >= (count or _until() or 1) else 1


def _until() -> int | None:
    until = os.environ.get("CAPTURE_UNTIL")
    if until and Path(until).exists() and Path(until).read_text().strip():
        return int(Path(until).read_text())
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
