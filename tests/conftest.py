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

