"""The one interface every ledger backend implements, and nothing above `ledger/` looks past.

A backend does three things: durably store a batch of events, read back the events whose source
commit time falls in a window, and release what it holds. Reading may return the same event more
than once (delivery is at-least-once) and may return unreadable records as `MalformedRecord`s;
callers dedupe by event id and count what is malformed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType

from drledger.events import LedgerEvent, LedgerRecord


class Ledger(ABC):
    #: The URL the ledger was opened with, with any secret masked: safe to print.
    display_url: str
    #: True when opening it created the topic, queue or stream (only a writer asked to create does).
    created: bool = False

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
