"""Local database servers (PostgreSQL clusters, MariaDB servers for MySQL) and the disaster drill
built on them."""

from drledger.errors import DrledgerError

#: The rows of the spec's "DR Scenarios" table the drill makes happen, in the order it runs them.
#: Kept here, light to import, so the command line lists them without loading the drill.
SCENARIO_NAMES = (
    "db-lost-ledger-ok",
    "ledger-lagging",
    "not-committed",
    "region-lost-with-ledger",
    "ledger-up-relay-down",
    "healthy",
    "old-region-returns",
    "dr-takes-unique-value",
)


def parse_scenarios(text: str) -> list[str]:
    """--scenario's value: one row's name, several comma-separated, or 'all' → the names, in order."""
    asked = [n.strip() for n in text.split(",") if n.strip()]
    names = list(SCENARIO_NAMES) if asked == ["all"] else list(dict.fromkeys(asked))
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown or not names:
        raise DrledgerError(
            f"Unknown scenario '{(unknown or [text])[0]}'; choose one or more of: {', '.join(SCENARIO_NAMES)}, "
            "or all."
        )
    return names
