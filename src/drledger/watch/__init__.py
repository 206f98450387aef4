"""`drledger watch`: every few seconds, would the ledger save us if the primary region died now?

Three sides are compared: the primary's outbox, the DR replica's (a hot standby is readable) and the
ledger. `readiness` holds the pure arithmetic (tested directly), `cycle` one measurement through the
two seams, `metrics` the Prometheus registry, its HTTP endpoint and the log of state changes.
"""
