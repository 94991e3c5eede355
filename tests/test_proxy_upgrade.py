"""Behaviour 6: Upgrade (WebSocket or any protocol the app accepts with 101) opens a tunnel where
bytes flow both ways untouched, with half-close; an upgrade the app refuses opens no tunnel."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import (
    DEADLINE,
    RawClient,
    head_header,
    read_head,
    request_bytes,
    slow_reader_holds_the_app_back,
)
from tests.support.rawapp import Conn, Flood

UPGRADE = [("Connection", "Upgrade"), ("Upgrade", "echo-proto")]
# Bytes that would confuse anything still parsing HTTP inside the tunnel.
NOT_HTTP = b"\x00\xff\r\n\r\nGET /app1/ HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n"


# --- WebSocket through to Starlette -------------------------------------------------------------


def test_websocket_echo_through_the_proxy(make_proxy: ProxyFactory, starlette_sock: Path) -> None:
    proxy = make_proxy({"st": starlette_sock})
    with connect(f"ws://127.0.0.1:{proxy.port}/st/ws", open_timeout=DEADLINE) as ws:
        for i in range(5):
            ws.send(f"message {i}")
            assert ws.recv(timeout=DEADLINE) == f"echo: message {i}"
        big = "x" * 300_000
        ws.send(big)
        assert ws.recv(timeout=DEADLINE) == f"echo: {big}"


def test_websocket_on_a_kept_prefix(make_proxy: ProxyFactory, starlette_sock: Path) -> None:
    proxy = make_proxy({"st": {"socket": starlette_sock, "prefix": "/", "strip_prefix": False}})
    with connect(f"ws://127.0.0.1:{proxy.port}/ws", open_timeout=DEADLINE) as ws:
        ws.send("hi")
        assert ws.recv(timeout=DEADLINE) == "echo: hi"


# --- a raw tunnel -------------------------------------------------------------------------------


class EchoTunnel:
    """Answers an upgrade with 101, then echoes every byte back. When the proxy half-closes
    its side, sends `farewell` and closes. With `app_half_close`, the app half-closes first
    after `farewell` and keeps reading what the client still sends."""

    def __init__(self, *, app_half_close: bool = False) -> None:
        self.head = b""
        self.tunnel = bytearray()
        self.app_half_close = app_half_close
        self.client_eof = threading.Event()
        self.late = bytearray()
        self.farewell = b"<app says bye>"

    async def __call__(self, conn: Conn) -> None:
        self.head, rest = await read_head(conn)
        await conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Connection: Upgrade\r\nUpgrade: echo-proto\r\nX-Tunnel: yes\r\n\r\n"
        )
        if self.app_half_close:
            await conn.send(self.farewell)
            conn.writer.write_eof()
            while data := await conn.reader.read(65536):
                self.late += data
            self.client_eof.set()
            return
        if rest:
            self.tunnel += rest
            await conn.send(rest)
        while data := await conn.reader.read(65536):
            self.tunnel += data
            await conn.send(data)
        self.client_eof.set()
        await conn.send(self.farewell)


def open_tunnel(client: RawClient, trailing: bytes = b"") -> None:
    client.send(request_bytes("/app1/tunnel", headers=UPGRADE) + trailing)
    response = client.head()
    assert response.status == 101
    assert response.header("upgrade") == b"echo-proto"
    assert response.header("x-tunnel") == b"yes"
    assert [v.lower() for v in response.header_all("connection")] == [b"upgrade"]
    assert client.upgraded


def test_raw_upgrade_tunnel_carries_bytes_untouched(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = EchoTunnel()
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        open_tunnel(client)
        client.send(NOT_HTTP)
        client.tunnel_until(NOT_HTTP)
        client.send(b"ping")
        client.tunnel_until(NOT_HTTP + b"ping")
    assert head_header(app_handler.head, b"upgrade") == b"echo-proto"
    assert head_header(app_handler.head, b"connection").lower() == b"upgrade"  # type: ignore[union-attr]
    assert app_handler.head.startswith(b"GET /tunnel HTTP/1.1\r\n")


def test_bytes_sent_with_the_upgrade_request_reach_the_app(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = EchoTunnel()
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        # The tunnel's first bytes travel in the same packet as the request head.
        open_tunnel(client, trailing=b"early bytes|")
        client.tunnel_until(b"early bytes|")
        client.send(b"later")
        client.tunnel_until(b"early bytes|later")
    assert bytes(app_handler.tunnel).startswith(b"early bytes|")


@pytest.mark.nginx_difference("nginx ends a tunnel when one side half-closes")
def test_client_half_close_still_receives_the_apps_bytes(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = EchoTunnel()
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        open_tunnel(client)
        client.send(b"last words")
        client.tunnel_until(b"last words")
        client.sock.shutdown(socket.SHUT_WR)
        assert app_handler.client_eof.wait(DEADLINE), "the half-close did not reach the app"
        client.read_to_close()
        assert bytes(client.tunnel) == b"last words" + app_handler.farewell


@pytest.mark.nginx_difference("nginx ends a tunnel when one side half-closes")
def test_app_half_close_lets_the_client_keep_sending(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = EchoTunnel(app_half_close=True)
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        open_tunnel(client)
        client.read_to_close()  # the app's half-close arrives as end of stream
        assert bytes(client.tunnel) == app_handler.farewell
        client.send(b"still talking")
        client.sock.shutdown(socket.SHUT_WR)
        assert app_handler.client_eof.wait(DEADLINE)
    assert bytes(app_handler.late) == b"still talking"


# --- a refused upgrade --------------------------------------------------------------------------


class Refuser:
    """Answers the upgrade request with an ordinary response, then records whatever else
    arrives on the connection until it ends."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.after = bytearray()
        self.done = threading.Event()

    async def __call__(self, conn: Conn) -> None:
        try:
            _, rest = await read_head(conn)
            self.after += rest
            await conn.send(self.response)
            while data := await conn.reader.read(65536):
                self.after += data
        finally:
            self.done.set()


