"""The bench's ASGI app under uvicorn, on a Unix socket (behind the proxies) and on a loopback TCP
port (the direct baseline) at once.

- `GET /events?n=N&interval_ms=MS`: Server-Sent Events, N events at a fixed rate; each carries
  `time.monotonic()` taken just before the app writes it (the client compares it with its own
  monotonic clock on read: same host, same clock).
- WebSocket on any path: echo, text or bytes.
- anything else: `200 ok`.

Run: python bench/app.py --uds PATH --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import parse_qs

import uvicorn

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

MAX_EVENTS = 100_000
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await _echo(receive, send)
    elif scope["type"] == "http" and scope["path"] == "/events":
        await _events(scope, send)
    elif scope["type"] == "http":
        await _plain(send, 200, b"ok\n")


async def _plain(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _echo(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})


def _query_number(scope: Scope, name: str, default: float) -> float:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        return float(query[name][0])
    except (KeyError, IndexError, ValueError):
        return default


async def _events(scope: Scope, send: Send) -> None:
    count = int(min(_query_number(scope, "n", 10), MAX_EVENTS))
    interval = max(_query_number(scope, "interval_ms", 10), 0.0) / 1000
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        event = f"id: {i}\ndata: {time.monotonic():.9f}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _listeners(uds: Path, port: int) -> list[socket.socket]:
    with_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if uds.is_socket():
        uds.unlink()  # a stale file from an earlier run
    with_unix.bind(str(uds))
    os.chmod(uds, 0o666)
    with_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with_tcp.bind(("127.0.0.1", port))
    return [with_unix, with_tcp]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uds", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=_listeners(args.uds, args.port))


if __name__ == "__main__":
    main()
