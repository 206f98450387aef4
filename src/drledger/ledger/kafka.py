"""A Kafka topic as the ledger (also any Kafka-protocol broker, and MirrorMaker 2 copies).

Each event is one message: key = table + row key (so a row's history stays in one partition), the
event id in a header, and the message timestamp set to the source commit time, so that a window is
found with `offsets_for_times` on every partition instead of scanning the topic.

Reconcile's scan wants fingerprints and commit times only. After each batch is acknowledged, the
writer lists the batch's fingerprints by partition and offset in the digest topic (see
`kafka_digest`), and a scan reads those few messages, then reads from the event topic only the
offsets no digest covers. There a second header, `drledger-digest`, holds the event's fingerprint and
commit time, so even those are settled from headers; bodies are decoded only for the events reconcile
must report, and for messages that lack the header (written by another producer).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import SplitResult, parse_qs

from drledger.errors import DrledgerError, LedgerMissing, LedgerUnavailable
from drledger.events import FINGERPRINT_BYTES, LedgerEvent, LedgerRecord, MalformedRecord
from drledger.ledger import kafka_digest
from drledger.ledger.base import Ledger, LedgerScan, ProgressCallback, window_bounds
from drledger.ledger.connect_records import decode_message
from drledger.masking import mask_url

try:
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        Producer,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover - exercised only without the extra
    Consumer = None  # type: ignore[assignment,misc]

_TIMEOUT_S = 10.0
_CONSUME_BATCH = 5000
DIGEST_HEADER = "drledger-digest"
_DIGEST_BYTES = FINGERPRINT_BYTES + 8  # fingerprint, then the commit time (ms, big-endian)
_OFFSET_BITS = 48  # a scan position is partition << 48 | offset
_RUN_GAP = 5000  # fetching: read through a gap of up to this many offsets rather than seek past it
_FETCHERS = 8

log = logging.getLogger("drledger.ledger")


@dataclass(frozen=True)
class KafkaAddress:
    bootstrap: str
    topic: str
    partitions: int = 3
    replication: int = 1


class KafkaLedger(Ledger):
    schemes = ("kafka",)

    @classmethod
    def parse(cls, url: str, parts: SplitResult) -> KafkaAddress:
        shown = mask_url(url)
        topic = parts.path.lstrip("/")
        if "@" in parts.netloc:
            raise DrledgerError(
                f"The ledger URL '{shown}' carries credentials; give Kafka's SASL settings with "
                "--ledger-config-file (sasl.username, sasl.password) so they stay off command lines and logs."
            )
        if not parts.netloc or not topic or "/" in topic:
            raise DrledgerError(f"The ledger URL '{shown}' is not of the form kafka://host:port/topic.")
        for broker in parts.netloc.split(","):
            # librdkafka takes host, host:port and [v6]:port; a port it cannot use would be retried forever.
            host, colon, port = broker.rpartition(":") if not broker.endswith("]") else (broker, "", "")
            if not (host or port) or (colon and not (host and port.isdigit() and 0 < int(port) < 65536)):
                raise DrledgerError(
                    f"The ledger URL '{shown}' names a broker '{broker}' that is not host:port with a port "
                    "from 1 to 65535."
                )
        query = parse_qs(parts.query)
        try:
            partitions = int(query.get("partitions", ["3"])[0])
            replication = int(query.get("replication", ["1"])[0])
        except ValueError:
            raise DrledgerError(
                f"The ledger URL '{shown}' has a partitions or replication that is not a number."
            ) from None
        return KafkaAddress(parts.netloc, topic, partitions, replication)

    @classmethod
    def open(
        cls, address: KafkaAddress, config: dict[str, str], *, writer: bool, create: bool
    ) -> KafkaLedger:
        return cls(
            address.bootstrap,
            address.topic,
            config,
            create=writer and create,
            partitions=address.partitions,
            replication_factor=address.replication,
        )

    def destroy(self) -> None:
        """Delete the event topic and its digest topic."""
        self.close()
        admin = AdminClient(self._common)
        topics = [self.topic, *([self.digest_topic] if self.has_digest else [])]
        try:
            for future in admin.delete_topics(topics).values():
                future.result(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise LedgerUnavailable(
                f"Cannot delete the Kafka topic '{self.topic}': {_reason(exc)}."
            ) from None

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        client_config: dict[str, str],
        *,
        create: bool = False,
        partitions: int = 3,
        replication_factor: int = 1,
    ) -> None:
        if Consumer is None:
            raise DrledgerError("The Kafka ledger needs confluent-kafka: pip install 'drledger[kafka]'.")
        self.topic = topic
        self.digest_topic = topic + kafka_digest.SUFFIX
        self.display_url = f"kafka://{bootstrap}/{topic}"
        # librdkafka's own log lines would bury the one-sentence error: they go to the debug log
        # (--verbose shows them; log_level=7 asks for all of them), never raw to stderr.
        self._common: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "logger": _ClientLog(),
            **client_config,
        }
        self._producer: Any = None
        #: A fatal error the producer reported (error_cb): it takes nothing more, so the next publish
        #: makes a new one.
        self._fatal: str | None = None
        self._digest_lost = False
        # The highest offset acknowledged per partition: offsets only grow, so a lower one means the
        # broker lost what it had acknowledged (re-created empty, even with the same cluster id).
        self._acked: dict[int, int] = {}
        self._check_topics(create, partitions, replication_factor)

    def _check_topics(self, create: bool, partitions: int, replication_factor: int) -> None:
        """The event topic must exist (or be created); the digest topic is used where it exists.

        A ledger without a digest topic (created by hand, or before digests existed) is read through
        its headers; a writer asked to create gives it one.
        """
        _require_reachable(str(self._common["bootstrap.servers"]))
        admin = AdminClient(self._common)
        try:
            metadata = admin.list_topics(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise LedgerUnavailable(
                f"Cannot reach the Kafka broker at {self._common['bootstrap.servers']}: {_reason(exc)}."
            ) from None
        self._cluster_id = str(metadata.cluster_id)
        present = {name for name, topic in metadata.topics.items() if topic.error is None}
        if self.topic not in present and not create:
            raise LedgerMissing(
                f"The Kafka topic '{self.topic}' does not exist; create it, or start the relay with --create."
            )
        self.has_digest = self.digest_topic in present
        if create and self.topic not in present:
            self.created = self._create(admin, NewTopic(self.topic, partitions, replication_factor))
        if create and not self.has_digest:
            self._create(admin, NewTopic(self.digest_topic, 1, replication_factor))
            self.has_digest = True

    def _create(self, admin: Any, topic: Any) -> bool:
        """Create the topic; False if another client created it first."""
        try:
            admin.create_topics([topic])[topic.topic].result(timeout=_TIMEOUT_S)
            return True
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LedgerUnavailable(
                    f"Cannot create the Kafka topic '{topic.topic}': {_reason(exc)}."
                ) from None
            return False

    def _producer_client(self) -> Any:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self._common,
                    # Idempotence keeps broker-side retries from writing a message twice; acks=all means
                    # "durably acknowledged" is the in-sync replicas', not the leader's alone.
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "compression.type": "lz4",
                    # Without it, librdkafka's fatal error (an idempotent producer whose broker no longer
                    # knows it: one that came back empty) is raised from inside a delivery callback.
                    "error_cb": self._on_client_error,
                }
            )
        return self._producer

    def _on_client_error(self, error: Any) -> None:
        if error.fatal():
            self._fatal = _reason(KafkaException(error))
        else:  # a broker away for now: the flush's timeout and the relay's retries deal with it
            log.debug("the Kafka client reports: %s", error)

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        producer = self._producer_client()
        failures: list[str] = []
        placed: list[tuple[int, int, LedgerEvent]] = []

        def on_delivery(event: LedgerEvent, error: Any, message: Any) -> None:
            if error is not None:
                failures.append(str(error))
            else:
                placed.append((message.partition(), message.offset(), event))

        try:
            remaining = self._send(producer, events, on_delivery)
        except (KafkaException, SystemError) as exc:
            # librdkafka's fatal error (an idempotent producer the broker no longer knows: a broker back
            # empty) is raised from poll or flush, and a delivery callback called while it is pending
            # turns it into a SystemError. Either way this producer takes nothing more: a new one will.
            cause = exc if isinstance(exc, KafkaException) else exc.__cause__
            reason = self._fatal or (_reason(cause) if isinstance(cause, KafkaException) else str(exc))
            self._drop_producer()
            raise LedgerUnavailable(
                f"The Kafka producer stopped on an error it cannot go on from ({reason}); the batch goes "
                "again through a new one."
            ) from None
        if remaining:
            # Withdraw what was not acknowledged: the caller retries the whole batch, and copies left
            # queued here would go out too, one more with every retry.
            producer.purge()
            producer.flush(0)
        if remaining or failures:
            # A broker replaced by an empty one (another cluster id; the producer may even have had the
            # topic auto-created there) or a deleted topic is not for a retry to mend.
            try:
                metadata = producer.list_topics(timeout=_TIMEOUT_S / 2)
            except KafkaException:
                metadata = None  # the broker is unreachable: that is what the retry is for
            where = self._common["bootstrap.servers"]
            if metadata is not None and str(metadata.cluster_id) != self._cluster_id:
                raise DrledgerError(
                    f"The Kafka broker at {where} is now another cluster (id {metadata.cluster_id}, was "
                    f"{self._cluster_id}): the broker was replaced, so see what the ledger lost with drledger ledger "
                    "inspect, make sure the topic is as it should be, then start the relay again."
                )
            if metadata is not None and self.topic not in metadata.topics:
                raise DrledgerError(
                    f"The Kafka topic '{self.topic}' no longer exists on {where} (was the topic deleted?): see what the "
                    "ledger lost with drledger ledger inspect, recreate the topic (or start the relay with --create), "
                    "then start the relay again."
                )
        if self._fatal is not None:
            reason = self._fatal
            self._drop_producer()
            raise LedgerUnavailable(
                f"The Kafka producer stopped on an error it cannot go on from ({reason}); the batch goes "
                "again through a new one."
            )
        if remaining:
            raise LedgerUnavailable(
                f"The Kafka broker did not acknowledge {remaining} events within {_TIMEOUT_S * 3:.0f}s."
            )
        if failures:
            raise LedgerUnavailable(f"The Kafka broker refused {len(failures)} events: {failures[0]}.")
        self._require_offsets_forward(placed)
        if self.has_digest:
            self._publish_digest(placed)

    def _send(self, producer: Any, events: Sequence[LedgerEvent], on_delivery: Any) -> int:
        """Queue every event and wait for the broker's acknowledgements; how many it did not give."""
        for event in events:
            while True:
                try:
                    producer.produce(
                        self.topic,
                        value=event.to_wire(),
                        key=event.partition_key.encode(),
                        headers=[
                            ("event_id", event.event_id.encode()),
                            (DIGEST_HEADER, event.fingerprint + event.commit_ts_ms.to_bytes(8, "big")),
                        ],
                        timestamp=event.commit_ts_ms,
                        on_delivery=partial(on_delivery, event),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        return int(producer.flush(_TIMEOUT_S * 3))

    def _drop_producer(self) -> None:
        """Let go of a producer that met a fatal error, withdrawing what it still held."""
        producer, self._producer, self._fatal = self._producer, None, None
        if producer is not None:
            with contextlib.suppress(KafkaException, SystemError):
                producer.purge()

    def _require_offsets_forward(self, placed: list[tuple[int, int, LedgerEvent]]) -> None:
        behind = [(p, o) for p, o, _e in placed if o <= self._acked.get(p, -1)]
        if behind:
            partition, offset = min(behind)
            raise DrledgerError(
                f"The Kafka topic '{self.topic}' took this batch at offset {offset} of partition {partition}, at or "
                f"below offset {self._acked[partition]} it had already acknowledged: the ledger went backwards (the "
                "broker lost acknowledged events: re-created empty?). See what the ledger lost with drledger "
                "reconcile against the primary, then start the relay with --backfill-since before it."
            )
        for partition, offset, _event in placed:
            self._acked[partition] = max(offset, self._acked.get(partition, -1))

    def _publish_digest(self, placed: list[tuple[int, int, LedgerEvent]]) -> None:
        """List the acknowledged batch in the digest topic, without waiting for it.

        Scans read whatever no digest covers from the event topic, so a digest lost with a crash costs
        a slower scan, never an event; the next publish's flush (or close) delivers it.
        """
        producer = self._producer_client()
        cluster = self._cluster_id.encode()
        for block in kafka_digest.blocks_for(placed):
            try:
                producer.produce(
                    self.digest_topic,
                    value=block.encode(),
                    headers=[(kafka_digest.CLUSTER_HEADER, cluster)],
                    # A window's digests are found by time: a block is as late as its latest commit.
                    timestamp=max(block.commit_ms),
                    on_delivery=self._on_digest_delivery,
                )
            except BufferError:
                self._on_digest_delivery("the client's queue is full", None)

    def _on_digest_delivery(self, error: Any, _message: Any) -> None:
        if error is not None and not self._digest_lost:
            self._digest_lost = True  # once: it would repeat with every batch
            log.warning(
                "The digest topic '%s' refused a block (%s): scans will read those events from the topic.",
                self.digest_topic,
                error,
            )

    def _consumer(self, *, bulk: bool = True) -> Any:
        # Reading a window is a bulk transfer: let the client prefetch far ahead of Python. Fetching a
        # few events back is not: a large prefetch would pull megabytes to return one message.
        prefetch = (
            {"queued.min.messages": 200_000, "max.partition.fetch.bytes": 16 << 20}
            if bulk
            else {"queued.min.messages": 1_000, "max.partition.fetch.bytes": 256 << 10}
        )
        return Consumer(
            {
                **self._common,
                "group.id": f"drledger-reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                # Once the prefetch queue is full, librdkafka waits this long before fetching again
                # (default 1 s): a pause per window, or per event run fetched, with nothing to show.
                "fetch.queue.backoff.ms": 10,
                **prefetch,
            }
        )

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        consumer = self._consumer()
        try:
            low, high = window_bounds(since_ms, until_ms)
            for batch in self._batches(
                consumer, self.topic, self._window_starts(consumer, self.topic, since_ms)
            ):
                for message in batch:
                    position = f"partition {message.partition()} offset {message.offset()}"
                    record = decode_message(message.value(), message.headers(), position)
                    if isinstance(record, MalformedRecord) or low <= record.commit_ts_ms <= high:
                        yield record
        finally:
            consumer.close()

    def scan(
        self,
        since_ms: int | None = None,
        until_ms: int | None = None,
        on_progress: ProgressCallback = None,
    ) -> LedgerScan:
        low, high = window_bounds(since_ms, until_ms)
        scan = LedgerScan()
        covered: dict[int, list[tuple[int, int]]] = {}
        # One consumer finds the topic's window, then (nothing assigned to it yet) reads the digest.
        consumer = self._consumer()
        try:
            starts = self._window_starts(consumer, self.topic, since_ms, exact=True)
            if self.has_digest:
                try:
                    covered = self._scan_digest(consumer, scan, starts, since_ms, low, high, on_progress)
                except LedgerUnavailable as exc:  # not allowed to read it, say: slower, not wrong
                    log.warning("%s Reading every message's header instead.", exc)
                    scan = LedgerScan()
        finally:
            consumer.close()
        gaps = {p: kafka_digest.uncovered(start, covered.get(p, [])) for p, start in starts.items()}
        # Each partition's gaps in turn, all partitions at once: usually one round, the open tail.
        for depth in range(max((len(g) for g in gaps.values()), default=0)):
            self._scan_messages(
                scan, {p: g[depth] for p, g in gaps.items() if depth < len(g)}, low, high, on_progress
            )
        positions = scan.positions
        scan.fetch = lambda indexes: self._fetch([positions[i] for i in indexes])
        return scan

    def _scan_digest(
        self,
        consumer: Any,
        scan: LedgerScan,
        starts: dict[int, int],
        since_ms: int | None,
        low: int,
        high: int,
        on_progress: ProgressCallback,
    ) -> dict[int, list[tuple[int, int]]]:
        """Take the window's digest blocks into the scan; the offset runs they cover, by partition."""
        covered: dict[int, list[tuple[int, int]]] = {}
        seen: set[tuple[int, tuple[tuple[int, int], ...]]] = set()
        ours = (kafka_digest.CLUSTER_HEADER, self._cluster_id.encode())
        for batch in self._batches(
            consumer, self.digest_topic, self._window_starts(consumer, self.digest_topic, since_ms)
        ):
            for message in batch:
                block = kafka_digest.decode(message.value())
                if block is None or block.partition not in starts or ours not in (message.headers() or []):
                    continue  # not a block, or one whose offsets mean nothing here
                block = block.since(starts[block.partition])
                if not block.runs or (block.partition, block.runs) in seen:
                    continue
                seen.add((block.partition, block.runs))
                positions = block.offsets(block.partition << _OFFSET_BITS)
                scan.take_block(block.fingerprints, block.commit_ms, positions, low, high)
                covered.setdefault(block.partition, []).extend(block.runs)
            if on_progress is not None:
                on_progress(len(scan.fingerprints))
        return covered

    def _scan_messages(
        self,
        scan: LedgerScan,
        ranges: dict[int, tuple[int, int | None]],
        low: int,
        high: int,
        on_progress: ProgressCallback,
    ) -> None:
        """Take the event topic's messages at offsets [first, end) of each partition into the scan."""
        prints, times, positions = scan.fingerprints, scan.commit_ms, scan.positions
        width, digest_bytes, from_bytes = FINGERPRINT_BYTES, _DIGEST_BYTES, int.from_bytes
        consumer = self._consumer()
        try:
            starts = {p: first for p, (first, _end) in ranges.items()}
            ends = {p: end for p, (_first, end) in ranges.items() if end is not None}
            for batch in self._batches(consumer, self.topic, starts, ends):
                for message in batch:
                    headers = message.headers()
                    digest = (
                        headers[1][1]
                        if headers and len(headers) > 1 and headers[1][0] == DIGEST_HEADER
                        else None
                    )
                    if digest is not None and len(digest) == digest_bytes:
                        ts = from_bytes(digest[width:], "big")
                        if low <= ts <= high:
                            prints.append(digest[:width])
                            times.append(ts)
                            positions.append(_position(message))
                        continue
                    # No digest header (written by another producer, Kafka Connect's included): decode it.
                    where = f"partition {message.partition()} offset {message.offset()}"
                    record = decode_message(message.value(), message.headers(), where)
                    scan.take(record, _position(message), low, high)
                if on_progress is not None:
                    on_progress(len(prints))
        finally:
            consumer.close()

    def _fetch(self, positions: list[int]) -> list[LedgerRecord]:
        """The events at these positions, each run of nearby offsets read on its own.

        A scattered few (mismatches anywhere in the window) cost a seek each, not a partition each.
        Each run gets its own consumer, so nothing fetched for one is mistaken for another's, and the
        runs are read at once: each is mostly the wait for a new consumer's first fetch.
        """
        with ThreadPoolExecutor(max_workers=_FETCHERS, thread_name_prefix="kafka-fetch") as pool:
            found: dict[int, LedgerRecord] = {}
            for events in pool.map(lambda run: self._fetch_run(*run), _runs(positions)):
                found.update(events)
        # An offset the scan found (a digest listed it) and the topic no longer holds: damage, counted.
        return [found.get(p) or _gone(p) for p in positions]

    def _fetch_run(self, partition: int, offsets: list[int]) -> dict[int, LedgerRecord]:
        members = {partition << _OFFSET_BITS | offset for offset in offsets}
        found: dict[int, LedgerRecord] = {}
        done = partial(operator.le, members, found.keys())
        consumer = self._consumer(bulk=False)
        try:
            for batch in self._batches(consumer, self.topic, {partition: offsets[0]}, stop_when=done):
                for message in batch:
                    position = _position(message)
                    if position in members:
                        where = f"partition {message.partition()} offset {message.offset()}"
                        found[position] = decode_message(message.value(), message.headers(), where)
        finally:
            consumer.close()
        return found

    def _window_starts(
        self, consumer: Any, topic: str, since_ms: int | None, *, exact: bool = False
    ) -> dict[int, int]:
        """Partition → first offset to read; partitions with nothing at or after `since_ms` are left out.

        `exact` asks for numbers even without a `since_ms` (the log start), which matching digest
        blocks against the topic needs.
        """
        try:
            metadata = consumer.list_topics(topic, timeout=_TIMEOUT_S)
            partitions = sorted(metadata.topics[topic].partitions)
            if since_ms is not None:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, since_ms) for p in partitions], timeout=_TIMEOUT_S
                )
                return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
            if not exact:
                return {p: OFFSET_BEGINNING for p in partitions}
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT_S)[0]
                for p in partitions
            }
        except KafkaException as exc:
            raise LedgerUnavailable(f"Cannot read the Kafka topic '{topic}': {_reason(exc)}.") from None

    def _batches(
        self,
        consumer: Any,
        topic: str,
        starts: dict[int, int],
        ends: dict[int, int] | None = None,
        stop_when: Any = None,
    ) -> Iterator[list[Any]]:
        """Batches of messages from each partition's start offset to its end.

        The end is `ends[partition]` (exclusive) where given, else where the broker reports
        end-of-partition, not a watermark fetched up front: brokers that only speak the protocol
        (tansu) answer time lookups loosely, and callers filter every message by its commit time,
        which keeps the window exact whatever start was found.
        """
        if not starts:
            return
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
        pending = set(starts)
        ends = ends or {}
        last_progress = time.monotonic()
        while pending and not (stop_when is not None and stop_when()):
            # consume() waits for a full batch or the timeout, so keep the timeout short and count idleness.
            messages = consumer.consume(_CONSUME_BATCH, timeout=0.02)
            if not messages:
                if time.monotonic() - last_progress > _TIMEOUT_S:
                    raise LedgerUnavailable(
                        f"The Kafka topic '{topic}' stopped delivering before the end of the window."
                    )
                continue
            last_progress = time.monotonic()
            batch = []
            for message in messages:
                error = message.error()
                if error is None:
                    if ends and (end := ends.get(message.partition())) is not None:
                        if message.offset() >= end - 1:
                            pending.discard(message.partition())
                        if message.offset() >= end:
                            continue
                    batch.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise LedgerUnavailable(f"Reading the Kafka topic '{topic}' failed: {error}.")
            yield batch

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(_TIMEOUT_S)
            self._producer = None


