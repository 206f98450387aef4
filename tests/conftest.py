"""Fixtures every test may use: none starts a service (those are in integration/conftest.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="drledger-test-") as path:
        yield Path(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (make test runs two processes, --dist loadgroup), the tests of a module that
    share a module- or class-scoped fixture run in one process, in their order: the fixture (a failover
    aftermath, a MariaDB) is made once, and a test that follows another on it sees what it left. Every
    other test goes to whichever process is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = any(
            defs and defs[-1].scope in ("module", "class", "package")
            for name in info.names_closure
            if (defs := info.name2fixturedefs.get(name))
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
