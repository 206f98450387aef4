"""The relay on Kafka Connect: the connector configuration drledger's readers can read
(`config.py`), and Connect's REST API as far as drledger uses it (`rest.py`)."""

#: The connector's name unless told otherwise.
DEFAULT_NAME = "drledger-outbox"
#: The connector's own slot (MySQL: the name its server id derives from), never the embedded relay's
#: (`drledger_slot`): two readers on one slot (or one server id) would push each other off.
DEFAULT_CONNECT_SLOT = "drledger_connect"
