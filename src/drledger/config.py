"""Settings that come from flags, files and the environment, validated once with clear errors."""

from __future__ import annotations

from pathlib import Path

from drledger.errors import DrledgerError


def parse_client_config(pairs: list[str], files: list[Path]) -> dict[str, str]:
    """Ledger client settings (Kafka TLS/SASL, say) from key=value flags and properties files.

    Flags win over files, so a file can hold the shared settings and a flag the exception.
    """
    config: dict[str, str] = {}
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DrledgerError(f"Cannot read the ledger config file {path}: {exc.strerror}.") from None
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "!")):
                continue
            key, sep, value = stripped.partition("=")
            if not sep or not key.strip():
                raise DrledgerError(f"Line {number} of {path} is not key=value.")
            config[key.strip()] = value.strip()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DrledgerError(f"--ledger-config '{pair}' is not key=value.")
        config[key.strip()] = value.strip()
    return config
