"""A Kinesis data stream as the ledger.

Partition key = table + row key, so one row's events stay in one shard, in order. Batches go through
PutRecords (500 records at most), and the records that fail inside a batch — throttled shards — are
sent again, alone, with backoff. A window is read with AT_TIMESTAMP shard iterators on every shard,
closed parent shards of a reshard included: a record's arrival is never before its commit, so
starting each shard at the window's start misses nothing, and each record is kept or dropped by its
own commit time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult

from drledger.errors import AwsFailure, DrledgerError, LedgerMissing, LedgerUnavailable
from drledger.events import LedgerEvent, LedgerRecord, MalformedRecord, from_wire
from drledger.ledger.aws import (
    ATTEMPTS,
    AwsAddress,
    aws_client,
    call,
    parse_aws_url,
    with_backoff,
)
from drledger.ledger.base import Ledger, window_bounds
from drledger.masking import mask_url
from drledger.retry import backoff

_BATCH = 500
_BATCH_BYTES = 4_500_000  # under PutRecords' 5 MiB


class KinesisLedger(Ledger):
    schemes = ("kinesis",)

    @classmethod
    def parse(cls, url: str, parts: SplitResult) -> AwsAddress:
        address = parse_aws_url(url, parts, "kinesis")
        shards = address.option("shards", {}, "2")
        if not (shards or "").isdigit():
            raise DrledgerError(f"The ledger URL '{mask_url(url)}' has a shards that is not a number.")
        return address

    @classmethod
    def open(
        cls, address: AwsAddress, config: dict[str, str], *, writer: bool, create: bool
    ) -> KinesisLedger:
        shards = int(address.option("shards", {}, "2") or "2")
        return cls(address.name, address.settings(config), create=writer and create, shards=shards)

    def destroy(self) -> None:
        """Delete the stream and wait until it is gone."""
        call(
            f"deleting the Kinesis stream {self.stream}",
            lambda: self.client.delete_stream(StreamName=self.stream, EnforceConsumerDeletion=True),
        )
        waiter = self.client.get_waiter("stream_not_exists")
        call(
            f"waiting for the Kinesis stream {self.stream} to go",
            lambda: waiter.wait(StreamName=self.stream, WaiterConfig={"Delay": 1, "MaxAttempts": 60}),
        )

    def __init__(
        self, stream: str, config: Mapping[str, str], *, create: bool = False, shards: int = 2
    ) -> None:
        self.client = aws_client("kinesis", config)
        self.stream = stream
        self.display_url = f"kinesis://{stream}"
        self._ensure_stream(create, shards)

    def _ensure_stream(self, create: bool, shards: int) -> None:
        try:
            call(
                f"the Kinesis stream {self.stream}",
                lambda: self.client.describe_stream_summary(StreamName=self.stream),
            )
            return
        except AwsFailure as exc:
            if not exc.not_found:
                raise
        if not create:
            raise LedgerMissing(
                f"The Kinesis stream '{self.stream}' does not exist; create it, or start the relay with --create."
            )
        call(
            f"creating the Kinesis stream {self.stream}",
            lambda: self.client.create_stream(StreamName=self.stream, ShardCount=shards),
        )
        self.created = True
        waiter = self.client.get_waiter("stream_exists")
        call(
            f"waiting for the Kinesis stream {self.stream}",
            lambda: waiter.wait(StreamName=self.stream, WaiterConfig={"Delay": 1, "MaxAttempts": 120}),
        )

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        batch: list[dict[str, Any]] = []
        size = 0
        for event in events:
            record = {"Data": event.to_wire(), "PartitionKey": _partition_key(event)}
            if batch and (len(batch) == _BATCH or size + len(record["Data"]) > _BATCH_BYTES):
                self._put(batch)
                batch, size = [], 0
            batch.append(record)
            size += len(record["Data"])
        if batch:
            self._put(batch)

    def _put(self, records: list[dict[str, Any]]) -> None:
        pending = records
        for _attempt, delay in zip(range(ATTEMPTS), backoff(), strict=False):
            answer = with_backoff(
                f"writing to the Kinesis stream {self.stream}",
                lambda: self.client.put_records(StreamName=self.stream, Records=pending),  # noqa: B023
            )
            if not answer.get("FailedRecordCount"):
                return
            # Results line up with the request; only the failed ones go again.
            pending = [
                r for r, result in zip(pending, answer["Records"], strict=True) if "ErrorCode" in result
            ]
            time.sleep(delay)
        raise LedgerUnavailable(f"Kinesis did not accept {len(pending)} records after {ATTEMPTS} attempts.")

    def shards(self) -> list[str]:
        """Every shard of the stream, open or closed (a reshard leaves its parents readable)."""
        ids: list[str] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        while True:
            answer = with_backoff(
                f"listing the shards of {self.stream}",
                lambda: self.client.list_shards(**kwargs),  # noqa: B023 - called before kwargs changes
            )
            ids.extend(shard["ShardId"] for shard in answer["Shards"])
            token = answer.get("NextToken")
            if not token:
                return ids
            kwargs = {"NextToken": token}

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        low, high = window_bounds(since_ms, until_ms)
        for shard in self.shards():
            for record in self._read_shard(shard, since_ms):
                if isinstance(record, MalformedRecord) or low <= record.commit_ts_ms <= high:
                    yield record

    def _read_shard(self, shard: str, since_ms: int | None) -> Iterator[LedgerRecord]:
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard}
        if since_ms is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = "AT_TIMESTAMP"
            kwargs["Timestamp"] = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
        iterator = with_backoff(f"reading shard {shard}", lambda: self.client.get_shard_iterator(**kwargs))[
            "ShardIterator"
        ]
        while iterator:
            answer = with_backoff(
                f"reading shard {shard}",
                lambda: self.client.get_records(ShardIterator=iterator, Limit=10_000),  # noqa: B023
            )
            for item in answer["Records"]:
                yield from_wire(item["Data"], f"shard {shard} sequence {item['SequenceNumber']}")
            iterator = answer.get("NextShardIterator")
            # An open shard never ends; it is read up to now once it has nothing more and is caught up.
            if not answer["Records"] and answer.get("MillisBehindLatest", 0) == 0:
                return


def _partition_key(event: LedgerEvent) -> str:
    key = event.partition_key
    return key if len(key) <= 256 else hashlib.sha256(key.encode()).hexdigest()
