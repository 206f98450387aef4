"""moto_server (same arguments), with SQS calls no slower as a queue grows. moto 5 builds a queue's whole
attribute dict (3 scans of every message, datetime clock per message) per message sent (about 6 for FIFO)
and 3 per message received: O(depth) per call. Here the two attributes read there are answered directly."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from moto.core.utils import unix_time as _unix_time
from moto.sqs import models


class _Attributes(Mapping[str, Any]):
    """A queue's attributes, computing the whole (depth-proportional) dict only when asked for it."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self._all: dict[str, Any] | None = None

    def _full(self) -> dict[str, Any]:
        if self._all is None:
            self._all = _attributes(self._queue)
        return self._all

    def get(self, key: str, default: Any = None) -> Any:
        if key == "ContentBasedDeduplication":
            if not self._queue.fifo_queue:
                return default
            value = self._queue.content_based_deduplication
            return str(value).lower() if isinstance(value, bool) else value
        return self._full().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._full()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._full())

    def __len__(self) -> int:
        return len(self._full())


def _retention_ok(self: Any, queue_name: str, message: Any) -> bool:
    period = int(self.get_queue(queue_name).message_retention_period)
    return period + message.sent_timestamp / 1000 > time.time()


_attributes = models.Queue.attributes.fget  # type: ignore[attr-defined]
models.Queue.attributes = property(_Attributes)  # type: ignore[assignment]
models.SQSBackend.is_message_valid_based_on_retention_period = _retention_ok  # type: ignore[method-assign]
models.unix_time = lambda dt=None: time.time() if dt is None else _unix_time(dt)
models.unix_time_millis = lambda dt=None: models.unix_time(dt) * 1000.0

if __name__ == "__main__":
    from moto.server import main

    main()
