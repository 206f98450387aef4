"""Whole source transactions: the relay publishes a transaction's outbox events together or not at all.

Debezium hands the relay batches of records, and a batch can end inside a source transaction. Were
the relay to publish that part and then die (or its region with it), the ledger would keep half a
transaction — one side of a transfer — and replay, after a failover, would apply a state that never
existed. So the records of a transaction are held until its END record (Debezium's transaction
metadata) has arrived and every outbox change that END counts is in hand; then its events are
released to be published in one ledger batch, and only then are its records marked processed. A
record is never marked before every record ahead of it is: the saved position stays at a
transaction's boundary, so a restart reads an unpublished transaction again, whole.

Both engines hand over transactions one after another (PostgreSQL's pgoutput decodes a transaction at
its commit; MySQL's binlog holds it whole), and Debezium ends one before it begins the next: a change
of another transaction while one is open means the metadata cannot be trusted, and the relay stops.

Memory is bounded: a transaction held past `limit` records stops the relay (exit 2) before it is
published in part; nothing of it was acknowledged, so a relay started again with a larger
`--max-transaction-changes` publishes it whole. Nothing here does I/O; engine.py feeds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drledger.errors import DrledgerError, RetryLater
from drledger.events import LedgerEvent
from drledger.relay.translate import StreamRecord
from drledger.streaming import DEFAULT_MAX_TRANSACTION_CHANGES, RESTART

log = logging.getLogger("drledger.relay")

R = TypeVar("R")


class TransactionTooLarge(DrledgerError):
    """A source transaction larger than the relay may hold in memory: exit 2, nothing of it published."""


@dataclass
class Release(Generic[R]):
    """What may go to the ledger now: `events` (in stream order; `streamed` those that are not snapshot
    reads), and the `records` to mark processed once the ledger acknowledged them."""

    records: list[R] = field(default_factory=list)
    events: list[LedgerEvent] = field(default_factory=list)
    streamed: list[LedgerEvent] = field(default_factory=list)
    transactions: int = 0

    def add(self, record: R, item: StreamRecord) -> None:
        self.records.append(record)
        if item.event is not None:
            self.events.append(item.event)
            if not item.snapshot:
                self.streamed.append(item.event)


class WholeTransactions(Generic[R]):
    """Records in stream order in; out, only what lies before the open transaction or ends a whole one."""

    def __init__(self, limit: int = DEFAULT_MAX_TRANSACTION_CHANGES) -> None:
        self.limit = limit
        self._ready: Release[R] = Release()
        self._held: list[tuple[R, StreamRecord]] = []
        self._open: str | None = None
        # Whether this run saw the open transaction's BEGIN: a transaction first seen mid-way began
        # before the position this run started from (see _end).
        self._began = False
        self._outbox_changes = 0

    @property
    def held(self) -> int:
        """Records held for the open transaction, none of them published or marked."""
        return len(self._held)

    def add(self, record: R, item: StreamRecord) -> None:
        """Take the next record of the stream; raise DrledgerError if the stream cannot be made whole."""
        transaction = item.transaction
        if item.kind == "begin":
            self._open_transaction(transaction, began=True)
        elif item.kind == "change" and transaction is not None:
            self._open_transaction(transaction, began=False)
            self._outbox_changes += item.outbox
        elif item.kind == "end":
            if self._open not in (None, transaction):
                raise self._out_of_order(transaction)
            self._held.append((record, item))
            self._end(item)
            return
        if self._open is None:
            # Outside any transaction (a snapshot read, a heartbeat message): nothing to wait for.
            self._ready.add(record, item)
            return
        self._held.append((record, item))
        if len(self._held) > self.limit:
            raise TransactionTooLarge(
                f"The source transaction {self._open} holds more than {self.limit:,} changes, more than the relay "
                "holds in memory to publish one whole; none of it was published or acknowledged: start the relay "
                "again with a larger --max-transaction-changes (and the memory it needs)."
            )

    def take(self) -> Release[R]:
        """What became ready since the last take, in stream order."""
        ready, self._ready = self._ready, Release()
        return ready

    def _open_transaction(self, transaction: str | None, *, began: bool) -> None:
        if self._open is None:
            self._open, self._began, self._outbox_changes = transaction, began, 0
        elif self._open != transaction:
            raise self._out_of_order(transaction)

    def _end(self, end: StreamRecord) -> None:
        received, expected = self._outbox_changes, end.outbox_changes
        if received != expected:
            if self._began or received > expected:
                raise DrledgerError(
                    f"The source transaction {end.transaction} ended with {expected} outbox changes, but the relay "
                    f"received {received}: Debezium's stream is not as drledger configures it (a transform or "
                    "filter added to the connector?), and publishing it would put part of a transaction in the ledger."
                )
            # Begun before this run's start position: its earlier changes were published and
            # acknowledged by the run that marked them (a relay from before whole transactions).
            log.info(
                "the source transaction %s began before the relay's saved position; %d of its %d outbox changes "
                "were published before",
                end.transaction,
                expected - received,
                expected,
            )
        for record, item in self._held:
            self._ready.add(record, item)
        self._ready.transactions += 1
        self._held = []
        self._open, self._began, self._outbox_changes = None, False, 0

    def _out_of_order(self, transaction: str | None) -> RetryLater:
        return RetryLater(
            f"Debezium began the source transaction {transaction} before it ended {self._open}, so the relay "
            f"cannot tell whole transactions apart; nothing of either was acknowledged: {RESTART}."
        )
