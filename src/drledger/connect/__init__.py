"""The relay on Kafka Connect: the connector configuration drledger's readers can read
(`config.py`), and Connect's REST API as far as drledger uses it (`rest.py`)."""
