"""Behaviour 4: client keep-alive and pipelining; one pooled app connection reused; an app that
closes a pooled connection never fails a client's request."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httptools
import httpx

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import (
    DEADLINE,
    RawClient,
    chunked,
    request_bytes,
    vm_kib,
    wait_gate,
)
from tests.support.rawapp import OK, Conn


async def echo_target(conn: Conn) -> None:
    """Answer every request with its method, target and body, keeping the connection alive."""
    while (request := await conn.request()) is not None:
        body = request.method + b" " + request.target + b" " + request.body
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_keep_alive_carries_several_requests(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app(echo_target)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        for i in range(3):
            client.send(request_bytes(f"/app1/r{i}"))
            response = client.response()
            assert response.status == 200
            assert bytes(response.body) == f"GET /r{i} ".encode()
            assert b"close" not in [v.lower() for v in response.header_all("connection")]
    assert [r.target for r in app.requests] == [b"/r0", b"/r1", b"/r2"]


def test_http10_keep_alive_when_asked(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app(echo_target)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        keep = [("Connection", "keep-alive")]
        client.send(request_bytes("/app1/a", version="1.0", headers=keep))
        first = client.response()
        assert first.status == 200
        assert [v.lower() for v in first.header_all("connection")] == [b"keep-alive"]
        client.send(request_bytes("/app1/b", version="1.0"))
        second = client.response()
        assert bytes(second.body) == b"GET /b "
        # HTTP/1.0 without keep-alive: the proxy closes after the response.
        assert client.closed_by_peer()


def test_connection_close_from_the_client_is_honoured(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/x", headers=[("Connection", "close")]))
        response = client.response()
        assert response.status == 200
        assert [v.lower() for v in response.header_all("connection")] == [b"close"]
        assert client.closed_by_peer()


def test_pipelined_requests_are_answered_in_order(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(echo_target)
    proxy = make_proxy({"app1": app.path})
    batch = b"".join(
        [
            request_bytes("/app1/one"),
            request_bytes("/app1/two", "POST", body=b"body of two"),
            request_bytes(
                "/app1/three",
                "PUT",
                headers=[("Transfer-Encoding", "chunked")],
                body=chunked(b"chunk", b"ed"),
                content_length=False,
            ),
            request_bytes("/app1/four?x=1"),
        ]
    )
    with RawClient(proxy.port) as client:
        client.send(batch)
        bodies = [bytes(client.response().body) for _ in range(4)]
    assert bodies == [
        b"GET /one ",
        b"POST /two body of two",
        b"PUT /three chunked",
        b"GET /four?x=1 ",
    ]
    assert [r.body for r in app.requests] == [b"", b"body of two", b"chunked", b""]


def test_pipelined_requests_across_apps_and_local_answers(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app1 = raw_app(echo_target, name="a1")
    app2 = raw_app(echo_target, name="a2")
    proxy = make_proxy({"app1": app1.path, "app2": app2.path})
    batch = b"".join(
        request_bytes(t) for t in ["/app1/a", "/nowhere", "/app2/b", "/app1", "/app1/c"]
    )
    with RawClient(proxy.port) as client:
        client.send(batch)
        responses = [client.response() for _ in range(5)]
    assert [r.status for r in responses] == [200, 404, 200, 301, 200]
    assert bytes(responses[0].body) == b"GET /a "
    assert bytes(responses[2].body) == b"GET /b "
    assert responses[3].header("location") == b"/app1/"
    assert bytes(responses[4].body) == b"GET /c "


def test_one_pooled_app_connection_serves_sequential_requests(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    # Each httpx.get is a new client connection; the proxy's app side is pooled.
    for i in range(5):
        assert httpx.get(f"{proxy.url}/app1/{i}").status_code == 200
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(5):
            assert client.post(f"/app1/p{i}", content=b"x" * 100).status_code == 200
    assert len(app.requests) == 10
    assert app.connections == 1


def test_concurrent_requests_use_separate_app_connections(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    gate = threading.Event()
    both_seen = threading.Event()
    seen = []

    async def hold(conn: Conn) -> None:
        while await conn.request() is not None:
            seen.append(1)
            if len(seen) == 2:
                both_seen.set()
            await wait_gate(gate)
            await conn.send(OK)

    app = raw_app(hold)
    proxy = make_proxy({"app1": app.path})
    clients = [RawClient(proxy.port), RawClient(proxy.port)]
    try:
        for c in clients:
            c.send(request_bytes("/app1/slow"))
        assert both_seen.wait(DEADLINE), "the second request waited for the first"
        gate.set()
        assert [c.response().status for c in clients] == [200, 200]
    finally:
        gate.set()
        for c in clients:
            c.close()
    assert app.connections == 2


# --- an app closing pooled connections --------------------------------------------------------


class ClosingApp:
    """Answers one request per connection, then closes it (like an app's short keep-alive
    timeout). `idle_closed` is set once the close has fully happened on the app's side."""

    def __init__(self) -> None:
        self.idle_closed = threading.Event()

    async def __call__(self, conn: Conn) -> None:
        request = await conn.request()
        if request is None:
            return
        body = request.method + b" " + request.body
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await asyncio.sleep(0.1)  # the app's own idle timeout, not test synchronisation
        conn.writer.close()
        await conn.writer.wait_closed()
        self.idle_closed.set()


