"""A database's own outbox, read as a ledger: the old primary once its region returns, or a cluster
restored from the snapshot taken at the point of failure (Aurora's rds:unplanned-global-failover-…).

The ledger saw every commit up to its last event; the old primary's outbox holds every commit it
acknowledged, the tail the ledger never saw included. Read through the source-database seam like any
other outbox, each row is the event it recorded (commit time: its created_at), so reconcile and replay
treat what it holds exactly as they treat a stream's events.

Read-only, always. And never a database that may still be taking application writes: reading a live
primary as if it were a stopped one would report, and replay, a moving target. Such a database is
refused unless its URL says `writable=accept`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote

from drledger.errors import DatabaseUnavailable, DrledgerError
from drledger.events import EVENT_ID_BYTES, LedgerEvent, LedgerRecord, MalformedRecord
from drledger.ledger.base import Ledger
from drledger.masking import mask_url
from drledger.roles import running_command
from drledger.source import MYSQL_SCHEMES, POSTGRES_SCHEMES, open_source
from drledger.source.base import SourceDatabase

#: The URL parameter that reads a database even though it accepts writes (it is drledger's, not the driver's).
WRITABLE_PARAMETER = "writable"


@dataclass(frozen=True)
class DatabaseAddress:
    dsn: str  # the URL without drledger's own parameter: what the driver gets
    display: str
    accept_writable: bool


class DatabaseLedger(Ledger):
    schemes = (*POSTGRES_SCHEMES, *MYSQL_SCHEMES)

    def __init__(self, source: SourceDatabase, display: str, newest_ms: int | None) -> None:
        self.source = source
        self.display_url = display
        self.newest_ms = newest_ms  # its last commit when opened: a stopped database's is its last

    @classmethod
    def parse(cls, url: str, parts: SplitResult) -> DatabaseAddress:
        query = parse_qsl(parts.query, keep_blank_values=True)
        values = [value for name, value in query if name == WRITABLE_PARAMETER]
        if any(value != "accept" for value in values):
            raise DrledgerError(
                f"The ledger URL '{mask_url(url)}' has {WRITABLE_PARAMETER}={values[0]!r}; the only value is "
                f"'accept' (read this database even though it accepts writes)."
            )
        if not parts.hostname and not parts.path.strip("/"):
            raise DrledgerError(
                f"The ledger URL '{mask_url(url)}' names no database; give the old primary's (or the restored "
                f"cluster's) host and database, as for --db."
            )
        # The driver gets the URL exactly as typed, less drledger's own parameter: re-encoding it would
        # turn options=-c%20… into -c+… and drop the empty host of postgresql:///db?host=/socket.
        base, _, raw_query = url.partition("?")
        kept = [
            item
            for item in raw_query.split("&")
            if item and unquote(item.partition("=")[0]) != WRITABLE_PARAMETER
        ]
        dsn = base + ("?" + "&".join(kept) if kept else "")
        return DatabaseAddress(dsn, mask_url(url), accept_writable=bool(values))

    @classmethod
    def open(
        cls, address: DatabaseAddress, config: dict[str, str], *, writer: bool, create: bool
    ) -> DatabaseLedger:
        if writer:
            raise DrledgerError(
                f"The ledger {address.display} is a database's outbox: drledger reads it, never publishes to it."
            )
        source = open_source(address.dsn)
        # Read with the reader's rights, whichever command reads it: checked before anything is read.
        source.require_rights("reader", running_command())
        if not address.accept_writable:
            writable = source.writable_by_others()
            if writable is not None:
                raise DrledgerError(
                    f"Refusing to read {address.display} as a ledger: {writable}, so it may still be taking "
                    f"application writes; bring it back isolated and read-only (README, 'When the old region "
                    f"returns'), or add ?{WRITABLE_PARAMETER}=accept to its URL if you know nothing writes to it."
                )
        try:
            newest = source.latest_commit_ms()
        except DatabaseUnavailable:
            raise
        except DrledgerError:
            raise DrledgerError(
                f"The ledger {address.display} has no drledger.outbox: it is not a database drledger captured "
                "from (give the old primary's database, the one `drledger init` ran on)."
            ) from None
        return cls(source, address.display, newest)

    def publish(self, events: Sequence[LedgerEvent]) -> None:
        raise DrledgerError(f"The ledger {self.display_url} is a database's outbox and is read-only.")

    def read(self, since_ms: int | None = None, until_ms: int | None = None) -> Iterator[LedgerRecord]:
        """Each outbox row as its event; a row whose payload no longer matches the fingerprint the
        capture trigger wrote beside it (changed after capture), or that has none (the trigger did not
        write it), is malformed, never an event."""
        rows = list(self.source.read_window(since_ms, until_ms))
        recorded = set(self.source.read_fingerprints(since_ms, until_ms, stored_only=True))
        printed_ids = {p[:EVENT_ID_BYTES] for p in recorded}
        for row in rows:
            event = row.as_event()
            if event.fingerprint in recorded:
                yield event
            else:
                changed = event.fingerprint[:EVENT_ID_BYTES] in printed_ids
                yield MalformedRecord(
                    f"outbox row {row.event_id}",
                    "its payload was changed after capture: it does not match the fingerprint written with it"
                    if changed
                    else "it has no fingerprint: the capture trigger did not write it",
                    row.row_json[:120],
                )

    def closed_at_ms(self) -> int | None:
        return self.newest_ms

    def newest_commit_ms(self, since_ms: int | None = None) -> int | None:
        newest = self.source.latest_commit_ms()
        return newest if newest is not None and (since_ms is None or newest >= since_ms) else None

    def close(self) -> None:
        self.source.close()

    def __repr__(self) -> str:
        return f"DatabaseLedger({self.display_url})"
