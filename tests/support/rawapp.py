"""A scriptable app on a Unix socket, in a background thread, that records the exact bytes it
receives. Requests are delimited with httptools (llhttp), never by hand."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httptools

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Request:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes  # the exact bytes of this request as received

    def header(self, name: bytes) -> bytes | None:
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[0] if found else None

    def header_all(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class RequestReader:
    """Feeds bytes to llhttp and yields complete requests with their raw bytes."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[Request] = []
        self._raw = bytearray()
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self.upgraded: bytes | None = None

    def on_message_begin(self) -> None:
        self._target, self._headers, self._body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self._done.append(
            Request(self._parser.get_method(), self._target, self._headers, bytes(self._body), b"")
        )

    def feed(self, data: bytes) -> list[Request]:
        self._raw += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = data[exc.args[0] :]
        done, self._done = self._done, []
        for request in done:
            request.raw = bytes(self._raw)
            self._raw.clear()
        return done


Handler = Callable[["Conn"], Awaitable[None]]


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    app: RawApp
    received: bytearray = field(default_factory=bytearray)
    _requests: RequestReader = field(default_factory=RequestReader)
    _pending: list[Request] = field(default_factory=list)

    async def request(self) -> Request | None:
        """The next complete request on this connection, None at end of stream."""
        while not self._pending:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.received += data
            self.app.record(data)
            self._pending += self._requests.feed(data)
        request = self._pending.pop(0)
        self.app.requests.append(request)
        self.app.request_seen.set()
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def offsets(start: int, size: int) -> bytes:
    """`size` bytes of a body from `start` on (both multiples of 8), each 8-byte word its own
    offset in the body: bytes delivered out of place, twice or overwritten cannot match."""
    return array("Q", range(start // 8, (start + size) // 8)).tobytes()


class Flood:
    """A handler that reads one request, answers with `head`, then sends `total` bytes (a body,
    or tunnel bytes after a 101) and notes when the proxy stops taking them: a drain still
    waiting after a second means the proxy holds the app back."""

    def __init__(self, total: int, head: bytes, *, pattern: bool = False) -> None:
        """`pattern`: the bytes say where they are (`offsets`), so that any byte out of place
        shows; else zeros."""
        self.total = total
        self.head = head
        self.pattern = pattern
        self.stalled = threading.Event()
        self.finished = threading.Event()
        self.sent_at_stall = 0

    async def __call__(self, conn: Conn) -> None:
        if await conn.request() is None:
            return
        await conn.send(self.head)
        block = bytes(1 << 20)
        sent = 0
        while sent < self.total:
            if self.pattern:
                block = offsets(sent, 1 << 20)
            conn.writer.write(block)
            sent += len(block)
            drain = asyncio.ensure_future(conn.writer.drain())
            await asyncio.wait([drain], timeout=1.0)
            if not drain.done() and not self.stalled.is_set():
                self.sent_at_stall = sent
                self.stalled.set()
            await drain
        self.finished.set()


async def respond_ok(conn: Conn) -> None:
    """Answer every request on the connection with a fixed 200, keeping it alive."""
    while await conn.request() is not None:
        await conn.send(OK)


class _Tracked(asyncio.StreamReaderProtocol):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        open_transports: set[asyncio.Transport],
    ) -> None:
        super().__init__(reader, serve)
        self._open = open_transports
        self._own: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._own = transport
        self._open.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._own is not None:
            self._open.discard(self._own)
        super().connection_lost(exc)


class RawApp:
    """Run with `with RawApp(path, handler) as app:`; `handler(conn)` serves one connection."""

    def __init__(self, path: Path, handler: Handler = respond_ok) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[Request] = []
        self.raw = bytearray()
        self.connections = 0
        self.request_seen = threading.Event()
        self.closed = threading.Event()  # set when a connection ends
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.Transport] = set()

    def record(self, data: bytes) -> None:
        with self._lock:
            self.raw += data

    def __enter__(self) -> RawApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._protocol, path=str(self.path))

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        # What start_unix_server makes, plus a record of the open transports.
        return _Tracked(asyncio.StreamReader(), self._serve, self._open)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        # A connection accepted just now (sockgate's status page probes sockets at any time)
        # is still being set up by the loop: cancelled before its first step, its socket would
        # never be closed. Let the setup finish; the handler it starts is cancelled below.
        accepting = [
            t for t in others if getattr(t.get_coro(), "__name__", "") == "_accept_connection2"
        ]
        if accepting:
            await asyncio.wait(accepting)
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        # Each handler closes its connection on the way out; the close completes in a callback
        # the loop runs before this wait returns, so no transport outlives the loop.
        await asyncio.gather(*handlers, return_exceptions=True)
        # A connection its handler did not close (seen once under load, as an unclosed socket
        # at the next garbage collection). The likely way: a handler task cancelled before its
        # first step never runs the handler, so never its finally.
        for transport in list(self._open):
            transport.abort()
        await asyncio.sleep(0)  # their connection_lost, scheduled by abort(), runs first

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(Conn(reader, writer, self))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.closed.set()
