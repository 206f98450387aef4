"""A lag injector: a loopback TCP proxy that makes a streaming replica trail its primary by a set delay.

Cross-region replication (Aurora Global, say) trails by seconds. To drill that on one machine the
replica connects to the injector instead of the primary; WAL flowing primary→replica is held for the
delay before it is forwarded, while the replica's status replies go straight through, as they would on
a link whose latency is dominated by the shipping of WAL rather than by the acknowledgements.

`drop()` is the regional disaster: whatever WAL is still on the wire is gone for good.

All socket work happens on one asyncio loop in a daemon thread: the loop's timer heap schedules each
connection's next release, so an idle or lagging link costs no CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from typing import Any

from drledger.errors import DrledgerError

# Chunks due within this much of each other go out in one write: fewer timer wake-ups at WAL rates of
# several MB/s, and a late wake-up by the loop's clock resolution never reschedules for a microsecond.
_RELEASE_SLACK_S = 0.001
_CONTROL_TIMEOUT_S = 10.0


class _Link:
    """One replica connection and the primary connection opened for it alone."""

    def __init__(self, injector: LagInjector, loop: asyncio.AbstractEventLoop) -> None:
        self.injector = injector
        self.loop = loop
        self.replica: asyncio.Transport | None = None
        self.primary: asyncio.Transport | None = None
        # None marks the primary hanging up; it travels through the hold like data, so the replica sees
        # the hang-up only after every byte sent before it.
        self.held: deque[tuple[float, bytes | None]] = deque()
        self.held_bytes = 0
        self.last_release_at = 0.0
        self.release_timer: asyncio.TimerHandle | None = None
        self.primary_hung_up = False
        self.closed = False

    def hold(self, chunk: bytes | None) -> None:
        if self.closed or self.primary_hung_up:
            return
        # A shortened delay must not let new WAL overtake WAL already on the wire.
        release_at = max(self.loop.time() + self.injector.delay_s, self.last_release_at)
        self.last_release_at = release_at
        self.held.append((release_at, chunk))
        if chunk is None:
            self.primary_hung_up = True
        else:
            self.held_bytes += len(chunk)
            self.injector._held_bytes += len(chunk)
        if self.release_timer is None:
            self.release_timer = self.loop.call_at(release_at, self.release_due)

    def release_due(self) -> None:
        self.release_timer = None
        if self.closed or self.replica is None:
            return
        due_by = self.loop.time() + _RELEASE_SLACK_S
        batch: list[bytes] = []
        hung_up = False
        while self.held and self.held[0][0] <= due_by:
            _, chunk = self.held.popleft()
            if chunk is None:
                hung_up = True
                break
            batch.append(chunk)
        released = sum(len(chunk) for chunk in batch)
        self.held_bytes -= released
        self.injector._held_bytes -= released
        if batch:
            self.replica.writelines(batch)
        if hung_up:
            self.replica.close()
        elif self.held:
            self.release_timer = self.loop.call_at(self.held[0][0], self.release_due)

    def discard_held(self) -> int:
        if self.release_timer is not None:
            self.release_timer.cancel()
            self.release_timer = None
        discarded = self.held_bytes
        self.injector._held_bytes -= discarded
        self.held_bytes = 0
        self.held.clear()
        return discarded

    def sever(self) -> int:
        """Cut both sides now, losing the held WAL and anything still in the transports' buffers."""
        discarded = self.discard_held()
        self.closed = True
        for transport in (self.replica, self.primary):
            if transport is not None:
                transport.abort()
        self.injector._links.discard(self)
        return discarded

    def replica_gone(self) -> None:
        """The replica hung up: nobody is left to receive the held WAL; let its last words reach the primary."""
        self.discard_held()
        self.closed = True
        if self.primary is not None:
            self.primary.close()
        self.injector._links.discard(self)


