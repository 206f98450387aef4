"""Files that hold business data (row images, reports) are readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path

from drledger.errors import DrledgerError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_private(path: Path, data: bytes, what: str) -> None:
    """Write `data` to `path`, created (or reset) to mode 0600; one sentence if it cannot be."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DrledgerError(f"Cannot write the {what} to {path}: {exc.strerror}.") from None
