"""Local PostgreSQL clusters and the disaster drill built on them."""

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
)
