"""The relay: Debezium's embedded engine on the outbox, publishing each committed row to the ledger."""