def test_app_closing_an_idle_pooled_connection_does_not_fail_a_get(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    closing = ClosingApp()
    app = raw_app(closing)
    proxy = make_proxy({"app1": app.path})
    with httpx.Client(base_url=proxy.url) as client:
        assert client.get("/app1/first").status_code == 200
        assert closing.idle_closed.wait(DEADLINE)
        response = client.get("/app1/second")
    assert response.status_code == 200
    assert response.text == "GET "
    assert app.connections == 2


def test_app_closing_an_idle_pooled_connection_does_not_fail_a_post(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    closing = ClosingApp()
    app = raw_app(closing)
    proxy = make_proxy({"app1": app.path})
    with httpx.Client(base_url=proxy.url) as client:
        assert client.post("/app1/first", content=b"one").status_code == 200
        assert closing.idle_closed.wait(DEADLINE)
        response = client.post("/app1/second", content=b"payload of the second post")
    assert response.status_code == 200
    assert response.text == "POST payload of the second post"
    assert [r.body for r in app.requests] == [b"one", b"payload of the second post"]
    assert app.connections == 2


class CrossingCloseApp:
    """On its first connection: answers one request, then reads the next one and closes without
    answering: the app's idle close crossed the proxy's request on the wire. Later connections
    answer normally."""

    def __init__(self) -> None:
        self.dropped: list[bytes] = []

    async def __call__(self, conn: Conn) -> None:
        first = conn.app.connections == 1
        request = await conn.request()
        if request is None:
            return
        await conn.send(OK)
        if first:
            data = await conn.reader.read(65536)
            self.dropped.append(data)
            return  # closes with the request unanswered
        while await conn.request() is not None:
            await conn.send(OK)


def test_get_on_a_pooled_connection_the_app_just_closed_is_retried(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    crossing = CrossingCloseApp()
    app = raw_app(crossing)
    proxy = make_proxy({"app1": app.path})
    assert httpx.get(f"{proxy.url}/app1/first").status_code == 200
    response = httpx.get(f"{proxy.url}/app1/second")
    assert response.status_code == 200
    assert response.text == "ok"
    assert len(crossing.dropped) == 1
    assert crossing.dropped[0].startswith(b"GET /second HTTP/1.1\r\n")
    assert app.connections == 2
    assert [r.target for r in app.requests] == [b"/first", b"/second"]


def test_post_the_app_may_have_processed_is_not_sent_twice(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    crossing = CrossingCloseApp()
    app = raw_app(crossing)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/first"))
        assert client.response().status == 200
        client.send(request_bytes("/app1/pay", "POST", body=b"charge once"))
        response = client.response()
    # The app read the POST before closing: re-sending it could apply it twice.
    assert response.status == 502
    assert len(crossing.dropped) == 1
    assert crossing.dropped[0].startswith(b"POST /pay HTTP/1.1\r\n")
    assert app.connections == 1


class Completed:
    """llhttp callbacks that count whole responses and their body bytes."""

    def __init__(self) -> None:
        self.count = 0
        self.body = 0

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.count += 1


def test_a_pipelining_client_that_does_not_read_is_not_served_ahead(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """990 pipelined requests for 16 kB each (under nginx's 1,000 requests per connection), and
    the client reads nothing: the proxy stops forwarding once the client is behind (instead of
    queueing 16 MB of answers in memory), and every answer arrives, whole, once it reads."""
    body = b"x" * 16000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    count = 990

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(answer)

    app = raw_app(handler)
    proxy = make_proxy({"a": app.path})
    assert proxy.proc is not None
    before = vm_kib(proxy.proc.pid, "VmHWM")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(b"GET /a/ HTTP/1.1\r\nHost: localhost\r\n\r\n" * count)
        # Until the app's count stops growing: the proxy has stopped (bounded by a deadline).
        end = time.monotonic() + DEADLINE
        seen = -1
        while seen != len(app.requests):
            assert time.monotonic() < end, "the proxy never stopped forwarding"
            seen = len(app.requests)
            time.sleep(0.5)  # no event says "nothing more will come"; bounded by the deadline
        assert seen < count // 2, f"{seen} of {count} forwarded to a client that reads nothing"
        grown = vm_kib(proxy.proc.pid, "VmHWM") - before
        assert grown < 24 * 1024, f"the proxy grew by {grown} KiB"
        done = Completed()
        parser = httptools.HttpResponseParser(done)
        while done.count < count:
            data = sock.recv(1 << 20)
            assert data, f"closed after {done.count} answers"
            parser.feed_data(data)
    assert done.count == count
    assert done.body == count * len(body)
    assert len(app.requests) == count