class _ClientLog:
    """Where librdkafka's log lines go (confluent-kafka's `logger` takes any object with `log`): the
    debug log. Raw on stderr, its FATAL line stood before the relay's one sentence."""

    def log(self, _level: int, message: str, *args: object) -> None:
        log.debug("librdkafka: " + message, *args)


def _gone(position: int) -> MalformedRecord:
    where = f"partition {position >> _OFFSET_BITS} offset {position & ((1 << _OFFSET_BITS) - 1)}"
    return MalformedRecord(where, "listed by the digest but no longer in the topic", "")


def _position(message: Any) -> int:
    return int(message.partition()) << _OFFSET_BITS | int(message.offset())


def _runs(positions: list[int], gap: int = _RUN_GAP) -> Iterator[tuple[int, list[int]]]:
    """(partition, sorted offsets) for each run of positions whose offsets lie within `gap` of the last."""
    mask = (1 << _OFFSET_BITS) - 1
    by_partition: dict[int, list[int]] = {}
    for position in positions:
        by_partition.setdefault(position >> _OFFSET_BITS, []).append(position & mask)
    for partition, offsets in sorted(by_partition.items()):
        offsets.sort()
        run = [offsets[0]]
        for offset in offsets[1:]:
            if offset - run[-1] > gap:
                yield partition, run
                run = []
            run.append(offset)
        yield partition, run


def _require_reachable(bootstrap: str) -> None:
    """Fail in milliseconds, not after a metadata timeout, when no bootstrap broker accepts a connection."""
    refusals = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=3):
                return
        except (OSError, ValueError) as exc:
            refusals.append(f"{address.strip()} ({getattr(exc, 'strerror', None) or exc})")
    raise LedgerUnavailable(f"Cannot reach the Kafka broker at {', '.join(refusals)}.")


def _reason(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    text = arg.str() if hasattr(arg, "str") else str(arg)
    return text.rstrip(".")
