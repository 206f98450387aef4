"""The ledger's recent event ids, kept between watch cycles and read incrementally.

A ledger only grows, so an id once read from it stays true; each cycle needs only what arrived since
the last. The relay publishes in commit order, so what arrives next has a commit time at or after the
ledger's newest minus a small margin (partitions and batches interleave a little): each cycle reads
from the last frontier minus that margin to the end, not the whole window the checks look at.

Nothing here decides that an event is missing: an id not known here may still have arrived out of
order (a backfill, a lagging partition), so the watcher asks the ledger itself before it says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass

from drledger.events import LATEST_MS

#: Reads the ids of the events committed in [since_ms, until_ms] from the ledger.
ReadIds = Callable[[int, int], set[bytes]]


@dataclass(frozen=True)
class _Chunk:
    serial: int
    #: No id in the chunk was committed after this (epoch ms).
    high_ms: int
    ids: tuple[bytes, ...]


class LedgerIdCache:
    """Ids known to be in the ledger, covering commit times from `low_ms` on.

    `holding(since_ms)` makes sure every id committed from `since_ms` to the ledger's end (as of this
    cycle) is known, reading only what is not; `new_cycle` forgets what the last cycle did not need.
    """

    def __init__(self, read: ReadIds, margin_ms: int) -> None:
        self._read = read
        self.margin_ms = margin_ms
        self._known: dict[bytes, int] = {}
        self._chunks: deque[_Chunk] = deque()
        self._serial = 0
        self.low_ms: int | None = None
        #: Where the next read of the ledger's end starts.
        self._tail_from_ms: int | None = None
        self._frontier_ms: int | None = None
        self._now_ms = 0
        self._tail_fresh = False
        self._lowest_asked_ms: int | None = None
        #: This cycle's read of the ledger's end started here: an id committed from here on that is not
        #: known was not in the ledger when this cycle read it.
        self.fresh_from_ms: int | None = None
        #: Ids read from the ledger since this cache was made (what it costs, for benchmarks and tests).
        self.ids_read = 0

    def new_cycle(self, now_ms: int, frontier_ms: int | None) -> None:
        """A cycle begins: the ledger's newest commit is `frontier_ms`. What the previous cycle asked
        for least far back bounds what is kept; older chunks are dropped."""
        if self._lowest_asked_ms is not None:
            self._forget_before(self._lowest_asked_ms)
        self._lowest_asked_ms = None
        self._now_ms = now_ms
        self._frontier_ms = frontier_ms
        self._tail_fresh = False

    def holding(self, since_ms: int) -> Container[bytes]:
        """The known ids, complete (as far as commit order goes) from `since_ms` to the ledger's end."""
        asked = self._lowest_asked_ms
        self._lowest_asked_ms = since_ms if asked is None else min(asked, since_ms)
        if self.low_ms is None or self._tail_from_ms is None:
            self._take(self._read(since_ms, LATEST_MS), self._now_ms + self.margin_ms)
            self.low_ms = self._tail_from_ms = self.fresh_from_ms = since_ms
        else:
            if not self._tail_fresh:
                self.fresh_from_ms = self._tail_from_ms
                self._take(self._read(self._tail_from_ms, LATEST_MS), self._now_ms + self.margin_ms)
            if since_ms < self.low_ms:
                self._take(self._read(since_ms, self.low_ms), self.low_ms)
                self.low_ms = since_ms
        if not self._tail_fresh and self._frontier_ms is not None:
            # What arrives after this read was committed at or after the ledger's newest now, give or
            # take the margin: the next cycle reads from there.
            self._tail_from_ms = max(self._tail_from_ms, self._frontier_ms - self.margin_ms)
        self._tail_fresh = True
        return self._known.keys()

    def __len__(self) -> int:
        return len(self._known)

    def _take(self, ids: set[bytes], high_ms: int) -> None:
        self._serial += 1
        self.ids_read += len(ids)
        self._known.update(dict.fromkeys(ids, self._serial))
        self._chunks.append(_Chunk(self._serial, high_ms, tuple(ids)))

    def _forget_before(self, since_ms: int) -> None:
        """Drop the chunks that hold nothing committed at or after `since_ms` (what a chunk drops is
        only ids committed before it); the rest still covers everything from there on."""
        kept: deque[_Chunk] = deque()
        for chunk in self._chunks:
            if chunk.high_ms >= since_ms:
                kept.append(chunk)
                continue
            for event_id in chunk.ids:
                if self._known.get(event_id) == chunk.serial:
                    del self._known[event_id]
        self._chunks = kept
        if not kept:
            self.low_ms = self._tail_from_ms = None
        elif self.low_ms is not None:
            self.low_ms = max(self.low_ms, since_ms)
