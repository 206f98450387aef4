"""An SQS queue as the ledger's transport, drained into a local index that is the ledger's copy.

SQS cannot be read by time window, and a message read and deleted is gone; one read without deleting
hides it for its visibility timeout, and a FIFO queue lets at most 20,000 messages be in flight. So
reading never relies on the queue holding history: `read` first drains the queue into a local SQLite
index (WAL mode, synchronous=FULL), deleting each batch only after the index has durably stored it,
then reads the window from the index. Run `drledger ledger inspect sqs://…` (or any reader) on a
schedule in the DR region so the queue never holds more than a few minutes: SQS keeps a message at
most 14 days (4 by default), and anything that expires undrained is lost to the ledger.

FIFO queues (names ending in .fifo) get the event id as deduplication id and table + key as message
group, so a redelivery within SQS's five-minute window is dropped by SQS itself and one row's events
stay in order. Standard queues work too, with SQS's weaker promises (duplicates, no order); readers
drop duplicates by event id either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

from drledger.errors import AwsFailure, LedgerMissing, LedgerUnavailable
from drledger.events import LedgerEvent, LedgerRecord, MalformedRecord, from_wire
from drledger.ledger.aws import (
    ATTEMPTS,
    AwsAddress,
    aws_client,
    call,
    parse_aws_url,
    with_backoff,
)
from drledger.ledger.base import Ledger, LedgerScan, ProgressCallback
from drledger.ledger.sqlite import SqliteLedger

_BATCH = 10  # SendMessageBatch / DeleteMessageBatch limit
_VISIBILITY_S = 120
_SENDERS = 8


def default_index(queue: str) -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "drledger"
    return state / f"sqs-{queue.rsplit('/', 1)[-1]}.db"


class SqsLedger(Ledger):
    writer_reads_back = False  # reading drains the queue: the relay must not
    schemes = ("sqs",)

    @classmethod
    def parse(cls, url: str, parts: SplitResult) -> AwsAddress:
        address = parse_aws_url(url, parts, "sqs")
        if "/" in address.name:
            # sqs://sqs.eu-west-1.amazonaws.com/123456789012/name: a queue URL without its https://
            return AwsAddress(f"https://{address.name}", address.options)
        return address

    @classmethod
    def open(cls, address: AwsAddress, config: dict[str, str], *, writer: bool, create: bool) -> SqsLedger:
        index = address.option("index", config)
        return cls(
            address.name,
            address.settings(config),
            create=writer and create,
            index=Path(index) if index else None,
        )

    @classmethod
    def sibling_url(cls, url: str, tag: str) -> str:
        base, question, query = url.partition("?")
        if base.endswith(".fifo"):  # a FIFO queue's name must end in .fifo
            return f"{base.removesuffix('.fifo')}-{tag}.fifo{question}{query}"
        return super().sibling_url(url, tag)

    @classmethod
    def local_files_url(cls, url: str, directory: Path) -> str:
        if "index=" in url:
            return url
        return f"{url}{'&' if '?' in url else '?'}index={directory}/sqs-index.db"

    def destroy(self) -> None:
        """Delete the queue and the local index drained from it."""
        call(
            f"deleting the SQS queue {self.queue_name}",
            lambda: self.client.delete_queue(QueueUrl=self.queue_url),
        )
        if self._index is not None:
            self._index.close()
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)

    def __init__(
        self, queue: str, config: Mapping[str, str], *, create: bool = False, index: Path | None = None
    ) -> None:
        self.client = aws_client("sqs", config)
        self.queue_name = queue.rsplit("/", 1)[-1]
        self.fifo = self.queue_name.endswith(".fifo")
        self.display_url = f"sqs://{self.queue_name}"
        self.queue_url = self._resolve(queue, create)
        self.index_path = index or default_index(self.queue_name)
        self._index: SqliteLedger | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _resolve(self, queue: str, create: bool) -> str:
        if queue.startswith(("http://", "https://")):
            return queue
        try:
            return str(
                call(f"the SQS queue {queue}", lambda: self.client.get_queue_url(QueueName=queue))["QueueUrl"]
            )
        except AwsFailure as exc:
            if not exc.not_found:
                raise
        if not create:
            raise LedgerMissing(
                f"The SQS queue '{queue}' does not exist; create it, or start the relay with --create."
            )
        attributes = {"MessageRetentionPeriod": "1209600"}  # 14 days, SQS's most
        if self.fifo:
            attributes |= {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
        created = call(
            f"creating the SQS queue {queue}",
            lambda: self.client.create_queue(QueueName=queue, Attributes=attributes),
        )
        self.created = True
        return str(created["QueueUrl"])

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        # SQS takes ten messages a call; calls in parallel keep a large relay batch from queueing behind
        # one round trip after another. Order across calls does not matter: readers dedupe and replay
        # orders by commit, and a FIFO queue still orders each message group's messages it was sent.
        batches = [events[start : start + _BATCH] for start in range(0, len(events), _BATCH)]
        if len(batches) == 1:
            self._send_batch(batches[0])
            return
        list(self._senders().map(self._send_batch, batches))

    def _senders(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_SENDERS, thread_name_prefix="sqs-send")
        return self._pool

    def _send_batch(self, events: Sequence[LedgerEvent]) -> None:
        pending = {str(i): self._entry(str(i), e) for i, e in enumerate(events)}
        for _attempt in range(ATTEMPTS):
            entries = list(pending.values())
            answer = with_backoff(
                "sending to SQS",
                lambda: self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries),  # noqa: B023
            )
            for ok in answer.get("Successful", []):
                pending.pop(ok["Id"], None)
            failed = answer.get("Failed", [])
            if any(f.get("SenderFault") for f in failed):
                first = next(f for f in failed if f.get("SenderFault"))
                raise LedgerUnavailable(
                    f"SQS refused a message: {first.get('Message')} ({first.get('Code')})."
                )
            if not pending:
                return
        raise LedgerUnavailable(f"SQS did not accept {len(pending)} messages after {ATTEMPTS} attempts.")

    def _entry(self, entry_id: str, event: LedgerEvent) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": event.to_wire().decode(),
            "MessageAttributes": {"event_id": {"DataType": "String", "StringValue": event.event_id}},
        }
        if self.fifo:
            entry["MessageDeduplicationId"] = event.event_id
            # Group ids are at most 128 characters; a long table + key is hashed, keeping its order.
            group = event.partition_key
            entry["MessageGroupId"] = (
                group if len(group) <= 128 else hashlib.sha256(group.encode()).hexdigest()
            )
        return entry

    def index(self) -> SqliteLedger:
        if self._index is None:
            self._index = SqliteLedger(self.index_path, create=True)
        return self._index

    def drain(self, on_progress: ProgressCallback = None) -> int:
        """Move the messages in the queue into the local index; delete each only once stored.
        `on_progress` hears how many this drain has moved, after each batch.

        Ends at an empty answer (a long poll asks every SQS host, so one is enough), or once a whole
        batch was sent after the drain began: while a relay keeps writing the queue is never empty,
        and what it sends from then on is the next read's.

        One drain at a time per index, across threads and processes (a lock file beside it): a drain
        that ended at an empty answer while another reader held messages in flight would read the
        index without them. A second reader waits for the first, then drains what is left.
        """
        with self._draining():
            return self._drain(on_progress)

    @contextlib.contextmanager
    def _draining(self) -> Iterator[None]:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.index_path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _drain(self, on_progress: ProgressCallback) -> int:
        index = self.index()
        moved = 0
        began_ms = int(time.time() * 1000)
        while messages := self._receive():
            events: list[LedgerEvent] = []
            unreadable: list[tuple[int | None, str | None, bytes]] = []
            for message in messages:
                record = from_wire(message["Body"], f"sqs message {message['MessageId']}")
                if isinstance(record, MalformedRecord):
                    unreadable.append((None, None, message["Body"].encode()))
                else:
                    events.append(record)
            index.store(events, unreadable)
            self._delete(messages)
            moved += len(messages)
            if on_progress is not None:
                on_progress(moved)
            if all(int(m.get("Attributes", {}).get("SentTimestamp", 0)) >= began_ms for m in messages):
                break  # sent after the drain began: the next read's
        return moved

    def _receive(self) -> list[dict[str, Any]]:
        answer = with_backoff(
            "receiving from SQS",
            lambda: self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=_BATCH,
                WaitTimeSeconds=1,
                VisibilityTimeout=_VISIBILITY_S,
                AttributeNames=["All"],
            ),
        )
        return list(answer.get("Messages", []))

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        receipts = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        with_backoff(
            "deleting from SQS",
            lambda: self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=receipts),
        )

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        self.drain()
        yield from self.index().read(since_ms, until_ms)

    def scan(
        self,
        since_ms: int | None = None,
        until_ms: int | None = None,
        on_progress: ProgressCallback = None,
    ) -> LedgerScan:
        self.drain()
        return self.index().scan(since_ms, until_ms, on_progress)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._index is not None:
            self._index.close()
            self._index = None
