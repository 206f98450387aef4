"""Ledgers are named by URL; this module turns a URL into the backend behind `Ledger`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from drledger.errors import DrledgerError
from drledger.events import LedgerRecord
from drledger.ledger.base import Ledger
from drledger.masking import mask_url

SCHEMES = ("sqlite", "kafka", "sqs", "kinesis")


@dataclass(frozen=True)
class LedgerAddress:
    """A parsed, validated ledger URL; parsing touches nothing, so bad URLs fail before any connection."""

    scheme: str
    location: str  # the file path, or the bootstrap servers
    name: str = ""  # the topic
    partitions: int = 3
    replication: int = 1
    options: tuple[tuple[str, str], ...] = ()  # region, index, shards … from the query string


def parse_ledger_url(url: str) -> LedgerAddress:
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DrledgerError(f"The ledger URL '{shown}' cannot be parsed ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///abs/path and sqlite://./relative both name a file.
        raw_path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not raw_path.strip("/"):
            raise DrledgerError(f"The ledger URL '{shown}' names no file; write sqlite:///path/ledger.db.")
        # sqlite:///tmp/l.db and sqlite:////tmp/l.db (SQLAlchemy's spelling) both mean /tmp/l.db.
        path = "/" + raw_path.lstrip("/") if raw_path.startswith("/") else raw_path
        return LedgerAddress("sqlite", path)
    if scheme == "kafka":
        topic = parts.path.lstrip("/")
        if "@" in parts.netloc:
            raise DrledgerError(
                f"The ledger URL '{shown}' carries credentials; give Kafka's SASL settings with "
                "--ledger-config-file (sasl.username, sasl.password) so they stay off command lines and logs."
            )
        if not parts.netloc or not topic or "/" in topic:
            raise DrledgerError(f"The ledger URL '{shown}' is not of the form kafka://host:port/topic.")
        query = parse_qs(parts.query)
        try:
            partitions = int(query.get("partitions", ["3"])[0])
            replication = int(query.get("replication", ["1"])[0])
        except ValueError:
            raise DrledgerError(
                f"The ledger URL '{shown}' has a partitions or replication that is not a number."
            ) from None
        return LedgerAddress("kafka", parts.netloc, topic, partitions, replication)
    if scheme in ("sqs", "kinesis"):
        name = (parts.netloc + parts.path).strip("/")
        if not name:
            raise DrledgerError(
                f"The ledger URL '{shown}' names no {scheme} resource; write {scheme}://name?region=…."
            )
        options = tuple((k, v[0]) for k, v in sorted(parse_qs(parts.query).items()))
        if scheme == "sqs" and "/" in name:
            # sqs://sqs.eu-west-1.amazonaws.com/123456789012/name: a queue URL without its https://
            name = f"https://{name}"
        return LedgerAddress(scheme, name, options=options)
    raise DrledgerError(
        f"The ledger URL '{shown}' has an unknown scheme; use one of: "
        + ", ".join(f"{s}://" for s in SCHEMES)
        + "."
    )


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
    address = parse_ledger_url(url)
    config = dict(client_config or {})
    if address.scheme == "sqlite":
        from drledger.ledger.sqlite import SqliteLedger

        return SqliteLedger(Path(address.location), create=writer)
    if address.scheme in ("sqs", "kinesis"):
        return _open_aws(address, config, writer and create)
    from drledger.ledger.kafka import KafkaLedger

    return KafkaLedger(
        address.location,
        address.name,
        config,
        create=writer and create,
        partitions=address.partitions,
        replication_factor=address.replication,
    )


def _open_aws(address: LedgerAddress, config: dict[str, str], create: bool) -> Ledger:
    options = dict(address.options)
    aws_config = {
        k: v for k, v in {**options, **config}.items() if k in ("region", "endpoint_url", "profile")
    }
    if address.scheme == "sqs":
        from drledger.ledger.sqs import SqsLedger

        index = options.get("index") or config.get("index")
        return SqsLedger(address.location, aws_config, create=create, index=Path(index) if index else None)
    from drledger.ledger.kinesis import KinesisLedger

    try:
        shards = int(options.get("shards", "2"))
    except ValueError:
        raise DrledgerError(
            f"The ledger URL for kinesis://{address.location} has a shards that is not a number."
        ) from None
    return KinesisLedger(address.location, aws_config, create=create, shards=shards)


def read_all(ledgers: list[Ledger], since_ms: int | None, until_ms: int | None) -> Iterator[LedgerRecord]:
    """The window from several ledgers (a topic and its mirror, say), one after another.

    Duplicates across them are expected; the caller removes them by event id.
    """
    for ledger in ledgers:
        yield from ledger.read(since_ms, until_ms)
