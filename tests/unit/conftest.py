"""Unit tests need no service: none may start a process or open a network connection. Tried anyway, it
fails the test at once, naming where the test belongs."""

from __future__ import annotations

import socket
import subprocess
from typing import NoReturn

import psycopg
import pytest


def _refused(*_args: object, **_kwargs: object) -> NoReturn:
    raise AssertionError(
        "a unit test started a process or opened a connection: it belongs in tests/integration"
    )


@pytest.fixture(autouse=True)
def no_processes_and_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refused)
    monkeypatch.setattr(socket.socket, "connect", _refused)
    monkeypatch.setattr(socket.socket, "connect_ex", _refused)
    monkeypatch.setattr(psycopg, "connect", _refused)  # libpq connects in C, below the socket module
    monkeypatch.setattr(psycopg.Connection, "connect", _refused)
