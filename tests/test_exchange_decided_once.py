"""A request is decided once (the Host check, routing, the pool look-up), whichever way its
exchange is driven: in the callbacks, handed from them to the task on a pool miss, or in the
task from the start. In process: a real client connection on a socket pair, a real app on a Unix
socket, and a router whose discovery callback counts how often it is asked."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sockgate.config import App
from sockgate.engine.client import ClientConnection
from sockgate.engine.stream import Stream
from sockgate.http.routing import Router
from tests.support.fakes import engine_for


async def _app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request; a body, if any, is read by its Content-Length."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    return head + await reader.readexactly(2)


def test_each_request_is_decided_once_however_it_is_driven(tmp: Path) -> None:
    app = App(name="a", socket=tmp / "a.sock", prefix="/a/")
    asked: list[bytes] = []

    def discover(name: bytes) -> App | None:
        asked.append(name)
        return app if name == b"a" else None

    async def scenario() -> list[int]:
        server = await asyncio.start_unix_server(_app, path=str(app.socket))
        engine = engine_for(tmp)
        engine.router = Router((), None, discover=discover)
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, stream = await loop.connect_accepted_socket(Stream, ours)
        conn = ClientConnection(stream, engine, ("127.0.0.1", 50000))
        task = asyncio.create_task(conn.run())
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        counts = []
        requests = [
            b"GET /a/1 HTTP/1.1\r\nHost: localhost\r\n\r\n",  # pool empty: handed to the task
            b"GET /a/2 HTTP/1.1\r\nHost: localhost\r\n\r\n",  # pooled: all in callbacks
            b"POST /a/3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi",  # the task
            b"GET /a/4 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ]
        for request in requests:
            before = len(asked)
            answer = await _exchange(reader, writer, request)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            counts.append(len(asked) - before)
        writer.close()
        await task
        engine.close()
        server.close()
        await server.wait_closed()
        return counts

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [1, 1, 1, 1]


def test_an_exchange_handed_to_the_task_ends_cleanly_if_the_task_is_cancelled_first(
    tmp: Path,
) -> None:
    """The callbacks decide a request and hand it to the parked task (its app's pool is empty);
    the task is cancelled (the shutdown deadline) before it takes the exchange up. The
    connection ends as cancelled, with nothing left half done."""
    app = App(name="a", socket=tmp / "a.sock", prefix="/a/")

    async def scenario() -> BaseException | None:
        engine = engine_for(tmp, app)
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, stream = await loop.connect_accepted_socket(Stream, ours)
        conn = ClientConnection(stream, engine, ("127.0.0.1", 50000))
        task = asyncio.create_task(conn.run())
        for _ in range(20):  # steps of the loop, until the task is parked
            await asyncio.sleep(0)
            if conn.wake is not None:
                break
        assert conn.wake is not None
        assert conn.callbacks is not None
        conn.callbacks.on_client_data(b"GET /a/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.handed is not None  # decided, and handed over
        task.cancel()
        (result,) = await asyncio.gather(task, return_exceptions=True)
        theirs.close()
        engine.close()
        return result

    assert isinstance(asyncio.run(asyncio.wait_for(scenario(), 10)), asyncio.CancelledError)
