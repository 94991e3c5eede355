"""A connection as a byte stream over an asyncio transport, with backpressure both ways.

One small protocol serves client and app connections: `await read()` returns the next bytes
(b"" at end of stream), `write()` queues, `await drain()` waits while the peer is slow,
`write_eof()` half-closes. Reading pauses the transport while too much is buffered, so a fast
sender never fills our memory.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

from .deadline import Deadline

# Read buffering beyond this pauses the transport until the reader catches up.
READ_HIGH_WATER: Final = 256 * 1024
WRITE_HIGH_WATER: Final = 256 * 1024
# What is read of an app's last words after it left (`Stream._salvage`): enough for a page.
SALVAGE_MAX: Final = 64 * 1024
# The buffer a relayed stream reads into (`Stream.relay`), and how many free ones the process
# keeps for the next relays (until it is at rest: `release_spares`). A buffer is not kept per
# connection: a pool of app connections that served long bodies would hold one each while idle.
RELAY_BUFFER: Final = 256 * 1024
SPARE_BUFFERS: Final = 16
_spare: Final[list[memoryview]] = []


def release_spares() -> None:
    """Let the spare relay buffers go (the process is at rest)."""
    _spare.clear()


class Stream(asyncio.Protocol):
    def __init__(
        self,
        on_connect: Callable[[Stream], None] | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """`loop`: the running loop, when the caller has it at hand (asking for it costs a
        getpid() system call on Python 3.11, and a stream is made per connection)."""
        self.transport: asyncio.Transport | None = None
        self._on_connect = on_connect
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self.idle = False
        # Deadlines (loop time) of the waits under way, and one timer for the earlier of them:
        # set per wait without creating or cancelling a timer in the common case.
        self._read_deadline: float | None = None
        self._drain_deadline: float | None = None
        self.loop = loop or asyncio.get_running_loop()
        self._timer = Deadline(self.loop, self._on_timer)
        # Called once when the peer closes or the connection is lost, even if nobody reads.
        self.on_eof: Callable[[], None] | None = None
        # While set, received bytes go to it instead of the buffer: a caller driven by callbacks
        # (the proxy's fast path) sees them without a task waking up.
        self.on_data: Callable[[bytes], None] | None = None
        # Called when the peer has caught up after writing was paused.
        self.on_drained: Callable[[], None] | None = None
        self._held = False
        self._relay: _RelayReads | None = None
        # Read what is left when a write finds the peer gone (see connection_lost): set for
        # connections to apps, whose last words say what went wrong.
        self.salvage = False

    def __repr__(self) -> str:
        state = "lost" if self._lost else "eof" if self._eof else "open"
        return f"<Stream {state} buffered={self._buffered}>"

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        if self.idle:
            # A pooled app connection that speaks unasked is broken: drop it.
            self.abort()
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._transport().pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        self._notify_eof()
        # Our side stays open: a peer that half-closed may still read what we send (not TLS).
        return not self.idle and self.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.salvage and isinstance(exc, ConnectionError):
            self._salvage()
        # Nothing arrives or drains any more: the callbacks and the timer, which hold their
        # owners (and so this stream), are let go.
        self._timer.close()
        self.on_data = self.on_drained = None
        if self._relay is not None:
            self._relay.detach()
            self._relay = None
        self._eof = self._lost = True
        self._error = exc
        self._wake_reader()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._notify_eof()

    def _salvage(self) -> None:
        """An app that closed before reading our request fails our write (EPIPE) before what it
        sent is read: read it now (asyncio and uvloop close the socket after connection_lost)."""
        sock = None if self.transport is None else self.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            data = os.read(sock.fileno(), SALVAGE_MAX)
        except OSError:
            return
        if data:
            self.data_received(data)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_drained is not None:
            self.on_drained()

    # --- the stream API
    @property
    def at_eof(self) -> bool:
        """The peer closed (or the connection is gone) and everything buffered was read."""
        return self._eof and not self._buffer

    @property
    def closed(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    @property
    def has_buffered(self) -> bool:
        return bool(self._buffer)

    @property
    def peer_closed(self) -> bool:
        """The peer sent its end of stream, or the connection is gone (bytes may be buffered)."""
        return self._eof

    @property
    def reset(self) -> bool:
        """The connection was lost with an error (a reset), not closed in order."""
        return self._lost and self._error is not None

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def peer(self) -> Any:
        return self._transport().get_extra_info("peername")

    async def read(self, deadline: float | None = None) -> bytes:
        """The next bytes received; b"" once the peer has closed. Raises the transport's error,
        or TimeoutError when nothing arrived by `deadline` (loop time)."""
        while not self._buffer:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            self._read_waiter = self.loop.create_future()
            if deadline is not None:
                self._read_deadline = deadline
                self._arm(deadline)
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
                self._read_deadline = None
        return self.take()

    def take(self) -> bytes:
        """The next buffered bytes, without waiting (call only when `has_buffered`)."""
        data = self._buffer.popleft()
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= READ_HIGH_WATER // 4:
            self._reading_paused = False
            if not self._lost and not self._held:
                self._transport().resume_reading()
        return data

    def hold(self, held: bool) -> None:
        """Stop (or start again) receiving, for a caller driven by `on_data` whose output is
        backed up; independent of the pause the buffer makes on its own."""
        if held == self._held:
            return
        self._held = held
        if self.closed:
            return
        if held:
            self._transport().pause_reading()
        elif not self._reading_paused:
            self._transport().resume_reading()

    def unread(self, data: bytes) -> None:
        """Put bytes back in front, for the next read (bytes that belong to a tunnel)."""
        if data:
            self._buffer.appendleft(data)
            self._buffered += len(data)

    def write(self, data: bytes) -> None:
        transport = self.transport  # `closed`, inline: this runs for every write
        if self._lost or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)

    def relay(self, sink: Callable[[memoryview], bool] | None) -> None:
        """From now on received bytes go to `sink`, as views of a buffer this stream owns,
        until `relay(None)`: for a long body passed on as it comes. uvloop then reads into that
        buffer instead of copying each read into a new bytes object, one copy of every byte
        less. `sink` returns True when it kept the view past the call (the bytes are still
        queued for a slow peer): the next read then gets a new buffer."""
        relay = self._relay
        if sink is None:
            if relay is None:
                return
            self._relay = None
            relay.detach()  # it held its owner (a client connection), and a buffer
            if self.closed:
                return
            protocol: asyncio.BaseProtocol = self
        elif relay is not None:
            relay.sink = sink
            return
        elif self.closed:
            return
        else:
            self._relay = protocol = _RelayReads(self, sink)
        transport = self._transport()
        # uvloop picks its read callbacks when reading starts: stop and start again.
        transport.pause_reading()
        transport.set_protocol(protocol)
        if not (self._held or self._reading_paused):
            transport.resume_reading()

    @property
    def unsent(self) -> int:
        """Bytes written but still queued for the peer."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def writelines(self, parts: list[bytes] | list[memoryview]) -> None:
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.writelines(parts)

    async def drain(self, deadline: float | None = None) -> None:
        """Wait while the peer is slow to read; TimeoutError if still so at `deadline`."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        self._drain_waiter = self.loop.create_future()
        if deadline is not None:
            self._drain_deadline = deadline
            self._arm(deadline)
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
            self._drain_deadline = None
        if self._lost:
            raise ConnectionResetError("connection lost")

    def can_write_eof(self) -> bool:  # TLS cannot: its close_notify ends the connection
        return self.transport is not None and self.transport.can_write_eof()

    def write_eof(self) -> None:
        if self.can_write_eof() and not self._transport().is_closing():
            self._transport().write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- internals
    def _transport(self) -> asyncio.Transport:
        assert self.transport is not None, "stream used before connection_made"
        return self.transport

    def _arm(self, deadline: float) -> None:
        at = self._timer.at
        if at is None or at > deadline:
            self._timer.set(deadline)

    def _on_timer(self) -> None:
        now = self.loop.time()
        for deadline, waiter in (
            (self._read_deadline, self._read_waiter),
            (self._drain_deadline, self._drain_waiter),
        ):
            if deadline is None or waiter is None or waiter.done():
                continue
            if now >= deadline:
                waiter.set_exception(TimeoutError())
            else:
                self._arm(deadline)  # the wait under way started later than the timer

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _notify_eof(self) -> None:
        callback, self.on_eof = self.on_eof, None
        if callback is not None:
            callback()


class _RelayReads(asyncio.BufferedProtocol):
    """A stream's transport's protocol while it relays (`Stream.relay`): reads land in a
    buffer of ours, and the rest of the protocol is the stream's. A buffer whose bytes are
    still queued for the peer is left to the transport (it holds views of it) and never
    reused; a free one goes back to the spares when the relay ends."""

    def __init__(self, stream: Stream, sink: Callable[[memoryview], bool]) -> None:
        self._stream = stream
        self.sink: Callable[[memoryview], bool] | None = sink
        self._view: memoryview | None = _buffer()
        self._in_sink = False

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view
        if view is None:  # only after detach, if the transport reads once more
            view = self._view = _buffer()
        return view

    def buffer_updated(self, nbytes: int) -> None:
        sink = self.sink
        view = self._view
        if sink is None or view is None:
            return
        self._in_sink = True
        kept = sink(view[:nbytes])  # may end the relay (detach)
        self._in_sink = False
        if kept:
            self._view = None if self.sink is None else _buffer()
        elif self.sink is None:
            self._release()

    def detach(self) -> None:
        self.sink = None
        if not self._in_sink:  # else buffer_updated knows whether the buffer is free
            self._release()

    def _release(self) -> None:
        view, self._view = self._view, None
        if view is not None and len(_spare) < SPARE_BUFFERS:
            _spare.append(view)

    def eof_received(self) -> bool:
        return self._stream.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._stream.resume_writing()


def _buffer() -> memoryview:
    return _spare.pop() if _spare else memoryview(bytearray(RELAY_BUFFER))
