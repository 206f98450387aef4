"""Throw-away PostgreSQL clusters in temp directories: a logical-WAL primary and streaming replicas.

PostgreSQL refuses to run as root, so when this process is root the server binaries run as the
`postgres` OS user and the directories are handed to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from drledger.errors import DrledgerError

_PRIMARY_SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "256MB",
    "listen_addresses": "'127.0.0.1'",
    # Throw-away clusters: a crash of the server process keeps the OS page cache, so fsync buys nothing.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "50",
    "log_min_messages": "warning",
    "hot_standby": "on",
    "wal_receiver_status_interval": "1s",
}


def find_pg_bin() -> Path:
    """The directory of the newest installed PostgreSQL server binaries."""
    override = os.environ.get("DRLEDGER_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise DrledgerError("No PostgreSQL server binaries found; install postgresql or set DRLEDGER_PG_BIN.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _hand_over(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class LocalCluster:
    """One PostgreSQL server on 127.0.0.1, owned by this process."""

    data_dir: Path
    port: int
    bin_dir: Path
    name: str = "primary"
    pid: int | None = field(default=None, init=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*_run_as(), str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )
        if result.returncode != 0:
            raise DrledgerError(f"{tool} failed for the {self.name} cluster: {result.stderr.strip()[-400:]}")
        return result

    def configure(self, settings: dict[str, str]) -> None:
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self) -> None:
        log = self.log_file
        log.touch()
        _hand_over(log)
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.data_dir.parent}",
            "start",
        )
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Shut down cleanly if running; escalate to SIGKILL if it will not go."""
        if self.pid is None:
            return
        with contextlib.suppress(DrledgerError, subprocess.TimeoutExpired):
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop", timeout=40)
        if _alive(self.pid):
            self.kill()
        self.pid = None

    def kill(self) -> None:
        """The disaster: SIGKILL the postmaster and its children, no shutdown checkpoint, no goodbye."""
        if self.pid is None:
            return
        children = _children(self.pid)
        for pid in [self.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone([self.pid, *children], 10)
        self.pid = None
        self._release_shared_memory()

    def _release_shared_memory(self) -> None:
        """Free the SysV segment a SIGKILLed postmaster leaves behind.

        PostgreSQL keeps it to detect orphaned backends, so nothing else ever frees it; its id is on
        the seventh line of the postmaster.pid that a killed server leaves in place.
        """
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, IndexError):
            fields = pid_file.read_text().splitlines()[6].split()
            if len(fields) == 2:
                subprocess.run(["ipcrm", "-m", fields[1]], capture_output=True, check=False)

    def promote(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "promote")

    def psql(self, sql: str) -> str:
        return self._pg(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ).stdout


class ClusterSet:
    """A temp directory holding clusters; removing it stops every server it holds."""

    def __init__(self, base: Path | None = None) -> None:
        self.bin_dir = find_pg_bin()
        self.base = Path(tempfile.mkdtemp(prefix="drledger-pg-", dir=base))
        _hand_over(self.base)
        self.clusters: list[LocalCluster] = []

    def primary(self, name: str = "primary", settings: dict[str, str] | None = None) -> LocalCluster:
        cluster = LocalCluster(self.base / name, free_port(), self.bin_dir, name)
        cluster._pg(
            "initdb",
            "-D",
            str(cluster.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        cluster.configure({**_PRIMARY_SETTINGS, **(settings or {})})
        with (cluster.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def replica(
        self,
        source: LocalCluster,
        name: str = "replica",
        *,
        source_port: int | None = None,
        slot: str | None = None,
    ) -> LocalCluster:
        """A streaming replica of `source`, connecting through `source_port` (a lag injector, say)."""
        cluster = LocalCluster(self.base / name, free_port(), self.bin_dir, name)
        args = [
            "-h",
            "127.0.0.1",
            "-p",
            str(source_port or source.port),
            "-U",
            "postgres",
            "-D",
            str(cluster.data_dir),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            # An immediate checkpoint: the default spread one is most of the time a replica takes to make.
            "-c",
            "fast",
        ]
        if slot:
            args += ["-S", slot, "-C"]
        cluster._pg("pg_basebackup", *args, timeout=300)
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def close(self) -> None:
        for cluster in reversed(self.clusters):
            cluster.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ClusterSet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
