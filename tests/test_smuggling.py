"""Issue 5: a request-smuggling corpus over raw TCP against a live proxy, with an app that
records the exact bytes it receives. It adds the families tests/test_framing.py does not cover:
Transfer-Encoding obfuscations, Content-Length spellings, chunk-size junk, target forms, HTTP
versions, and pipelines that mix valid and smuggling requests.

The rule for every case: either the client gets a 4xx (or 505) and the app sees no byte of the
bad request, or the app sees exactly the requests the client meant (method, target, body) and
nothing else; never an extra request. Requests ahead of the bad one in a pipeline are forwarded
either way. A case with `meant=None` has no valid reading and must be refused.

The app answers every request with its method, target and body size, so each response is tied
to the request it answers. A connection still open after the verdict carries a sentinel request:
its answer must be the next one, so nothing was queued or forwarded in between.

A bounded hypothesis test sends random valid pipelines cut into random TCP sends.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, Response, exchange
from tests.support.proc import Proxy
from tests.support.rawapp import Conn, RawApp, Request

# On a failure hypothesis's pytest plugin imports libcst (to suggest a patch), whose import warns
# through mypy_extensions; with filterwarnings=error that turns a failure into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

HOST = b"localhost"  # a local name: the proxy's Host policy lets it through


@dataclass(frozen=True)
class Meant:
    """A request as the client meant it, as the app should see it (prefix /a stripped)."""

    method: bytes
    target: bytes
    body: bytes = b""


def answer(method: bytes, target: bytes, body: bytes) -> bytes:
    return b"%s %s %d" % (method, target, len(body))


async def echo(conn: Conn) -> None:
    """Answer each request with what it was: method, target, body size."""
    while (request := await conn.request()) is not None:
        body = answer(request.method, request.target, request.body)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture
def gate(make_proxy: ProxyFactory, raw_app: RawFactory) -> tuple[Proxy, RawApp]:
    app = raw_app(echo)
    return make_proxy({"a": app.path}), app


def seen(requests: list[Request]) -> list[Meant]:
    return [Meant(r.method, r.target, r.body) for r in requests]


def settle(proxy: Proxy, app: RawApp) -> None:
    """A valid request on a new connection: once it is answered, anything the proxy had sent the
    app before has been recorded."""
    response, _ = exchange(proxy.port, b"GET /a/settle HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 200, response.raw
    assert app.requests[-1].target == b"/settle"


def refused(response: Response) -> bool:
    """A refusal: 4xx, 505 for a version, or 501 for a transfer coding (RFC 9112 6.1)."""
    return 400 <= response.status < 500 or response.status in (501, 505)


SENTINEL = Meant(b"GET", b"/sentinel")
SENTINEL_WIRE = b"GET /a/sentinel HTTP/1.1\r\nHost: localhost\r\n\r\n"
SETTLE = Meant(b"GET", b"/settle")


def check_app_saw(app: RawApp, expected: list[Meant], host: bytes | None = HOST) -> None:
    """The app saw exactly `expected` then the settle request, and no stray byte."""
    got = seen(app.requests)
    assert got == [*expected, SETTLE], f"the app saw {got}, expected {expected}"
    raw = bytes(app.raw)
    assert raw == b"".join(r.raw for r in app.requests), f"stray bytes at the app: {raw!r}"
    for request in app.requests:
        # The Host the client meant, once: never a trailer's, a second one or another authority.
        hosts = request.header_all(b"Host")
        assert len(hosts) == 1, request.raw
        if host is not None or request.target in (b"/sentinel", b"/settle"):
            assert hosts == [HOST], request.raw


@dataclass(frozen=True)
class Case:
    wire: bytes
    meant: list[Meant] | None  # None: no valid reading, must be refused
    before: tuple[Meant, ...] = ()  # valid requests ahead in the same pipeline
    closes: bool = False  # if forwarded, the connection must end after it (RFC 9112 6.1, 9.6)
    host: bytes | None = HOST  # the Host the app must see (None: the request sent none)


def verdict(proxy: Proxy, app: RawApp, case: Case) -> str:
    """Send the case's bytes in one write and check the rule; "forwarded" or "refused".

    Responses come in request order. Each valid request ahead is answered by the app, or the
    proxy closes (having found a bad request further on, it may drop the rest of the pipeline,
    which it then never forwarded). The questionable request is then refused (a refusal status
    or a close) or, if it has a valid reading, answered as exactly that."""
    plan = [*case.before, *(case.meant or [])]
    answered: list[Meant] = []
    outcome = "forwarded"
    last: Response | None = None
    with RawClient(proxy.port) as client:
        client.send(case.wire)
        for index in range(len(plan) + (case.meant is None)):
            response = client.read_response()
            if not response.raw:
                # Closed without a word: only after an answer that announced the close (the
                # proxy ends a pipeline that holds a bad request); a lone bad request gets a
                # refusal status.
                closing = last is not None and last.header("Connection") == b"close"
                assert closing, "closed without an answer to the first request"
                outcome = "refused"
                break
            last = response
            if index >= len(case.before) and refused(response):
                outcome = "refused"
                break
            assert index < len(plan), f"an answer where a refusal was due: {response.raw!r}"
            request = plan[index]
            assert response.status == 200, f"request #{index + 1} failed: {response.raw!r}"
            assert response.body == answer(request.method, request.target, request.body), (
                f"request #{index + 1} got the answer to another request: {response.body!r}"
            )
            answered.append(request)
        still_open = last is not None and last.complete and last.header("Connection") != b"close"
        if still_open:
            # Anything queued or forwarded after the last answer would be answered before the
            # sentinel; after a request that must end the connection, nothing is answered.
            client.send(SENTINEL_WIRE)
            after = client.read_response()
            if outcome == "forwarded" and case.closes:
                assert not after.raw, f"the connection was kept (RFC 9112): {after.raw!r}"
            else:
                assert after.status == 200, after.raw
                assert after.body == answer(SENTINEL.method, SENTINEL.target, b""), (
                    f"an extra response before the sentinel's: {after.raw!r}"
                )
                answered.append(SENTINEL)
        else:
            rest = client.read_to_close()
            assert rest == b"", f"bytes after the last answer: {rest!r}"
    settle(proxy, app)
    check_app_saw(app, answered, case.host)
    return outcome


POST = b"POST /a/x HTTP/1.1\r\nHost: localhost\r\n"
ABC = [Meant(b"POST", b"/x", b"abc")]
CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"
TE = POST + b"Transfer-Encoding: chunked\r\n\r\n"
ONE = b"GET /a/one HTTP/1.1\r\nHost: localhost\r\n\r\n"
EVIL = b"GET /a/evil HTTP/1.1\r\nHost: localhost\r\n\r\n"


def te(value: bytes, body: bytes = CHUNKED_ABC) -> bytes:
    return POST + b"Transfer-Encoding:" + value + b"\r\n\r\n" + body


def cl(value: bytes, body: bytes = b"abc") -> bytes:
    return POST + b"Content-Length:" + value + b"\r\n\r\n" + body


def chunks(body: bytes) -> bytes:
    return TE + body


def get(target: bytes, version: bytes = b"HTTP/1.1", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" " + version + b"\r\nHost: localhost\r\n\r\n"


CASES: dict[str, Case] = {
    # --- Transfer-Encoding obfuscations
    "te-space-before-colon": Case(
        POST + b"Transfer-Encoding : chunked\r\n\r\n" + CHUNKED_ABC, None
    ),
    "te-leading-tab": Case(te(b" \tchunked"), ABC),
    "te-trailing-space": Case(te(b" chunked "), ABC),
    "te-upper-case": Case(POST + b"TRANSFER-ENCODING: CHUNKED\r\n\r\n" + CHUNKED_ABC, ABC),
    "te-vertical-tab": Case(te(b" chunked\x0b"), None),
    "te-form-feed-before": Case(te(b"\x0cchunked"), None),
    "te-nbsp-after": Case(te(b" chunked\xa0"), None),
    "te-xchunked": Case(te(b" xchunked"), None),
    "te-chunkedx": Case(te(b" chunkedx"), None),
    "te-quoted": Case(te(b' "chunked"'), None),
    "te-chunked-identity": Case(te(b" chunked, identity"), None),
    "te-empty-element-first": Case(te(b" , chunked"), ABC),  # RFC 9110 5.6.1: empty elements
    "te-lower-name-with-cl": Case(
        POST + b"Transfer-encoding: chunked\r\nContent-Length: 3\r\n\r\n" + CHUNKED_ABC,
        ABC,
        closes=True,  # RFC 9112 6.1: if processed by TE alone, close after the answer
    ),
    "te-obs-fold": Case(POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + CHUNKED_ABC, ABC),
    "te-obs-fold-tab": Case(POST + b"Transfer-Encoding: \r\n\tchunked\r\n\r\n" + CHUNKED_ABC, ABC),
    "te-in-trailer": Case(chunks(b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), ABC),
    "cl-in-trailer": Case(chunks(b"3\r\nabc\r\n0\r\nContent-Length: 40\r\n\r\n"), ABC),
    "host-in-trailer": Case(chunks(b"3\r\nabc\r\n0\r\nHost: evil.example\r\n\r\n"), ABC),
    "te-twice-chunked-then-identity": Case(
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + CHUNKED_ABC,
        None,
    ),
    "te-twice-identity-then-chunked": Case(
        POST + b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_ABC,
        None,
    ),
    "te-twice-gzip-then-chunked": Case(
        POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_ABC,
        None,
    ),
    "te-twice-chunked-then-empty": Case(
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n" + CHUNKED_ABC, ABC
    ),
    # Not Transfer-Encoding at all: a POST without a body, then junk that is no request.
    "te-underscore-name": Case(
        POST + b"Transfer_Encoding: chunked\r\n\r\n" + CHUNKED_ABC,
        None,
        before=(Meant(b"POST", b"/x"),),
    ),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; close after answering.
    "te-in-http10-keep-alive": Case(
        b"POST /a/x HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        + CHUNKED_ABC
        + EVIL,
        ABC,
        closes=True,
        host=None,
    ),
    # --- Content-Length spellings (RFC 9110 8.6: 1*DIGIT, OWS around the value)
    "cl-plus": Case(cl(b" +3"), None),
    "cl-hex": Case(cl(b" 0x3"), None),
    "cl-trailing-space": Case(cl(b" 3 "), ABC),
    "cl-leading-spaces": Case(cl(b"   3"), ABC),
    "cl-tabs": Case(cl(b"\t3\t"), ABC),
    "cl-leading-zero": Case(cl(b" 03"), ABC),
    "cl-leading-zeros": Case(cl(b" 0000000003"), ABC),
    "cl-vertical-tab": Case(cl(b" 3\x0b"), None),
    "cl-underscore": Case(cl(b" 1_0", b"abcdefghij"), None),
    "cl-inner-space": Case(cl(b" 1 0", b"abcdefghij"), None),
    "cl-decimal": Case(cl(b" 3.0"), None),
    "cl-negative-zero": Case(cl(b" -0", b""), None),
    "cl-empty": Case(cl(b""), None),
    "cl-space-before-colon": Case(POST + b"Content-Length : 3\r\n\r\nabc", None),
    "cl-overflow-wraps-to-3": Case(cl(b" 18446744073709551619"), None),
    "cl-same-twice": Case(POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", ABC),
    "cl-on-get": Case(
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
        [Meant(b"GET", b"/x", b"abc")],
    ),
    "cl-zero-then-request": Case(
        cl(b" 0", b"") + get(b"/a/y"), [Meant(b"POST", b"/x"), Meant(b"GET", b"/y")]
    ),
    # --- chunk sizes and chunk lines (RFC 9112 7.1)
    "chunk-ext-name": Case(chunks(b"3;ext\r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-ext-values": Case(chunks(b'3;a=b;c="d e"\r\nabc\r\n0;z\r\n\r\n'), ABC),
    "chunk-ext-bws": Case(chunks(b"3 ;x\r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-ext-quoted-crlf": Case(chunks(b'3;x="\r\n' + EVIL + b'"\r\nabc\r\n0\r\n\r\n'), None),
    "chunk-ext-bare-cr": Case(chunks(b"3;x\ry\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-size-trailing-space": Case(chunks(b"3 \r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-size-leading-space": Case(chunks(b" 3\r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-size-0x": Case(chunks(b"0x3\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-size-negative": Case(chunks(b"-3\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-size-plus": Case(chunks(b"+3\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-size-tab": Case(chunks(b"3\t\r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-size-2-64-wraps-to-0": Case(chunks(b"10000000000000000\r\n\r\n" + EVIL), None),
    "chunk-size-2-64-plus-3": Case(chunks(b"10000000000000003\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-size-leading-zeros": Case(chunks(b"0000000000000000003\r\nabc\r\n0\r\n\r\n"), ABC),
    "chunk-size-upper-hex": Case(
        chunks(b"A\r\n0123456789\r\n0\r\n\r\n"), [Meant(b"POST", b"/x", b"0123456789")]
    ),
    "chunk-no-crlf-after-data": Case(chunks(b"3\r\nabc0\r\n\r\n"), None),
    "chunk-data-longer-than-size": Case(chunks(b"3\r\nabcd\r\n0\r\n\r\n"), None),
    "chunk-data-shorter-than-size": Case(chunks(b"5\r\nabc\r\n0\r\n\r\n"), None),
    "chunk-lines-bare-lf": Case(chunks(b"3\nabc\n0\n\n"), ABC),  # RFC 9112 2.2: MAY accept LF
    "chunk-bare-lf-after-data": Case(chunks(b"3\r\nabc\n0\r\n\r\n"), ABC),
    "chunk-lines-bare-cr": Case(chunks(b"3\rabc\r0\r\r"), None),
    # Not a field line: refused, or dropped with the trailer section (it ends at the same CRLF).
    "chunk-last-then-junk-trailer": Case(chunks(b"3\r\nabc\r\n0\r\njunk\r\n\r\n"), ABC),
    # --- request targets (RFC 9112 3.2)
    "absolute-form-https": Case(get(b"https://localhost/a/x"), [Meant(b"GET", b"/x")]),
    "absolute-form-upper-case": Case(get(b"HTTP://LOCALHOST/a/x"), [Meant(b"GET", b"/x")]),
    "absolute-form-other-host": Case(
        b"GET http://localhost/a/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        [Meant(b"GET", b"/x")],
    ),
    "authority-form-get": Case(get(b"localhost:80"), None),
    "authority-form-connect-local": Case(get(b"localhost:80", method=b"CONNECT"), None),
    "connect-origin-form": Case(get(b"/a/x", method=b"CONNECT"), None),
    "asterisk-form": Case(get(b"*", method=b"OPTIONS"), None),
    "asterisk-form-get": Case(get(b"*"), None),
    "double-slash-path": Case(get(b"//localhost/a/x"), None),  # a path no app owns: 404
    # --- HTTP versions
    "http09-with-headers": Case(b"GET /a/x\r\nHost: localhost\r\n\r\n", None),
    "http2-without-minor": Case(get(b"/a/x", b"HTTP/2"), None),
    "http3": Case(get(b"/a/x", b"HTTP/3.0"), None),
    "http-1.10": Case(get(b"/a/x", b"HTTP/1.10"), None),
    "http-01.1": Case(get(b"/a/x", b"HTTP/01.1"), None),
    "http-lower-case": Case(get(b"/a/x", b"http/1.1"), None),
    "http-0.9-with-version": Case(get(b"/a/x", b"HTTP/0.9"), None),
    # --- pipelines: valid requests, then one that tries to smuggle the next
    "pipe-then-te-xchunked-hiding": Case(
        ONE + te(b" xchunked", b"0\r\n\r\n" + EVIL), None, before=(Meant(b"GET", b"/one"),)
    ),
    "pipe-then-cl-plus-hiding": Case(
        ONE + cl(b" +%d" % len(EVIL), EVIL), None, before=(Meant(b"GET", b"/one"),)
    ),
    "pipe-then-chunk-0x-hiding": Case(
        ONE + chunks(b"0x%x\r\n" % len(EVIL) + EVIL + b"\r\n0\r\n\r\n"),
        None,
        before=(Meant(b"GET", b"/one"),),
    ),
    "pipe-then-te-space-colon-with-cl": Case(
        ONE
        + POST
        + b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n\r\n" % (5 + len(EVIL))
        + b"0\r\n\r\n"
        + EVIL,
        None,
        before=(Meant(b"GET", b"/one"),),
    ),
    "pipe-then-te-obs-fold-with-cl": Case(
        ONE
        + POST
        + b"Content-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" % (5 + len(EVIL))
        + b"0\r\n\r\n"
        + EVIL,
        None,
        before=(Meant(b"GET", b"/one"),),
    ),
    "pipe-chunked-cl-then-bad-version": Case(
        TE + CHUNKED_ABC + cl(b" 3", b"def") + get(b"/a/z", b"HTTP/1.2"),
        None,
        before=(Meant(b"POST", b"/x", b"abc"), Meant(b"POST", b"/x", b"def")),
    ),
    "pipe-connection-close-then-request": Case(
        b"GET /a/one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" + EVIL,
        [Meant(b"GET", b"/one")],
        closes=True,
    ),
    "pipe-http10-then-request": Case(
        b"GET /a/one HTTP/1.0\r\nHost: localhost\r\n\r\n" + EVIL,
        [Meant(b"GET", b"/one")],
        closes=True,
    ),
    "pipe-valid-mix": Case(
        ONE + TE + b"2;x\r\nhi\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n" + cl(b" 3", b"def") + get(b"/a/z"),
        [
            Meant(b"GET", b"/one"),
            Meant(b"POST", b"/x", b"hi!"),
            Meant(b"POST", b"/x", b"def"),
            Meant(b"GET", b"/z"),
        ],
    ),
}

# What the nginx engine does differently (strict xfail there): docs/engines.md lists it.
# Where the nginx engine differs (a strict xfail there), found by running the corpus on it:
# - absolute-form-other-host: nginx accepts absolute-form and passes the client's Host header,
#   not the target's authority (RFC 9112 3.2.2 says a proxy must use the authority);
# - http09-with-headers: nginx serves HTTP/0.9 (an answer without a status line);
# - http-1.10, pipe-chunked-cl-then-bad-version (HTTP/1.2): nginx takes any HTTP/1.x version.
NGINX_DIFFERENT = [
    "absolute-form-other-host",
    "http09-with-headers",
    "http-1.10",
    "pipe-chunked-cl-then-bad-version",
]


@pytest.mark.nginx_difference(
    "nginx accepts absolute-form targets (passing the client's Host), HTTP/0.9 and any HTTP/1.x",
    ids=NGINX_DIFFERENT,
)
@pytest.mark.parametrize("name", list(CASES))
def test_smuggling_corpus(gate: tuple[Proxy, RawApp], name: str) -> None:
    proxy, app = gate
    verdict(proxy, app, CASES[name])


@pytest.mark.nginx_difference("nginx answers HTTP/0.9 with a bare page, no status line")
def test_http09_request_line_then_half_close_reaches_nothing(gate: tuple[Proxy, RawApp]) -> None:
    """HTTP/0.9 has no version and no headers: the line alone is never forwarded; the proxy
    answers a 4xx or just closes."""
    proxy, app = gate
    with RawClient(proxy.port) as client:
        client.send(b"GET /a/x\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        rest = client.read_to_close()
    assert rest == b"" or rest.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), rest
    settle(proxy, app)
    check_app_saw(app, [])


# --- random valid pipelines, cut into random TCP sends --------------------------------------------

SAFE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~"


def _safe(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda raw: bytes(SAFE[b % len(SAFE)] for b in raw)
    )


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[Meant, bytes]:
    method = draw(st.sampled_from([b"GET", b"DELETE", b"POST", b"PUT", b"PATCH", b"OPTIONS"]))
    target = b"/" + draw(_safe(1, 12))
    if draw(st.booleans()):
        target += b"?" + draw(_safe(1, 6)) + b"=" + draw(_safe(0, 6))
    head = b"%s /a%s HTTP/1.1\r\nHost: localhost\r\nX-Pad: %s\r\n" % (
        method,
        target,
        draw(_safe(0, 30)),
    )
    body = b""
    if method in (b"POST", b"PUT", b"PATCH"):
        body = draw(st.binary(max_size=300))
        if draw(st.booleans()):
            cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4))))
            pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
            return Meant(method, target, body), head + b"Transfer-Encoding: chunked\r\n\r\n" + wire
        head += b"Content-Length: %d\r\n" % len(body)
    return Meant(method, target, body), head + b"\r\n" + body


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pipeline=st.lists(valid_requests(), min_size=1, max_size=4), data=st.data())
def test_random_pipelines_in_random_sends_reach_the_app_exactly(
    gate: tuple[Proxy, RawApp], pipeline: list[tuple[Meant, bytes]], data: st.DataObject
) -> None:
    proxy, app = gate
    wire = b"".join(w for _, w in pipeline)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=8), "cuts")))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    start = len(app.requests)
    with RawClient(proxy.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            client.send(piece)
        for meant, _ in pipeline:
            response = client.read_response()
            assert response.status == 200, response.raw
            assert response.body == answer(meant.method, meant.target, meant.body)
    # Each answer came after the app had the whole request: all of them are recorded.
    assert seen(app.requests[start:]) == [m for m, _ in pipeline]
    assert bytes(app.raw) == b"".join(r.raw for r in app.requests), "stray bytes at the app"


# --- the app side: found by the property tests ----------------------------------------------------

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"


async def odd_status(conn: Conn) -> None:
    """`/odd` gets a status under 100 whose body looks like a whole response; others their own
    answer."""
    while (request := await conn.request()) is not None:
        if request.target == b"/odd":
            head = b"HTTP/1.1 099 Odd\r\nContent-Length: %d\r\n\r\n" % len(INJECTED)
            await conn.send(head + INJECTED)
        else:
            body = b"real answer to " + request.target
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_a_status_under_100_never_splits_into_a_second_response(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A status under 100 is neither informational nor final. Pass it on framed as the app
    framed it, or refuse it with 502; never write a head without framing followed by the app's
    body, which the client reads as the next response (response splitting)."""
    app = raw_app(odd_status)
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        client.send(b"GET /a/odd HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            first = client.response()
            if first.status == 502:
                assert b"injected" not in bytes(client.received)
            else:
                assert first.status == 99, bytes(client.received)
                assert bytes(first.body) == INJECTED, bytes(client.received)
            if first.header("Connection") != b"close":
                client.send(b"GET /a/next HTTP/1.1\r\nHost: localhost\r\n\r\n")
                second = client.response()
                assert bytes(second.body) == b"real answer to /next", bytes(client.received)
        except httptools.HttpParserError as exc:
            pytest.fail(f"the client cannot parse what the proxy sent ({exc}): {client.received!r}")


# --- h2c: never an upgrade (issue 17) ------------------------------------------------------------
# Past a 101 to `Upgrade: h2c` the client would speak HTTP/2 straight to the app, its requests no
# longer passing the proxy's routing and Host check (h2c smuggling). Both engines forward such a
# request as plain HTTP/1.1, without Upgrade, HTTP2-Settings or a Connection that names them.

H2C_FIELDS = (
    b"Connection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)
H2C_GET = b"GET /a/x HTTP/1.1\r\nHost: localhost\r\n" + H2C_FIELDS + b"\r\n"
H2C_CASES = {
    "get": (H2C_GET, Meant(b"GET", b"/x")),
    "post-with-body": (
        b"POST /a/x HTTP/1.1\r\nHost: localhost\r\n" + H2C_FIELDS + b"Content-Length: 3\r\n\r\nabc",
        Meant(b"POST", b"/x", b"abc"),
    ),
    "chunked-body": (
        b"POST /a/x HTTP/1.1\r\nHost: localhost\r\n"
        + H2C_FIELDS
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + CHUNKED_ABC,
        Meant(b"POST", b"/x", b"abc"),
    ),
    "among-others": (
        b"GET /a/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket, h2c\r\n\r\n",
        Meant(b"GET", b"/x"),
    ),
}
# What an h2c client sends once switched: the connection preface and a SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("name", list(H2C_CASES))
def test_an_h2c_upgrade_is_forwarded_as_a_plain_request(
    make_proxy: ProxyFactory, raw_app: RawFactory, name: str
) -> None:
    """The app gets a plain request, and the request pipelined after it on the same connection
    is routed by the proxy (to another app): no tunnel was opened."""
    wire, meant = H2C_CASES[name]
    a, b = raw_app(echo, name="a"), raw_app(echo, name="b")
    proxy = make_proxy({"a": a.path, "b": b.path})
    with RawClient(proxy.port) as client:
        client.send(wire + b"GET /b/next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = client.response()
        assert first.status == 200, bytes(client.received)
        assert bytes(first.body) == answer(meant.method, meant.target, meant.body)
        assert not client.upgraded
        second = client.response()
        assert second.status == 200, bytes(client.received)
        assert bytes(second.body) == answer(b"GET", b"/next", b"")
    assert seen(a.requests) == [meant]
    assert seen(b.requests) == [Meant(b"GET", b"/next")]
    assert bytes(a.raw) == a.requests[0].raw, f"stray bytes at the app: {bytes(a.raw)!r}"
    request = a.requests[0]
    assert request.header(b"upgrade") is None, request.raw
    assert request.header(b"http2-settings") is None, request.raw
    for value in request.header_all(b"connection"):
        assert b"upgrade" not in value.lower(), request.raw
        assert b"http2-settings" not in value.lower(), request.raw


async def switch_to_h2c(conn: Conn) -> None:
    """An app that switches to h2c whatever it was asked: a 101, then it reads (and records)
    whatever comes on the connection until the proxy closes it."""
    if await conn.request() is None:
        return
    await conn.send(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    )
    while data := await conn.reader.read(65536):
        conn.app.record(data)


@pytest.mark.nginx_difference(
    "nginx tunnels a 101 to any request whose client sent an Upgrade header (its proxy module "
    "sets u->upgrade from r->headers_in.upgrade, not from what it forwarded), and a config cannot "
    "remove a client's header. The app is sent neither Upgrade nor HTTP2-Settings, so an h2c "
    "server does not switch (RFC 7540 3.2); only an app that answers 101 unasked gets a tunnel"
)
@pytest.mark.parametrize("preface", ["after-the-answer", "pipelined"])
def test_an_app_switching_to_h2c_anyway_gets_no_tunnel(
    make_proxy: ProxyFactory, raw_app: RawFactory, preface: str
) -> None:
    """A 101 to a request that (as forwarded) asked for no upgrade is the app's fault: the client
    gets a 502, and the HTTP/2 bytes it sends, after the answer or right behind its request,
    never reach the app."""
    app = raw_app(switch_to_h2c, name="a")
    proxy = make_proxy({"a": app.path})
    with RawClient(proxy.port) as client:
        client.send(H2C_GET + (H2_PREFACE if preface == "pipelined" else b""))
        response = client.read_response()
        assert response.status == 502, bytes(client.received)
        assert not client.upgraded
        if preface == "after-the-answer":
            client.send(H2_PREFACE)
        client.read_to_close()  # refused, or the connection was closed after the 502
    assert app.closed.wait(DEADLINE), "the proxy kept the app's connection open"
    assert len(app.requests) == 1
    assert b"PRI * HTTP/2.0" not in bytes(app.raw), bytes(app.raw)