class _ReplicaSide(asyncio.Protocol):
    def __init__(self, injector: LagInjector, loop: asyncio.AbstractEventLoop) -> None:
        self.link = _Link(injector, loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link.replica = transport
        # Nothing may be read from the replica before there is a primary connection to hand it to.
        transport.pause_reading()
        self.link.injector._links.add(self.link)
        self.link.injector._dial(self.link)

    def data_received(self, data: bytes) -> None:
        if self.link.primary is not None and not self.link.closed:
            self.link.primary.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.link.closed:
            self.link.replica_gone()

    # The replica's socket buffer is full: stop taking WAL from the primary rather than hold it unbounded.
    def pause_writing(self) -> None:
        if self.link.primary is not None:
            self.link.primary.pause_reading()

    def resume_writing(self) -> None:
        if self.link.primary is not None and not self.link.closed:
            self.link.primary.resume_reading()


class _PrimarySide(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.link.closed:
            # The replica left, or the injector dropped, while the connection was being opened.
            transport.abort()
            return
        self.link.primary = transport
        if self.link.replica is not None:
            self.link.replica.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.link.hold(data)

    def eof_received(self) -> bool | None:
        self.link.hold(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.hold(None)

    def pause_writing(self) -> None:
        if self.link.replica is not None:
            self.link.replica.pause_reading()

    def resume_writing(self) -> None:
        if self.link.replica is not None and not self.link.closed:
            self.link.replica.resume_reading()


class LagInjector:
    """A loopback proxy that holds primary→replica bytes for `delay_s` seconds before forwarding them.

    Point the replica (its `primary_conninfo`, and `pg_basebackup`) at `port`. Every replica connection
    gets its own connection to the primary. Call the methods from any thread except the injector's own.
    """

    def __init__(self, upstream_port: int, delay_s: float, upstream_host: str = "127.0.0.1") -> None:
        if delay_s < 0:
            raise DrledgerError("The replication delay cannot be negative.")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._dials: set[asyncio.Task[Any]] = set()
        # Written only on the loop thread; other threads read a possibly instant-old value, which is all
        # a gauge can promise anyway.
        self._held_bytes = 0
        self._dropped = False

    @property
    def port(self) -> int:
        """The loopback port the replica connects to."""
        if self._port is None:
            raise DrledgerError("The lag injector has no port until it is started.")
        return self._port

    def start(self) -> None:
        if self._loop is not None:
            raise DrledgerError("The lag injector is already started; it cannot be started twice.")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"lag-injector-{self.upstream_port}", daemon=True
        )
        self._thread.start()
        try:
            self._port = self._on_loop(self._listen())
        except BaseException:
            self.stop()
            raise

    def set_delay(self, delay_s: float) -> None:
        """Change the delay for bytes received from now on; bytes already held keep their release time."""
        if delay_s < 0:
            raise DrledgerError("The replication delay cannot be negative.")
        # A float rebinding is atomic; the loop reads it once per received chunk.
        self.delay_s = delay_s

    def in_flight_bytes(self) -> int:
        """Bytes the primary has sent that the replica has not been handed yet."""
        return self._held_bytes

    def drop(self) -> int:
        """The disaster: lose every held byte, cut every connection, refuse new ones; the bytes lost."""
        if self._loop is None or self._dropped:
            return 0
        self._dropped = True
        return int(self._on_loop(self._sever_all()))

    def stop(self) -> None:
        """Forward nothing more, close everything, free the port and join the thread. Safe to repeat."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                self._on_loop(self._sever_all())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._thread = None
        self._server = None

    def __enter__(self) -> LagInjector:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _on_loop(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT_S)

    async def _listen(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ReplicaSide(self, loop), "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def _dial(self, link: _Link) -> None:
        task = link.loop.create_task(self._connect_upstream(link))
        # The loop keeps only weak references to tasks; this set keeps a dial alive until it finishes.
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _connect_upstream(self, link: _Link) -> None:
        try:
            await link.loop.create_connection(
                lambda: _PrimarySide(link), self.upstream_host, self.upstream_port
            )
        except OSError:
            # The primary is unreachable: the replica sees a refused connection, as it would without us.
            if not link.closed:
                link.sever()

    async def _sever_all(self) -> int:
        if self._server is not None:
            self._server.close()
        for dial in list(self._dials):
            dial.cancel()
        dropped = sum(link.sever() for link in list(self._links))
        if self._server is not None:
            await self._server.wait_closed()
        # Let the aborted transports run their connection_lost callbacks before the loop can be stopped.
        await asyncio.sleep(0)
        return dropped
