"""A local Prometheus and Alertmanager, for the alert rules' end-to-end test and the drill.

Both run from Debian's packages (`prometheus`, `prometheus-alertmanager`) in a temp directory, on
free loopback ports (Alertmanager's cluster port off), and are stopped by PID. Prometheus scrapes the
given targets every second and evaluates drledger's packaged rules; Alertmanager sends what fires to
a webhook receiver served here, which notes when each alert arrived.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

from drledger.drill.postgres.cluster import free_port
from drledger.errors import DrledgerError

PROMETHEUS = "prometheus"
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


def binaries() -> tuple[str, str] | None:
    """(prometheus, alertmanager) if both are installed."""
    prometheus = shutil.which(PROMETHEUS)
    alertmanager = next((found for name in ALERTMANAGER if (found := shutil.which(name))), None)
    return (prometheus, alertmanager) if prometheus and alertmanager else None


@dataclass
class Notification:
    alertname: str
    status: str
    received_at: float  # time.time()
    labels: dict[str, str]


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every alert of every notification, as it arrived."""

    received: list[Notification] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def first(self, alertname: str, timeout_s: float, status: str = "firing") -> Notification | None:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                for note in self.received:
                    if note.alertname == alertname and note.status == status:
                        return note
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)


def rules_text() -> str:
    return files("drledger.watch").joinpath("rules/drledger-rules.yml").read_text()


class LocalAlerting:
    """Prometheus scraping `targets` (host:port) with drledger's rules, Alertmanager, a webhook."""

    def __init__(self, targets: list[str], *, scrape_interval_s: float = 1.0) -> None:
        found = binaries()
        if found is None:
            raise DrledgerError(
                "Prometheus and Alertmanager are not installed (Debian packages prometheus and "
                "prometheus-alertmanager; make install installs them)."
            )
        self.prometheus_bin, self.alertmanager_bin = found
        self.targets = targets
        self.interval = f"{scrape_interval_s:g}s"
        self.base = Path(tempfile.mkdtemp(prefix="drledger-alerting-"))
        self.webhook = Webhook()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._server: ThreadingHTTPServer | None = None
        self.prometheus_port = 0
        self.alertmanager_port = 0

    def start(self) -> LocalAlerting:
        try:
            self._start_webhook()
            self._start_alertmanager()
            self._start_prometheus()
        except BaseException:
            self.close()
            raise
        return self

    def _start_webhook(self) -> None:
        webhook = self.webhook

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                try:
                    doc: dict[str, Any] = json.loads(body)
                except ValueError:
                    doc = {}
                with webhook.arrived:
                    for alert in doc.get("alerts", []):
                        labels = dict(alert.get("labels", {}))
                        webhook.received.append(
                            Notification(labels.get("alertname", ""), alert.get("status", ""), now, labels)
                        )
                    webhook.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:  # Alertmanager's posts are not news
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=self._server.serve_forever, name="alert-webhook", daemon=True).start()

    def _start_alertmanager(self) -> None:
        self.alertmanager_port = free_port()
        webhook_url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"  # type: ignore[union-attr]
        config = self.base / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: webhook\n"
            "  group_by: [alertname]\n"
            "  group_wait: 0s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: webhook\n"
            "    webhook_configs:\n"
            f"      - url: {webhook_url}\n"
            "        send_resolved: true\n"
        )
        self._spawn(
            "alertmanager",
            [
                self.alertmanager_bin,
                f"--config.file={config}",
                f"--storage.path={self.base / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port: one instance, loopback only
            ],
        )
        self._wait_ready(f"http://127.0.0.1:{self.alertmanager_port}/-/ready", "Alertmanager")

    def _start_prometheus(self) -> None:
        self.prometheus_port = free_port()
        rules = self.base / "drledger-rules.yml"
        rules.write_text(rules_text())
        config = self.base / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.interval}\n"
            f"  evaluation_interval: {self.interval}\n"
            f"rule_files: [{rules}]\n"
            "alerting:\n"
            "  alertmanagers:\n"
            f"    - static_configs: [{{targets: ['127.0.0.1:{self.alertmanager_port}']}}]\n"
            "scrape_configs:\n"
            "  - job_name: drledger-watch\n"
            f"    static_configs: [{{targets: [{', '.join(repr(t) for t in self.targets)}]}}]\n"
        )
        self._spawn(
            "prometheus",
            [
                self.prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.base / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
        )
        self._wait_ready(f"http://127.0.0.1:{self.prometheus_port}/-/ready", "Prometheus")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.base / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        )

    def _wait_ready(self, url: str, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise DrledgerError(f"{what} exited at start; see {self.base}.")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise DrledgerError(f"{what} did not become ready within {timeout_s:g} s.")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query against the local Prometheus."""
        from urllib.parse import quote

        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?query={quote(expr)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(json.loads(response.read())["data"]["result"])

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalAlerting:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
