"""The saved reconcile report (`reconcile --save`): every missing event, for `replay --from`.

Its events are read back through the wire format's checks like any ledger record: a saved file is as
much a second system's input as a topic is, and an unreadable event in it is reported, never applied.
"""

from __future__ import annotations

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


def load_saved_events(path: Path) -> tuple[list[LedgerEvent], list[MalformedRecord]]:
    """The saved events, and those that are unreadable (replay reports them; it never writes them)."""
    try:
        body = orjson.loads(path.read_bytes())
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
