"""Ledgers are named by URL; this module finds the backend that owns a URL's scheme.

Every backend is one module in this package with a `Ledger` subclass that declares its `schemes`,
parses and validates its own URLs (one sentence on a bad one, before any connection), opens itself,
and can destroy what it created. Nothing outside `ledger/` names a scheme or a backend class: adding
a backend is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from drledger.errors import DrledgerError
from drledger.events import LedgerRecord
from drledger.ledger.base import Ledger
from drledger.masking import mask_url

#: The backend that keeps a ledger in a local file: the drill's default and a single host's.
EMBEDDED_MODULE = "drledger.ledger.sqlite"


@cache
def backends() -> dict[str, type[Ledger]]:
    """scheme → backend, from every module of this package that defines a Ledger with schemes."""
    found: dict[str, type[Ledger]] = {}
    for module in pkgutil.iter_modules(__path__, f"{__name__}."):
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, Ledger) and value.__module__ == loaded.__name__:
                for scheme in value.schemes:
                    found[scheme] = value
    return found


def split_url(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise DrledgerError(f"The ledger URL '{mask_url(url)}' cannot be parsed ({exc}).") from None


def backend_of(url: str) -> type[Ledger]:
    scheme = split_url(url).scheme.lower()
    known = backends()
    if scheme not in known:
        raise DrledgerError(
            f"The ledger URL '{mask_url(url)}' has an unknown scheme; use one of: "
            + ", ".join(f"{s}://" for s in sorted(known))
            + "."
        )
    return known[scheme]


def parse_ledger_url(url: str) -> Any:
    """Validate a ledger URL without touching anything; what its backend needs to open it."""
    return backend_of(url).parse(url, split_url(url))


def open_ledger(
    url: str,
    client_config: Mapping[str, str] | None = None,
    *,
    writer: bool = False,
    create: bool = False,
) -> Ledger:
    """Open the ledger named by `url`.

    A reader never creates anything, so a typo in a URL is an error, not an empty ledger. A writer
    makes a missing local file; a remote resource (a topic, queue or stream) only with `create`.
    """
    backend = backend_of(url)
    return backend.open(
        backend.parse(url, split_url(url)), dict(client_config or {}), writer=writer, create=create
    )


def embedded_ledger_url(directory: Path) -> str:
    """The URL of an embedded ledger file in `directory`."""
    return str(importlib.import_module(EMBEDDED_MODULE).url_in(directory))


def sibling_ledger_url(url: str, tag: str) -> str:
    """A URL naming another ledger of the same kind beside this one, told apart by `tag`."""
    return backend_of(url).sibling_url(url, tag)


def with_local_files_in(url: str, directory: Path) -> str:
    """The URL, with anything its backend keeps on local disk kept under `directory` instead."""
    return backend_of(url).local_files_url(url, directory)


def destroy_ledger(url: str, client_config: Mapping[str, str] | None = None) -> None:
    """Remove the ledger and everything its backend made for it (a digest topic, a local index)."""
    with open_ledger(url, client_config) as ledger:
        ledger.destroy()


def read_all(ledgers: list[Ledger], since_ms: int | None, until_ms: int | None) -> Iterator[LedgerRecord]:
    """The window from several ledgers (a topic and its mirror, say), one after another.

    Duplicates across them are expected; the caller removes them by event id.
    """
    for ledger in ledgers:
        yield from ledger.read(since_ms, until_ms)
