"""Files that hold business data (row images, reports, relay state) are readable by their owner only.

The one place drledger's file and directory modes are decided, and the one way a private file is
written: atomically, through a temporary file that is synced and then renamed over the old one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from drledger.errors import DrledgerError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_private(path: Path, data: bytes | str, what: str | None = None) -> None:
    """Replace `path` atomically with `data` (str is written as UTF-8), readable by this user only.

    A reader never sees half a file: `data` goes to a temporary file of its own beside `path` (0600,
    synced), which then replaces `path`; two writers at once never share one. With `what`, a failure
    is one sentence naming it ("Cannot write the report to …"); without, the OSError is the caller's.
    """
    payload = data.encode() if isinstance(data, str) else data
    temporary: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        temporary = Path(name)
        try:
            os.fchmod(fd, PRIVATE_FILE)  # mkstemp's own 0600, said here as everywhere else
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if what is None:
            raise
        raise DrledgerError(f"Cannot write the {what} to {path}: {exc.strerror}.") from None


def create_private(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (a file another program then writes)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
