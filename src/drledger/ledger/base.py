"""The one interface every ledger backend implements, and nothing above `ledger/` looks past.

A backend does three things: durably store a batch of events, read back the events whose source
commit time falls in a window, and release what it holds. Reading may return the same event more
than once (delivery is at-least-once) and may return unreadable records as `MalformedRecord`s;
callers dedupe by event id and count what is malformed.

Reconcile reads a window through `scan`, which gives only each record's fingerprint and commit time,
as columns, and decodes whole events only for the few it must report. A backend that stores
fingerprints beside its records (the embedded ledger in blocks, Kafka in a header) answers without
decoding a single body; any other gets the default, which decodes everything through `read`.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import SplitResult

from drledger.errors import DrledgerError
from drledger.events import (
    EARLIEST_MS,
    FINGERPRINT_BYTES,
    LATEST_MS,
    LedgerEvent,
    LedgerRecord,
    MalformedRecord,
    MalformedTally,
)

ProgressCallback = Callable[[int], None] | None


@dataclass
class LedgerScan:
    """A window as columns: per record, its fingerprint and commit time, position-aligned.

    `positions` says where the backend keeps each record (its own numbering). `fetch` turns indexes
    into these columns back into whole events (the same order), reading the backend again only where
    it must; a record whose body turns out unreadable then comes back as a MalformedRecord (a digest
    can outlive damage to the body it lists). Malformed records are tallied, never in the columns.
    """

    fingerprints: list[bytes] = field(default_factory=list)
    commit_ms: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    malformed: MalformedTally = field(default_factory=MalformedTally)
    fetch: Callable[[Sequence[int]], Sequence[LedgerRecord]] = lambda _indexes: []

    def take(self, record: LedgerRecord, position: int, low: int, high: int) -> None:
        """A decoded record: tallied if malformed, else in the columns if committed in [low, high]."""
        if isinstance(record, MalformedRecord):
            self.malformed.add(record)
        elif low <= record.commit_ts_ms <= high:
            self.fingerprints.append(record.fingerprint)
            self.commit_ms.append(record.commit_ts_ms)
            self.positions.append(position)

    def take_block(
        self, fingerprints: bytes, commit_ms: Sequence[int], positions: Iterable[int], low: int, high: int
    ) -> None:
        """A block of records stored as columns (fingerprints packed end to end, as `pack_times` keeps
        times): those committed in [low, high] join the scan's columns."""
        width = FINGERPRINT_BYTES
        if commit_ms and low <= min(commit_ms) and max(commit_ms) <= high:
            self.fingerprints.extend(
                [fingerprints[i : i + width] for i in range(0, len(commit_ms) * width, width)]
            )
            self.commit_ms.extend(commit_ms)
            self.positions.extend(positions)
            return
        for i, (ts, position) in enumerate(zip(commit_ms, positions, strict=True)):  # straddles an edge
            if low <= ts <= high:
                self.fingerprints.append(fingerprints[i * width : (i + 1) * width])
                self.commit_ms.append(ts)
                self.positions.append(position)


def window_bounds(since_ms: int | None, until_ms: int | None) -> tuple[int, int]:
    """[low, high] for a window whose open ends (None) reach past any commit time."""
    return (
        since_ms if since_ms is not None else EARLIEST_MS,
        until_ms if until_ms is not None else LATEST_MS,
    )


def pack_times(times: Sequence[int]) -> bytes:
    """Commit times as 8-byte little-endian integers, whatever this machine's byte order."""
    packed = array("q", times)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_times(blob: bytes) -> array[int]:
    times = array("q")
    times.frombytes(blob)
    if sys.byteorder == "big":
        times.byteswap()
    return times


def scan_records(records: Iterator[LedgerRecord], on_progress: ProgressCallback = None) -> LedgerScan:
    """The columns built by decoding every record; the decoded events are kept for `fetch`."""
    scan = LedgerScan()
    events: list[LedgerEvent] = []
    for event in scan.malformed.events(records, on_progress, every=50_000):
        events.append(event)
        scan.fingerprints.append(event.fingerprint)
        scan.commit_ms.append(event.commit_ts_ms)
    scan.fetch = lambda indexes: [events[i] for i in indexes]
    return scan


class Ledger(ABC):
    #: The URL schemes this backend owns; `drledger.ledger` finds backends by them.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The URL the ledger was opened with, with any secret masked: safe to print.
    display_url: str
    #: True when opening it created the topic, queue or stream (only a writer asked to create does).
    created: bool = False
    #: Whether the writer can read back what it wrote: false for a queue whose reader takes the events
    #: away (SQS, drained into the DR region's index), where reading from the relay would consume them.
    writer_reads_back: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def parse(cls, url: str, parts: SplitResult) -> Any:
        """Validate the URL and return what `open` needs: one sentence on a bad URL, no connection."""

    @classmethod
    @abstractmethod
    def open(cls, address: Any, config: dict[str, str], *, writer: bool, create: bool) -> Ledger:
        """Open the ledger `parse` described; a reader never creates anything."""

    @classmethod
    def sibling_url(cls, url: str, tag: str) -> str:
        """A URL naming another ledger of this kind beside this one (a topic, queue or stream named
        with `tag` appended); the query string is kept."""
        base, question, query = url.partition("?")
        return f"{base}-{tag}{question}{query}"

    @classmethod
    def local_files_url(cls, url: str, directory: Path) -> str:
        """The URL with anything this backend keeps on local disk kept under `directory`."""
        return url

    def destroy(self) -> None:
        """Remove the ledger and everything this backend made for it, as a lost region would."""
        raise DrledgerError(f"The ledger {self.display_url} cannot be destroyed by drledger.")

    @abstractmethod
    def publish(self, events: Sequence[LedgerEvent]) -> None:
        """Store `events`; return only once the backend has durably acknowledged every one.

        Raises LedgerUnavailable if any event was not acknowledged; the caller then retries the whole
        batch, which is why readers must tolerate duplicates.
        """

    @abstractmethod
    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        """Every record whose source commit time is in [since_ms, until_ms] (None: unbounded).

        Malformed records carry no trustworthy time, so they are returned by every read.
        """

    def scan(
        self,
        since_ms: int | None = None,
        until_ms: int | None = None,
        on_progress: ProgressCallback = None,
    ) -> LedgerScan:
        """The same window as `read`, as fingerprint and commit-time columns (see LedgerScan)."""
        return scan_records(self.read(since_ms, until_ms), on_progress)

    def newest_commit_ms(self, since_ms: int | None = None) -> int | None:
        """The newest source commit time among the events committed at or after `since_ms` (None: any
        time), or None if there is none. The watcher asks every few seconds, with `since_ms` at the
        last answer, so this default (a scan from there) reads little; a backend with an index on
        commit times answers at once."""
        scan = self.scan(since_ms, None)
        return max(scan.commit_ms) if scan.commit_ms else None

    def closed_at_ms(self) -> int | None:
        """Where this ledger ends for good, if it does: a stopped database's outbox takes no more
        events, so nothing committed after its last one can be in it, and reconcile's window ends
        there by default. None for a ledger that is still being written (every stream)."""
        return None

    def event_ids(self, since_ms: int, until_ms: int) -> set[bytes]:
        """The ids (16 bytes each) of the readable events committed in [since_ms, until_ms]: what the
        watcher checks a few seconds of the primary's outbox against. Malformed records hold no id
        anyone may trust and are left out."""
        return {fingerprint[:16] for fingerprint in self.scan(since_ms, until_ms).fingerprints}

    def close(self) -> None:  # noqa: B027 - a backend with nothing to release need not override it
        """Release connections and flush client buffers."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
