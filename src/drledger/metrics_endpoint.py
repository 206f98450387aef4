"""A Prometheus registry of one's own, served on /metrics from a background thread.

The relay and the watcher each keep their own registry (never the process-wide default), so tests and
the drill can run several in one process.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from drledger.errors import DrledgerError

#: How long a scrape connection may stay silent before it is closed.
IDLE_TIMEOUT_S = 10.0


class MetricsEndpoint:
    #: Who serves, as the error names it ("The relay", "The watcher").
    server_name = "drledger"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port in a background thread; the port actually bound (port 0 picks)."""
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise DrledgerError(
                f"{self.server_name} cannot serve /metrics on {host}:{port}: {exc.strerror or exc}."
            ) from None
        # A connection that sends no request (a port scanner, a stuck client) would hold a thread for
        # ever: each one has IDLE_TIMEOUT_S to send it, on this server only.
        handler: Any = server.RequestHandlerClass

        def handle(self: Any) -> None:
            # A silent or vanished client: its connection is closed, nothing to say.
            with contextlib.suppress(TimeoutError, ConnectionError):
                handler.handle(self)

        server.RequestHandlerClass = type(
            "TimedMetricsHandler", (handler,), {"timeout": IDLE_TIMEOUT_S, "handle": handle}
        )
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            threading.Thread(target=self._server.shutdown, daemon=True).start()
            self._server.server_close()
            self._server = None


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9187', '[::1]:9187' or ':9187' (loopback) → (host, port)."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DrledgerError(f"--listen '{text}' is not an address; write it like 127.0.0.1:9187.")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)
