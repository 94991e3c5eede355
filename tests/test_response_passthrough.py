"""A whole response that arrives in one read may go to the client as the app sent it (issue 4):
only when the header policy and the framing would send the same thing. Whatever the policy would
change (a hop-by-hop header, a rewritten Location or cookie, framing for an HTTP/1.0 client, an
HTTP/1.0 status line, bytes after the end) takes the ordinary path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockgate.config import App
from sockgate.http.events import Headers
from sockgate.http.headers import to_client, unchanged_for_client
from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import RawClient, request_bytes
from tests.support.rawapp import Conn, Handler

PREFIXED = App("app1", Path("/s/app1.sock"), "/app1/")
PLAIN = App("app1", Path("/s/app1.sock"), "/app1/", rewrite=False)

NAMES = [
    b"Content-Type",
    b"Content-Length",
    b"Connection",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"TE",
    b"Trailer",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Location",
    b"Refresh",
    b"Set-Cookie",
    b"X-Custom",
    b"ETag",
]
VALUES = [b"keep-alive", b"Keep-Alive", b"close", b"x-custom", b"/elsewhere", b"a=1; Path=/", b"v"]


@settings(max_examples=400, derandomize=True, database=None)
@given(
    headers=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8),
    app=st.sampled_from([PREFIXED, PLAIN]),
)
def test_unchanged_means_the_policy_sends_the_same_headers(headers: Headers, app: App) -> None:
    """When it says unchanged, to_client keeps every header but the framing (added back with the
    same value) and a Connection: keep-alive that is true of the client's hop too."""
    if not unchanged_for_client(headers, app):
        return
    passed = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"connection")]
    assert to_client(headers, upgrade=False, app=app, host=b"127.0.0.1:8080") == passed
    for name, value in headers:
        if name.lower() == b"connection":
            assert value.lower() == b"keep-alive"


@pytest.mark.parametrize(
    ("header", "app"),
    [
        ((b"Keep-Alive", b"timeout=5"), PLAIN),
        ((b"Connection", b"close"), PLAIN),
        ((b"Connection", b"keep-alive, X-Secret"), PLAIN),
        ((b"Transfer-Encoding", b"chunked"), PLAIN),
        ((b"Location", b"/login"), PREFIXED),
        ((b"Set-Cookie", b"s=1; Path=/"), PREFIXED),
        ((b"Refresh", b"0; url=/x"), PREFIXED),
    ],
)
def test_what_the_policy_changes_is_never_unchanged(header: tuple[bytes, bytes], app: App) -> None:
    assert not unchanged_for_client([(b"Content-Type", b"text/plain"), header], app)


def test_rewritten_names_pass_unchanged_for_an_app_that_does_not_rewrite() -> None:
    headers = [(b"Location", b"/login"), (b"Set-Cookie", b"s=1; Path=/")]
    assert unchanged_for_client(headers, PLAIN)


# --- over sockets: the built-in engine's fast path ----------------------------------------------

PLAIN_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Order: 1\r\n"
    b"Content-Length: 5\r\nX-Order: 2\r\nConnection: keep-alive\r\n\r\nhello"
)


def one_write(response: bytes) -> Handler:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(response)

    return handler


# The pass-through is the built-in engine's (nginx writes heads of its own): these run on it only.
builtin_engine = pytest.mark.parametrize("engine", ["builtin"])


@pytest.fixture
def builtin(make_proxy: ProxyFactory) -> ProxyFactory:
    return make_proxy


def fetch(port: int, *requests: bytes) -> list[bytes]:
    with RawClient(port) as client:
        raws = []
        for raw in requests:
            client.send(raw)
            raws.append(client.response().raw)
        return raws


@builtin_engine
def test_a_plain_response_reaches_the_client_byte_for_byte(
    builtin: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(one_write(PLAIN_RESPONSE))
    proxy = builtin({"app1": app.path})
    first, second = fetch(proxy.port, request_bytes("/app1/a"), request_bytes("/app1/b"))
    assert first == PLAIN_RESPONSE
    assert second == PLAIN_RESPONSE
    assert app.connections == 1  # both on the pooled connection


@pytest.mark.parametrize(
    ("response", "check"),
    [
        # A hop-by-hop header: dropped.
        (
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi",
            lambda raw: b"keep-alive" not in raw.lower(),
        ),
        # An HTTP/1.0 status line with keep-alive: the client hears HTTP/1.1 from sockgate.
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
            lambda raw: raw.startswith(b"HTTP/1.1 200 OK\r\n"),
        ),
        # A cookie of an app under a prefix: its path moved under the prefix.
        (
            b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1; Path=/\r\nContent-Length: 2\r\n\r\nhi",
            lambda raw: b"Set-Cookie: s=1; Path=/app1/\r\n" in raw,
        ),
    ],
    ids=["keep-alive-header", "http10-status", "cookie"],
)
@builtin_engine
def test_what_the_policy_changes_is_changed_on_the_fast_path(
    builtin: ProxyFactory, raw_app: RawFactory, response: bytes, check: Callable[[bytes], bool]
) -> None:
    app = raw_app(one_write(response))
    proxy = builtin({"app1": app.path})
    (raw,) = fetch(proxy.port, request_bytes("/app1/a"))
    assert raw != response
    assert check(raw), raw


@builtin_engine
def test_an_http10_client_gets_its_framing_not_the_apps_head(
    builtin: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(one_write(PLAIN_RESPONSE))
    proxy = builtin({"app1": app.path})
    (raw,) = fetch(proxy.port, request_bytes("/app1/a", version="1.0"))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in raw
    assert raw.endswith(b"\r\n\r\nhello")


@builtin_engine
def test_bytes_after_the_response_are_not_passed_on(
    builtin: ProxyFactory, raw_app: RawFactory
) -> None:
    junk = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA"
    app = raw_app(one_write(junk))
    proxy = builtin({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/a"))
        response = client.response()
        assert bytes(response.body) == b"hi"
        client.send(request_bytes("/app1/b"))
        assert bytes(client.response().body) == b"hi"
        assert b"EXTRA" not in bytes(client.received)
    assert app.connections == 2  # the connection with junk on it was not reused
