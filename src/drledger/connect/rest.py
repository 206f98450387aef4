"""Kafka Connect's REST API, as far as drledger uses it: validate a configuration, create or update a
connector, read a connector's and its tasks' state.

The calls are Connect's documented ones (`PUT /connector-plugins/{class}/config/validate`,
`PUT /connectors/{name}/config`, `GET /connectors/{name}/status`). Errors come back as one sentence;
the password never appears in one. What the answers mean is decided by small pure functions
(`validation_errors`, `relay_state`), tested without a server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from drledger.errors import DrledgerError
from drledger.masking import MASK, mask_url

#: How long a status read may take; validating and applying take longer: the connector connects to the
#: database to validate, on a worker that may be busy.
_TIMEOUT_S = 10.0
_APPLY_TIMEOUT_S = 90.0
RUNNING = "RUNNING"


def check_connect_url(url: str) -> str:
    """The Connect REST URL without a trailing slash; one sentence if it is not http(s)://host[:port]."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise DrledgerError(
            f"--connect-url '{mask_url(url)}' is not a Kafka Connect REST URL such as http://connect:8083."
        )
    return url.rstrip("/")


class ConnectError(DrledgerError):
    """Kafka Connect answered with an error, or could not be reached; `status` is the HTTP status (0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    secret: str | None = None,
    timeout: float = _TIMEOUT_S,
) -> tuple[int, Any]:
    """(HTTP status, parsed JSON answer) of one call; ConnectError on an error status or no answer."""
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    where = mask_url(url)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read())
        if secret:
            message = message.replace(secret, MASK)
        raise ConnectError(
            f"Kafka Connect at {where} refused {method} {path} (HTTP {exc.code}: {message})", exc.code
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConnectError(f"Cannot reach Kafka Connect at {where}: {reason}.") from None


def _error_message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:200] or "no reason given"
    return str(doc.get("message") if isinstance(doc, dict) else doc)[:300].rstrip(".")


def validation_errors(answer: Any) -> list[str]:
    """'setting: error' for every setting Connect's validate endpoint found wrong (empty: valid)."""
    if not isinstance(answer, dict):
        return ["the answer was not a validation result"]
    errors = []
    for entry in answer.get("configs") or []:
        value = entry.get("value") or {}
        for error in value.get("errors") or []:
            errors.append(f"{value.get('name')}: {str(error).rstrip('.')}")
    if not errors and answer.get("error_count"):
        errors.append(f"{answer['error_count']} errors, unnamed")
    return errors


def validate(url: str, config: dict[str, str]) -> None:
    """Connect's own validation of the configuration (the connector checks the database too); one
    sentence naming the first problems if it finds any."""
    plugin = urllib.parse.quote(config["connector.class"], safe="")
    secret = config.get("database.password")
    _status, answer = request(
        url,
        "PUT",
        f"/connector-plugins/{plugin}/config/validate",
        config,
        secret=secret,
        timeout=_APPLY_TIMEOUT_S,
    )
    errors = validation_errors(answer)
    if errors:
        shown = "; ".join(errors[:3])
        if secret:
            shown = shown.replace(secret, MASK)
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise DrledgerError(f"Kafka Connect found the connector configuration invalid: {shown}{more}.")


def put_config(url: str, name: str, config: dict[str, str]) -> bool:
    """Create the connector, or update it to this configuration; True if it was created."""
    path = f"/connectors/{urllib.parse.quote(name, safe='')}/config"
    status, _answer = request(
        url, "PUT", path, config, secret=config.get("database.password"), timeout=_APPLY_TIMEOUT_S
    )
    return status == 201


@dataclass(frozen=True)
class RelayState:
    """Whether the connector, as the relay, is up, and in a few words why not."""

    up: bool
    reason: str


def relay_state(status: Any) -> RelayState:
    """A `GET /connectors/{name}/status` answer → up only if the connector and every task (one at
    least) are RUNNING; a task FAILED, PAUSED, UNASSIGNED or missing is a relay down."""
    if not isinstance(status, dict):
        return RelayState(False, "Kafka Connect gave no status")
    connector = (status.get("connector") or {}).get("state")
    if connector != RUNNING:
        return RelayState(False, f"the connector is {connector or 'in no state'}")
    tasks = status.get("tasks") or []
    if not tasks:
        return RelayState(False, "the connector has no task")
    for task in tasks:
        if task.get("state") != RUNNING:
            return RelayState(False, f"task {task.get('id')} is {task.get('state') or 'in no state'}")
    return RelayState(True, "the connector and its tasks are RUNNING")


def connector_relay_state(url: str, name: str) -> RelayState:
    """The connector's state as the relay's: a connector Connect does not know is a relay down."""
    try:
        _status, answer = request(url, "GET", f"/connectors/{urllib.parse.quote(name, safe='')}/status")
    except ConnectError as exc:
        if exc.status == 404:
            return RelayState(False, f"Kafka Connect has no connector {name}")
        return RelayState(False, str(exc).rstrip("."))
    return relay_state(answer)
