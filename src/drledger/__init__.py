"""drledger: a DR ledger for replicated databases.

Every committed insert of the chosen tables is written to an outbox in the same transaction, streamed
by Debezium into a ledger outside the database, and after a failover compared with what the promoted
database still has.
"""

__version__ = "0.1.0"
