"""The Kafka ledger's digest topic: each published batch's fingerprints, listed by offset.

Reconcile needs each event's fingerprint and commit time, not its body. Reading them from every
message costs a Python call per message, which holds a scan below the client's bare message rate;
one digest message lists a batch's worth for one partition, so a million-event window is read in a
few hundred messages.

The digest is an index, never the evidence. A block names the partition and the offsets it covers,
and a scan reads from the event topic itself every offset no block covers: a batch whose digest was
never written (the relay died between the two writes, which is exactly the failover's last batch),
records from other producers, anything written before the digest existed. Blocks written on another
cluster (a MirrorMaker copy, whose offsets differ) cover nothing.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

from drledger.events import FINGERPRINT_BYTES, LedgerEvent
from drledger.ledger.base import pack_times, unpack_times

SUFFIX = "-drledger-digest"
CLUSTER_HEADER = "drledger-cluster"
BLOCK_EVENTS = 8192  # 64 bytes each: half a megabyte, under every broker's default message limit
_MAGIC = b"DLD1"
_HEAD = struct.Struct(">4sIII")  # magic, partition, events, runs


@dataclass(frozen=True)
class DigestBlock:
    """Events of one partition in offset order: offsets as runs of consecutive ones, and columns."""

    partition: int
    runs: tuple[tuple[int, int], ...]  # (first offset, count), ascending
    fingerprints: bytes  # FINGERPRINT_BYTES each, end to end
    commit_ms: array[int]

    def offsets(self, base: int = 0) -> Iterator[int]:
        """Each event's offset, plus `base`."""
        return chain.from_iterable(range(base + first, base + first + count) for first, count in self.runs)

    def since(self, start: int) -> DigestBlock:
        """The part of the block at offsets from `start` on (the rest is outside the topic's window)."""
        if not self.runs or self.runs[0][0] >= start:
            return self
        skipped, runs = 0, []
        for first, count in self.runs:
            cut = min(max(start - first, 0), count)
            skipped += cut
            if cut < count:
                runs.append((first + cut, count - cut))
        return DigestBlock(
            self.partition,
            tuple(runs),
            self.fingerprints[skipped * FINGERPRINT_BYTES :],
            self.commit_ms[skipped:],
        )

    def encode(self) -> bytes:
        flat = [n for run in self.runs for n in run]
        return b"".join(
            (
                _HEAD.pack(_MAGIC, self.partition, len(self.commit_ms), len(self.runs)),
                struct.pack(f">{len(flat)}q", *flat),
                self.fingerprints,
                pack_times(self.commit_ms),
            )
        )


def decode(value: bytes | None) -> DigestBlock | None:
    """The block in a digest message, or None for anything that is not one whole block."""
    if value is None or len(value) < _HEAD.size:
        return None
    magic, partition, count, run_count = _HEAD.unpack_from(value)
    prints_at = _HEAD.size + 16 * run_count
    times_at = prints_at + count * FINGERPRINT_BYTES
    if magic != _MAGIC or len(value) != times_at + 8 * count:
        return None
    flat = struct.unpack_from(f">{2 * run_count}q", value, _HEAD.size)
    runs = tuple(zip(flat[::2], flat[1::2], strict=True))
    if sum(n for _first, n in runs) != count or any(n <= 0 or first < 0 for first, n in runs):
        return None
    return DigestBlock(partition, runs, value[prints_at:times_at], unpack_times(value[times_at:]))


def blocks_for(placed: Iterable[tuple[int, int, LedgerEvent]]) -> list[DigestBlock]:
    """Blocks listing delivered events, given as (partition, offset, event)."""
    by_partition: dict[int, list[tuple[int, LedgerEvent]]] = {}
    for partition, offset, event in placed:
        by_partition.setdefault(partition, []).append((offset, event))
    blocks = []
    for partition, entries in sorted(by_partition.items()):
        entries.sort(key=lambda entry: entry[0])
        for start in range(0, len(entries), BLOCK_EVENTS):
            chunk = entries[start : start + BLOCK_EVENTS]
            blocks.append(
                DigestBlock(
                    partition,
                    _runs_of([offset for offset, _ in chunk]),
                    b"".join(event.fingerprint for _, event in chunk),
                    array("q", [event.commit_ts_ms for _, event in chunk]),
                )
            )
    return blocks


def _runs_of(offsets: list[int]) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((offset, 1))
    return tuple(runs)


def uncovered(start: int, runs: Iterable[tuple[int, int]]) -> list[tuple[int, int | None]]:
    """Offset ranges [low, high) from `start` on that no run covers; the last is open-ended (None)."""
    gaps: list[tuple[int, int | None]] = []
    at = start
    for first, count in sorted(runs):
        if first > at:
            gaps.append((at, first))
        at = max(at, first + count)
    gaps.append((at, None))
    return gaps
