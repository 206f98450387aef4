"""The saved reconcile report (`reconcile --save`): every missing event, for `replay --from`.

Its events are read back through the wire format's checks like any ledger record: a saved file is as
much a second system's input as a topic is, and an unreadable event in it is reported, never applied.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import orjson

from drledger.errors import DrledgerError
from drledger.events import LedgerEvent, MalformedRecord, from_wire
from drledger.files import write_private
from drledger.reconcile import Report

SAVE_FORMAT = "drledger-reconcile/1"


def save_report(path: Path, summary: dict[str, Any], report: Report) -> None:
    """Write the summary and every missing event (in wire format), for `replay --from`.

    Events held in conflicting versions are saved too, so replay reports them; it holds them back
    again by itself, as it would any input. The file holds row images: it is created 0600.
    """
    held = [e for a in report.ambiguous for e in a.events]
    body = {
        "format": SAVE_FORMAT,
        "summary": summary,
        "events": [orjson.loads(e.to_wire()) for e in [*report.missing_in_dr, *held]],
    }
    write_private(path, orjson.dumps(body, option=orjson.OPT_INDENT_2), "report")


#: A saved report is parsed whole; past this it is not one reconcile wrote (a million events is ~0.6 GB).
MAX_SAVED_BYTES = 4 << 30


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing a device (/dev/zero never ends) and anything past MAX_SAVED_BYTES."""
    mode = path.stat().st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        raise DrledgerError(
            f"{path} is a device, not a saved reconcile report; make one with reconcile --save."
        )
    with path.open("rb") as stream:  # a pipe (<(…)) has no size to check before reading
        body = stream.read(MAX_SAVED_BYTES + 1)
    if len(body) > MAX_SAVED_BYTES:
        raise DrledgerError(
            f"The file {path} is larger than any saved reconcile report ({MAX_SAVED_BYTES >> 30} GiB read); "
            "it is not one."
        )
    return body


def load_saved_events(path: Path) -> tuple[list[LedgerEvent], list[MalformedRecord]]:
    """The saved events, and those that are unreadable (replay reports them; it never writes them)."""
    try:
        body = orjson.loads(_read_bounded(path))
    except OSError as exc:
        raise DrledgerError(f"Cannot read the saved report {path}: {exc.strerror}.") from None
    except orjson.JSONDecodeError:
        raise DrledgerError(f"The file {path} is not a saved reconcile report (not JSON).") from None
    if (
        not isinstance(body, dict)
        or body.get("format") != SAVE_FORMAT
        or not isinstance(body.get("events"), list)
    ):
        raise DrledgerError(
            f"The file {path} is not a saved reconcile report; make one with reconcile --save."
        )
    events: list[LedgerEvent] = []
    unreadable: list[MalformedRecord] = []
    for index, item in enumerate(body["events"]):
        record = from_wire(orjson.dumps(item), f"event {index}")
        if isinstance(record, MalformedRecord):
            unreadable.append(record)
        else:
            events.append(record)
    return events, unreadable
