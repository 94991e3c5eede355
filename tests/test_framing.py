"""Item 9: strict framing in both directions, over raw TCP, against an app that records the exact
bytes it receives. A request the proxy refuses must never reach the app, not even in part, and
the bytes of one message must never become another."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sockgate.http import nothttp
from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import RawClient, Response, exchange
from tests.support.proc import Proxy
from tests.support.rawapp import Conn, Handler, RawApp

GET = b"GET /a/x HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def gate(make_proxy: ProxyFactory, raw_app: RawFactory) -> tuple[Proxy, RawApp]:
    """The proxy with one recording app at /a/."""
    app = raw_app()
    return make_proxy({"a": app.path}), app


def refused(port: int, request: bytes) -> tuple[Response, bytes]:
    """Send a request the proxy must refuse: its answer, and that the connection then closes."""
    response, rest = exchange(port, request)
    assert response.complete, f"no complete answer: {response.raw!r}"
    return response, rest


def settle(proxy: Proxy, app: RawApp, prefix: bytes = b"/a/") -> None:
    """A valid request on a new connection, answered by the app. The app reads its connections
    in the order the proxy opened them, so once this one is answered, anything the proxy had
    sent it before has been recorded too."""
    before = len(app.requests)
    ok, _ = exchange(proxy.port, b"GET %ssettle HTTP/1.1\r\nHost: localhost\r\n\r\n" % prefix)
    assert ok.status == 200, ok.raw
    assert len(app.requests) == before + 1
    assert app.requests[-1].target == b"/settle"


def only_settle_requests(app: RawApp) -> bool:
    """True if every byte the app received belongs to complete `settle` requests."""
    return all(r.target == b"/settle" for r in app.requests) and bytes(app.raw) == b"".join(
        r.raw for r in app.requests
    )


def assert_clean_refusal(response: Response, rest: bytes, status: int | tuple[int, ...]) -> None:
    allowed = status if isinstance(status, tuple) else (status,)
    assert response.status in allowed, response.raw
    assert response.header("Connection") == b"close", response.raw
    assert rest == b"", f"bytes after the refusal: {rest!r}"


# --- requests -----------------------------------------------------------------------------------

HEAD = b"POST /a/x HTTP/1.1\r\nHost: localhost\r\n"

VERSION = (400, 505)

MALFORMED: dict[str, tuple[bytes, int | tuple[int, ...]]] = {
    "cl-then-te": (
        HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-then-cl": (
        HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two-different-cl": (HEAD + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", 400),
    "cl-list": (HEAD + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    "cl-negative": (HEAD + b"Content-Length: -1\r\n\r\n", 400),
    "cl-not-a-number": (HEAD + b"Content-Length: 3x\r\n\r\nabc", 400),
    "te-gzip-chunked": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    "te-gzip": (HEAD + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    "te-chunked-twice-in-one": (
        HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-duplicate-header": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad-chunk-size": (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "bad-header-name-space": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nBad Name: 1\r\n\r\n",
        400,
    ),
    "bad-header-name-char": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nBad(Name): 1\r\n\r\n",
        400,
    ),
    "space-before-colon": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nX-A : 1\r\n\r\n", 400),
    "header-without-colon": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nNoColon\r\n\r\n", 400),
    "nul-in-value": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n", 400),
    "cr-in-value": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n", 400),
    "obs-fold": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n  b\r\n\r\n", 400),
    "bare-lf-everywhere": (b"GET /a/x HTTP/1.1\nHost: localhost\n\n", 400),
    "bare-lf-in-header": (b"GET /a/x HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n", 400),
    # Versions: 505 where the version is understood but not served, 400 where it is not one.
    "http-0.9": (b"GET /a/x\r\n\r\n", VERSION),
    "http-2.0-request-line": (b"GET /a/x HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
    "http-1.2": (b"GET /a/x HTTP/1.2\r\nHost: localhost\r\n\r\n", VERSION),
    "absolute-form": (b"GET http://gate/a/x HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "authority-form": (b"CONNECT gate:443 HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
    "two-hosts": (b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n", 400),
    "no-host-1.1": (b"GET /a/x HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    "upgrade-with-body": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        400,
    ),
    "uri-too-long": (b"GET /a/" + b"x" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    "head-too-large-many-headers": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
        + b"\r\n",
        431,
    ),
    "head-too-large-one-header": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n",
        431,
    ),
}


@pytest.mark.nginx_difference(
    "nginx accepts, or answers otherwise, some malformed requests the built-in engine refuses",
    ids=[
        "authority-form",
        "te-gzip-chunked",
        "te-gzip",
        "te-chunked-twice-in-one",
        "bad-header-name-char",
        "header-without-colon",
        "bare-lf-everywhere",
        "bare-lf-in-header",
        "http-0.9",
        "http-1.2",
        "absolute-form",
        "upgrade-with-body",
        "head-too-large-many-headers",
        "head-too-large-one-header",
    ],
)
@pytest.mark.parametrize(("request_bytes", "status"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_is_refused_and_never_reaches_the_app(
    gate: tuple[Proxy, RawApp], request_bytes: bytes, status: int | tuple[int, ...]
) -> None:
    proxy, app = gate
    response, rest = refused(proxy.port, request_bytes)
    assert_clean_refusal(response, rest, status)
    # The proxy is still up and forwards a valid request afterwards; that is all the app saw.
    settle(proxy, app)
    assert only_settle_requests(app), f"the app received {bytes(app.raw)[:300]!r}"
    assert app.connections == 1


def test_http2_preface_is_refused(gate: tuple[Proxy, RawApp]) -> None:
    proxy, app = gate
    response, rest = refused(proxy.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert_clean_refusal(response, rest, VERSION)
    settle(proxy, app)
    assert only_settle_requests(app)


def test_refused_request_after_a_valid_one_on_the_same_connection(
    gate: tuple[Proxy, RawApp],
) -> None:
    """Keep-alive: the first request is answered, the second (ambiguous) one is refused."""
    proxy, app = gate
    with RawClient(proxy.port) as client:
        client.send(GET)
        first = client.read_response()
        assert first.status == 200
        assert first.body == b"ok"
        client.send(HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        second = client.read_response()
        assert second.status == 400
        assert client.read_to_close() == b""
    assert len(app.requests) == 1
    assert bytes(app.raw) == app.requests[0].raw


def test_pipelined_smuggling_attempt_reaches_the_app_as_one_request(
    gate: tuple[Proxy, RawApp],
) -> None:
    """A valid GET, then a CL+TE request whose body hides a third request, all in one write."""
    proxy, app = gate
    smuggled = b"GET /a/evil HTTP/1.1\r\nHost: localhost\r\n\r\n"
    attack = (
        b"GET /a/one HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"POST /a/two HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(smuggled)) + smuggled
    )
    with RawClient(proxy.port) as client:
        client.send(attack)
        first = client.read_response()
        rest = client.read_to_close()
    assert first.status == 200
    assert first.body == b"ok"
    # Whatever follows (a 400, or nothing) is never a second forwarded response.
    assert b"HTTP/1.1 200" not in rest
    assert rest == b"" or rest.startswith(b"HTTP/1.1 400 ")
    settle(proxy, app)
    assert [r.target for r in app.requests] == [b"/one", b"/settle"]
    assert bytes(app.raw) == app.requests[0].raw + app.requests[1].raw
    assert b"evil" not in app.raw
    assert b"/two" not in app.raw


def test_pipelined_smuggling_with_two_content_lengths(gate: tuple[Proxy, RawApp]) -> None:
    proxy, app = gate
    attack = (
        b"GET /a/one HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"POST /a/two HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: 0\r\nContent-Length: 37\r\n\r\n"
        b"GET /a/evil HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    with RawClient(proxy.port) as client:
        client.send(attack)
        first = client.read_response()
        rest = client.read_to_close()
    assert first.status == 200
    assert b"HTTP/1.1 200" not in rest
    settle(proxy, app)
    assert [r.target for r in app.requests] == [b"/one", b"/settle"]
    assert bytes(app.raw) == app.requests[0].raw + app.requests[1].raw


def test_bad_chunk_after_the_head_was_forwarded_never_completes_a_request(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A body streams: its head may be on its way before a bad chunk arrives. The app must then
    never see a complete request, and the client gets 400."""
    head_seen = threading.Event()

    async def watch(conn: Conn) -> None:
        while True:
            data = await conn.reader.read(65536)
            if not data:
                return
            conn.app.record(data)
            if b"\r\n\r\n" in conn.app.raw:
                head_seen.set()

    app = raw_app(watch)
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        client.send(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        assert head_seen.wait(10)
        client.send(b"zz\r\nworld\r\n0\r\n\r\n")
        response = client.read_response()
        assert response.status == 400
        assert client.read_to_close() == b""
    assert app.closed.wait(10), "the app connection stayed open"
    raw = bytes(app.raw)
    assert b"world" not in raw
    assert not raw.endswith(b"0\r\n\r\n"), raw


@pytest.mark.nginx_difference(
    "nginx reads a chunked request body whole and forwards it with Content-Length"
)
def test_valid_chunked_request_reaches_the_app_as_exactly_one_request(
    gate: tuple[Proxy, RawApp],
) -> None:
    proxy, app = gate
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    with RawClient(proxy.port) as client:
        client.send(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        response = client.read_response()
        assert response.status == 200
        assert response.body == b"ok"
        # The connection carries another request: the body was delimited exactly.
        client.send(GET)
        again = client.read_response()
        assert again.status == 200
    assert [r.method for r in app.requests] == [b"POST", b"GET"]
    assert app.requests[0].body == b"hello world"
    assert app.requests[0].header(b"Transfer-Encoding") == b"chunked"
    assert app.requests[0].header(b"Content-Length") is None
    assert bytes(app.raw) == app.requests[0].raw + app.requests[1].raw


def test_valid_content_length_request_reaches_the_app_byte_exact(
    gate: tuple[Proxy, RawApp],
) -> None:
    proxy, app = gate
    payload = bytes(range(256)) * 4
    with RawClient(proxy.port) as client:
        client.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(payload) + payload + GET)
        first = client.read_response()
        second = client.read_response()
    assert (first.status, second.status) == (200, 200)
    assert [r.method for r in app.requests] == [b"POST", b"GET"]
    assert app.requests[0].body == payload
    assert app.requests[0].header(b"Content-Length") == b"%d" % len(payload)
    assert bytes(app.raw) == app.requests[0].raw + app.requests[1].raw


# --- responses ----------------------------------------------------------------------------------

MARKER = b"APP-BYTES-MARKER"

BAD_RESPONSES: dict[str, bytes] = {
    "cl-and-te": (
        b"HTTP/1.1 200 OK\r\nX-Marker: " + MARKER + b"\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + MARKER[:5] + b"\r\n0\r\n\r\n"
    ),
    "te-and-cl": (
        b"HTTP/1.1 200 OK\r\nX-Marker: " + MARKER + b"\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n5\r\n" + MARKER[:5] + b"\r\n0\r\n\r\n"
    ),
    "two-different-cl": (
        b"HTTP/1.1 200 OK\r\nX-Marker: " + MARKER + b"\r\nContent-Length: 16\r\n"
        b"Content-Length: 3\r\n\r\n" + MARKER
    ),
    "garbage-status-line": b"HTTP/1.1 2x0 OK\r\nX-Marker: " + MARKER + b"\r\n\r\n" + MARKER,
    "not-http-at-all": MARKER + b" hello\r\n\r\n",
    "te-gzip": (
        b"HTTP/1.1 200 OK\r\nX-Marker: " + MARKER + b"\r\nTransfer-Encoding: gzip\r\n\r\n" + MARKER
    ),
    "bad-header-name": (
        b"HTTP/1.1 200 OK\r\nX Marker: " + MARKER + b"\r\nContent-Length: 16\r\n\r\n" + MARKER
    ),
    "obs-fold": (
        b"HTTP/1.1 200 OK\r\nX-Marker: a\r\n " + MARKER + b"\r\nContent-Length: 16\r\n\r\n" + MARKER
    ),
    "http-2.0-status-line": (
        b"HTTP/2.0 200 OK\r\nX-Marker: " + MARKER + b"\r\nContent-Length: 16\r\n\r\n" + MARKER
    ),
}


def answer_with(data: bytes) -> Handler:
    async def handler(conn: Conn) -> None:
        if await conn.request() is not None:
            await conn.send(data)
            # Then wait for the proxy to hang up: the verdict must not depend on our close.
            await conn.reader.read()

    return handler


@pytest.mark.nginx_difference(
    "nginx's 502 page and handling of malformed responses differ (its page does not name the fault)"
)
@pytest.mark.parametrize("data", list(BAD_RESPONSES.values()), ids=list(BAD_RESPONSES))
def test_malformed_response_gives_502_and_nothing_of_the_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, data: bytes
) -> None:
    bad = raw_app(answer_with(data), name="bad")
    good = raw_app(name="good")
    proxy = make_proxy({"bad": bad.path, "good": good.path})
    response, rest = exchange(proxy.port, b"GET /bad/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 502, response.raw
    assert b"app answered something that is not valid HTTP" in response.body
    shown = b""
    if not data.startswith(b"HTTP/"):
        # No HTTP at all: the page quotes what came back, escaped, as text; nothing else of it.
        shown = f'it answered "{nothttp.escape(data[: nothttp.SHOWN])}"'.encode()
        assert shown in response.body
    assert MARKER not in (response.raw + rest).replace(shown, b"")
    assert rest == b""
    ok, _ = exchange(proxy.port, b"GET /good/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert ok.status == 200


TRAILING_JUNK = {
    "not-http": b"!!",
    "half-a-response": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nSEC",
}


@pytest.mark.parametrize("junk", list(TRAILING_JUNK.values()), ids=list(TRAILING_JUNK))
def test_a_whole_response_with_junk_in_the_same_write_is_passed_on_alone(
    make_proxy: ProxyFactory, raw_app: RawFactory, junk: bytes
) -> None:
    """The app's answer and bytes it should not have sent arrive in one read (a Content-Length
    that undercounts, say): the client gets the answer, never the junk, and the connection to
    the app is not reused. Every request does it: on a new app connection and a pooled one."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            body = b"answer to " + request.target
            await conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + junk
            )

    app = raw_app(handler)
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        for n in range(3):
            client.send(b"GET /a/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % n)
            response = client.read_response()
            assert response.complete
            assert (response.status, bytes(response.body)) == (200, b"answer to /%d" % n)
    assert app.connections == 3  # each app connection ended with its junk


def test_extra_bytes_after_a_response_never_become_the_next_response(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """The app sends junk shaped like a response after its first one. On one keep-alive client
    connection, the second request must get the app's real answer to it."""
    junk = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk"
    count = 0

    async def handler(conn: Conn) -> None:
        nonlocal count
        while (request := await conn.request()) is not None:
            count += 1
            if count == 1:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + junk)
            else:
                body = b"real answer to " + request.target
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    app = raw_app(handler)
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        client.send(b"GET /a/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = client.read_response()
        assert first.status == 200
        assert first.body == b"first"
        client.send(b"GET /a/2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        second = client.read_response()
        assert second.status == 200
        assert second.body == b"real answer to /2"
        client.send(b"GET /a/3 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        third = client.read_response()
        assert third.body == b"real answer to /3"
    assert [r.target for r in app.requests] == [b"/1", b"/2", b"/3"]


def test_response_split_at_every_byte_is_forwarded_intact(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A chunked response written one byte at a time still reaches the client exactly once."""
    body_chunks = [b"hello", b" ", b"world"]
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks)
        + b"0\r\n\r\n"
    )

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            for i in range(len(wire)):
                await conn.send(wire[i : i + 1])
                await asyncio.sleep(0)

    app = raw_app(handler)
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        client.send(GET)
        response = client.read_response()
        client.send(GET)
        again = client.read_response()
    assert response.complete
    assert response.body == b"hello world"
    assert again.body == b"hello world"
