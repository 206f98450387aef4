"""Throw-away MariaDB servers in temp directories: a binlogging primary and its replicas.

MariaDB stands in for Aurora MySQL: Debezium's MySQL connector refuses MariaDB 10.11 as it is (it reads
a version past 8.4 from "10.11" and will not fall back from `SHOW BINARY LOG STATUS`), so these servers
report `version = 8.0.2`, which sends the connector down the MySQL 8.0 path Aurora MySQL 3 takes
(8.0.3 and later would make its JDBC driver ask for `transaction_isolation`, which MariaDB lacks).
That version costs the replicas their GTIDs: asked for `MASTER_USE_GTID=slave_pos`, a replica of a server
reporting a version below 10 falls back to binlog file and position (source/mysql/mariadb.py).

Servers run as root with `--user=root` (mariadbd refuses root otherwise), listen on 127.0.0.1 only,
keep nothing durable they do not need (throw-away data), and are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drledger.drill.postgres.cluster import free_port
from drledger.errors import DrledgerError

#: What Debezium's MySQL connector must read as the server's version (see the module's docstring).
CONNECTOR_VERSION = "8.0.2"


def find_mariadbd() -> Path:
    for candidate in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld", shutil.which("mariadbd") or ""):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise DrledgerError("No MariaDB server found; install mariadb-server (make install does, as root).")


@dataclass
class LocalMariaDB:
    """One MariaDB server on 127.0.0.1, owned by this process."""

    base: Path
    name: str
    port: int
    server_id: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def data_dir(self) -> Path:
        return self.base / self.name

    @property
    def config(self) -> Path:
        return self.base / f"{self.name}.cnf"

    @property
    def log_file(self) -> Path:
        return self.base / f"{self.name}.err"

    def dsn(self, database: str = "") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def write_config(self, extra: dict[str, str] | None = None) -> None:
        settings = {
            "datadir": str(self.data_dir),
            "socket": str(self.base / f"{self.name}.sock"),
            "pid-file": str(self.base / f"{self.name}.pid"),
            "log-error": str(self.log_file),
            "port": str(self.port),
            "bind-address": "127.0.0.1",
            "skip-name-resolve": "ON",
            "server-id": str(self.server_id),
            "log-bin": str(self.base / f"{self.name}-bin"),
            "binlog-format": "ROW",
            "binlog-row-image": "FULL",
            "log-slave-updates": "ON",
            "log-bin-trust-function-creators": "ON",
            "version": CONNECTOR_VERSION,
            "character-set-server": "utf8mb4",
            "collation-server": "utf8mb4_general_ci",
            "innodb-buffer-pool-size": "64M",
            "innodb-log-file-size": "32M",
            # Throw-away servers: a crash keeps the OS cache, so flushing buys nothing here.
            "innodb-flush-log-at-trx-commit": "2",
            "sync-binlog": "0",
            "max-connections": "100",
            **(extra or {}),
        }
        body = "\n".join(f"{key} = {value}" for key, value in settings.items())
        self.config.write_text(f"[mariadbd]\n{body}\n")

    def install(self) -> None:
        result = subprocess.run(
            [
                "mariadb-install-db",
                f"--defaults-file={self.config}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd="/",
        )
        if result.returncode != 0:
            raise DrledgerError(f"mariadb-install-db failed for {self.name}: {result.stderr.strip()[-400:]}")

    def start(self, timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [str(find_mariadbd()), f"--defaults-file={self.config}", "--user=root"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DrledgerError(f"MariaDB {self.name} exited at start: {self.log_tail()}")
            with contextlib.suppress(Exception):
                self.execute("SELECT 1")
                return
            time.sleep(0.1)
        raise DrledgerError(f"MariaDB {self.name} did not start in {timeout:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-600:]
        return ""

    def connect(self, database: str = "", **kwargs: Any) -> Any:
        import pymysql

        settings: dict[str, Any] = {"charset": "utf8mb4", "autocommit": True, "connect_timeout": 5, **kwargs}
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", password="", database=database or None, **settings
        )

    def execute(self, statement: str, database: str = "") -> list[tuple[Any, ...]]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def kill(self) -> None:
        """The disaster: SIGKILL, no shutdown, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def replicate_from(self, port: int, user: str = "root") -> None:
        """Replicate from the server at `port` (a lag injector, say), from its first event: by GTID if
        the primary lets it (one reporting `version=8.0.2` does not: file and position, then)."""
        self.execute(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='{user}', "
            "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
        )
        self.execute("START SLAVE")

    def replica_status(self) -> dict[str, Any]:
        """SHOW SLAVE STATUS as a dict; empty when the server replicates from nothing."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW SLAVE STATUS")
                row = cursor.fetchone()
                names = [d[0] for d in cursor.description or []]
        finally:
            conn.close()
        return dict(zip(names, row, strict=False)) if row else {}

    def replicating(self) -> bool:
        status = self.replica_status()
        return status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"

    def promote(self) -> None:
        """Make a replica a primary, as Aurora's failover does: no more replication, writable."""
        self.execute("STOP SLAVE")
        self.execute("RESET SLAVE ALL")
        self.execute("SET GLOBAL read_only = 0")


class MariaDBSet:
    """A temp directory holding MariaDB servers; closing it stops every server and removes it."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="drledger-my-", dir=base))
        self.servers: list[LocalMariaDB] = []

    def server(self, name: str, extra: dict[str, str] | None = None) -> LocalMariaDB:
        server = LocalMariaDB(self.base, name, free_port(), len(self.servers) + 1)
        server.write_config(extra)
        server.install()
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> MariaDBSet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _is_root() -> bool:
    return os.geteuid() == 0