REFUSALS = {
    "400": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nno upgrade",
    "200": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nno tunnel",
    "426-close": (
        b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope"
    ),
}


@pytest.mark.nginx_difference(
    "after a refused upgrade nginx keeps the connection and reads what follows as the next request"
)
@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("when", ["after-response", "same-packet"])
def test_refused_upgrade_opens_no_tunnel(
    make_proxy: ProxyFactory, raw_app: RawFactory, refusal: str, when: str
) -> None:
    refuser = Refuser(REFUSALS[refusal])
    app = raw_app(refuser)
    proxy = make_proxy({"app1": app.path})
    smuggled = b"RAW TUNNEL BYTES " + request_bytes("/app1/smuggled")
    expected_status = int(refusal[:3])
    with RawClient(proxy.port) as client:
        trailing = smuggled if when == "same-packet" else b""
        client.send(request_bytes("/app1/tunnel", headers=UPGRADE) + trailing)
        response = client.response()
        assert response.status == expected_status
        assert bytes(response.body) == REFUSALS[refusal].partition(b"\r\n\r\n")[2]
        assert response.header("upgrade") is None
        assert not client.upgraded
        if when == "after-response":
            client.send(smuggled)  # False if the proxy has already closed: fine
        assert client.closed_by_peer(), "the connection stayed open after a refused upgrade"
        assert len(client.responses) == 1
        assert client.tunnel == b""
    # Stopping the proxy closes its app connections: everything the app got is in `after`.
    assert proxy.stop() == 0
    assert refuser.done.wait(DEADLINE)
    assert b"RAW TUNNEL BYTES" not in refuser.after
    assert b"/smuggled" not in refuser.after


def test_idle_tunnel_is_closed_after_the_read_timeout(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = EchoTunnel()
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path}, timeouts='read = "1s"')
    with RawClient(proxy.port) as client:
        open_tunnel(client)
        client.send(b"hello")
        client.tunnel_until(b"hello")
        quiet_since = time.monotonic()
        client.read_to_close()
        idle = time.monotonic() - quiet_since
    assert app_handler.client_eof.wait(DEADLINE), "the app side of the tunnel was not closed"
    assert 0.5 <= idle < 5, f"the idle tunnel was closed after {idle:.2f}s"


def test_slow_tunnel_reader_holds_the_app_back(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n"
    )
    flood = Flood(64 << 20, switch)
    proxy = make_proxy({"app1": raw_app(flood).path})
    assert proxy.proc is not None
    request = request_bytes("/app1/tunnel", headers=UPGRADE)
    head = slow_reader_holds_the_app_back(proxy.port, proxy.proc.pid, flood, request)
    assert head.startswith(b"HTTP/1.1 101 ")
