"""Ledgers are named by URL; this module turns a URL into the backend behind `Ledger`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from drledger.errors import DrledgerError
from drledger.events import LedgerRecord
from drledger.ledger.base import Ledger

SCHEMES = ("sqlite", "kafka")


def open_ledger(
    url: str,
    client_config: Mapping[str, str] | None = None,
    *,
    writer: bool = False,
    create: bool = False,
) -> Ledger:
    """Open the ledger named by `url`.

    A reader never creates anything, so a typo in a URL is an error, not an empty ledger. A writer
    makes a missing local SQLite file; a remote resource (a Kafka topic) only with `create`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    config = dict(client_config or {})
    if scheme == "sqlite":
        from drledger.ledger.sqlite import SqliteLedger

        # sqlite:///abs/path and sqlite://./relative both name a file.
        raw_path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not raw_path or raw_path == "/":
            raise DrledgerError(f"The ledger URL '{url}' names no file; write sqlite:///path/ledger.db.")
        return SqliteLedger(Path(raw_path), create=writer)
    if scheme == "kafka":
        from drledger.ledger.kafka import KafkaLedger

        topic = parts.path.lstrip("/")
        if not parts.netloc or not topic or "/" in topic:
            raise DrledgerError(f"The ledger URL '{url}' is not of the form kafka://host:port/topic.")
        query = parse_qs(parts.query)
        try:
            partitions = int(query.get("partitions", ["3"])[0])
            replication = int(query.get("replication", ["1"])[0])
        except ValueError:
            raise DrledgerError(f"The ledger URL '{url}' has a partitions or replication that is not a number.") from None
        return KafkaLedger(
            parts.netloc, topic, config, create=writer and create, partitions=partitions, replication_factor=replication
        )
    raise DrledgerError(
        f"The ledger URL '{url}' has an unknown scheme; use one of: "
        + ", ".join(f"{s}://" for s in SCHEMES)
        + "."
    )


def read_all(ledgers: list[Ledger], since_ms: int | None, until_ms: int | None) -> Iterator[LedgerRecord]:
    """The window from several ledgers (a topic and its mirror, say), one after another.

    Duplicates across them are expected; the caller removes them by event id.
    """
    for ledger in ledgers:
        yield from ledger.read(since_ms, until_ms)
