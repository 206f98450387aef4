"""The outbox: schema and capture triggers installed in the source database."""
